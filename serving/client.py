"""Clients of the served model: one class per protocol (REST, gRPC), the same interface.

    from placedemarche.serving.client import ClientConfig, RestClient, GrpcClient
    client = GrpcClient(ClientConfig("localhost", 8500))
    client.wait_until_ready(timeout_s=60)
    result = client.predict([open("shoe.jpg", "rb").read()])
    result.top_k(3)          # [[("Footwear", 0.91), ...]]

Both talk to TensorFlow Serving (or the local stand-in, ``serving.server``). They send pictures as
encoded bytes to ``serving_default`` in batches of at most ``max_batch_size``, retry transient
failures (unavailable, timeouts, 502/503/504) with exponential backoff and never retry a request
the server refused (bad input, unknown model), and raise typed errors carrying the server's message.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

T = TypeVar("T")


class ServingClientError(Exception):
    """The server answered with an error (``code``: TF Serving's status name, or the HTTP status)."""

    transient = False

    def __init__(self, message: str, code: str = "UNKNOWN"):
        super().__init__(f"{code}: {message}")
        self.message, self.code = message, code


class InvalidRequestError(ServingClientError):
    """The server refused the request (malformed input, wrong shape, undecodable picture)."""


class ModelNotFoundError(ServingClientError):
    """No such model, version or label on the server."""


class UnavailableError(ServingClientError):
    """The server could not be reached or is not ready; retried."""

    transient = True


@dataclass(frozen=True)
class ClientConfig:
    host: str = "localhost"
    port: int = 8500
    model_name: str = "product_category"
    version: Optional[int] = None  # None: the latest the server has
    label: Optional[str] = None  # e.g. "stable" / "canary" (instead of version)
    signature_name: str = "serving_default"
    input_name: str = "images"
    timeout_s: float = 30.0
    retries: int = 3
    backoff_s: float = 0.2  # first wait; doubles each retry
    max_batch_size: int = 32

    def __post_init__(self):
        if self.version is not None and self.label is not None:
            raise ValueError("give a version or a label, not both")
        if self.max_batch_size < 1 or self.retries < 0 or self.timeout_s <= 0:
            raise ValueError("max_batch_size >= 1, retries >= 0 and timeout_s > 0 are required")


@dataclass
class Prediction:
    """Probabilities of every picture (``[n, classes]``) and the class names in column order."""

    probabilities: np.ndarray
    classes: List[str]

    def top_k(self, k: int = 3) -> List[List[Tuple[str, float]]]:
        order = np.argsort(-self.probabilities, axis=1)[:, :k]
        return [[(self.classes[j], float(row[j])) for j in idx] for row, idx in zip(self.probabilities, order)]


class _Client:
    def __init__(self, config: ClientConfig, sleep: Callable[[float], None] = time.sleep):
        self.config, self._sleep = config, sleep

    def _with_retries(self, call: Callable[[], T]) -> T:
        wait = self.config.backoff_s
        for attempt in range(self.config.retries + 1):
            try:
                return call()
            except ServingClientError as e:
                if not e.transient or attempt == self.config.retries:
                    raise
            self._sleep(wait)
            wait *= 2
        raise AssertionError("unreachable")

    def predict(self, images: Sequence[bytes]) -> Prediction:
        """Probabilities for each encoded picture, in batches of at most ``max_batch_size``."""
        if not images:
            raise ValueError("no pictures to predict")
        parts, classes = [], None
        for start in range(0, len(images), self.config.max_batch_size):
            batch = list(images[start:start + self.config.max_batch_size])
            outputs = self._with_retries(lambda: self._predict(batch))
            parts.append(np.asarray(outputs["probabilities"], dtype=np.float32))
            if classes is None and "classes" in outputs:
                classes = [c.decode() if isinstance(c, bytes) else c for c in np.asarray(outputs["classes"])[0]]
        probabilities = np.concatenate(parts)
        return Prediction(probabilities, classes or [str(i) for i in range(probabilities.shape[1])])

    def wait_until_ready(self, timeout_s: float = 60.0, poll_s: float = 0.5) -> List[Dict[str, object]]:
        """Waits until the model (version / label) is AVAILABLE; returns its status."""
        deadline = time.monotonic() + timeout_s
        last: Exception = UnavailableError("not asked yet")
        while time.monotonic() < deadline:
            try:
                status = self.status()
                if any(s["state"] == "AVAILABLE" for s in status):
                    return status
                last = UnavailableError(f"model status: {status}", "UNAVAILABLE")
            except (UnavailableError, ModelNotFoundError) as e:  # not up yet, or not loaded yet
                last = e
            self._sleep(poll_s)
        raise UnavailableError(f"not ready after {timeout_s:g} s: {last}", "DEADLINE_EXCEEDED")


class RestClient(_Client):
    """TF Serving's REST API (default port 8501)."""

    def _url(self, suffix: str = "") -> str:
        c = self.config
        where = f"/versions/{c.version}" if c.version is not None else f"/labels/{c.label}" if c.label else ""
        return f"http://{c.host}:{c.port}/v1/models/{c.model_name}{where}{suffix}"

    def _request(self, url: str, payload: Optional[dict] = None) -> dict:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                message = json.loads(body).get("error", body.decode(errors="replace"))
            except (json.JSONDecodeError, AttributeError):
                message = body.decode(errors="replace")[:500]
            if e.code == 404:
                raise ModelNotFoundError(message, "NOT_FOUND") from e
            if e.code in (502, 503, 504):
                raise UnavailableError(message, f"HTTP {e.code}") from e
            raise InvalidRequestError(message, "INVALID_ARGUMENT" if e.code == 400 else f"HTTP {e.code}") from e
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
            raise UnavailableError(f"{url}: {getattr(e, 'reason', e)}", "UNAVAILABLE") from e

    def _predict(self, batch: List[bytes]) -> Dict[str, object]:
        payload = {"signature_name": self.config.signature_name,
                   "inputs": {self.config.input_name: [{"b64": base64.b64encode(b).decode()} for b in batch]}}
        outputs = self._request(self._url(":predict"), payload)["outputs"]
        return outputs if isinstance(outputs, dict) else {"probabilities": outputs}

    def status(self) -> List[Dict[str, object]]:
        entries = self._request(self._url())["model_version_status"]
        return [{"version": int(e["version"]), "state": e["state"],
                 "error": e.get("status", {}).get("error_message", "")} for e in entries]

    def metadata(self) -> dict:
        return self._request(self._url("/metadata"))


class GrpcClient(_Client):
    """TF Serving's gRPC API (default port 8500): PredictionService and ModelService."""

    def __init__(self, config: ClientConfig, sleep: Callable[[float], None] = time.sleep,
                 max_message_bytes: int = 64 * 1024 * 1024):
        super().__init__(config, sleep)
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self._grpc = grpc
        self._channel = grpc.insecure_channel(f"{config.host}:{config.port}", options=[
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes)])
        self._predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._model_stub = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def _spec(self, spec) -> None:
        spec.name = self.config.model_name
        if self.config.version is not None:
            spec.version.value = self.config.version
        elif self.config.label:
            spec.version_label = self.config.label

    def _call(self, method, request):
        grpc = self._grpc
        try:
            return method(request, timeout=self.config.timeout_s)
        except grpc.RpcError as e:
            code, message = e.code(), e.details() or str(e)
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED) \
                    and "exceeds" not in message and "larger than max" not in message:
                raise UnavailableError(message, code.name) from e
            if code == grpc.StatusCode.NOT_FOUND:
                raise ModelNotFoundError(message, code.name) from e
            raise InvalidRequestError(message, code.name) from e

    def _predict(self, batch: List[bytes]) -> Dict[str, object]:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec)
        request.model_spec.signature_name = self.config.signature_name
        request.inputs[self.config.input_name].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.string, shape=[len(batch)]))
        response = self._call(self._predict_stub.Predict, request)
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    def status(self) -> List[Dict[str, object]]:
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec)
        response = self._call(self._model_stub.GetModelStatus, request)
        states = get_model_status_pb2.ModelVersionStatus.State
        return [{"version": s.version, "state": states.Name(s.state), "error": s.status.error_message}
                for s in response.model_version_status]

    def metadata(self):
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec)
        return self._call(self._predict_stub.GetModelMetadata, request)


def make_client(protocol: str, config: ClientConfig) -> _Client:
    if protocol == "rest":
        return RestClient(config)
    if protocol == "grpc":
        return GrpcClient(config)
    raise ValueError(f"unknown protocol '{protocol}': use grpc or rest")
