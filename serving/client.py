"""Clients of the served model: one class per protocol (REST, gRPC), the same interface.

    from placedemarche.serving.client import ClientConfig, RestClient, GrpcClient
    client = GrpcClient(ClientConfig("localhost", 8500))
    client.wait_until_ready(timeout_s=60)
    result = client.predict([open("shoe.jpg", "rb").read()])
    result.top_k(3)          # [[("Footwear", 0.91), ...]]

    # a model that reads text too: one text for all pictures, or one per picture
    client.predict(pictures, texts="Leather strap analog watch")
    client.predict(pictures, texts=["Baby romper", "Gaming laptop"])
    client.predict_texts(["Baby romper"])  # a model that reads text alone

Both talk to TensorFlow Serving (or the local stand-in, ``serving.server``). They send pictures as
encoded bytes (``images``) and, when given, texts (``text``: a ``str`` is sent as UTF-8, ``bytes``
as they are) to ``serving_default`` in batches of at most ``max_batch_size`` (texts are split with
their pictures; a single text is sent once per batch and the model broadcasts it). Without texts no
``text`` input is sent: the model uses its default (no text), so image-only clients work with image
and image+text models alike. REST uses the columnar format (``{"inputs": {"images": [{"b64": ...}],
"text": ["..."]}}``), gRPC DT_STRING tensors. The clients retry transient failures (unavailable,
timeouts, 502/503/504) with exponential backoff, never retry a request the server refused (bad
input, unknown model, a request over the server's size limit), and raise typed errors carrying the
server's message. The REST client speaks plain HTTP/1.1 (``http.client``, no proxy) so that it can
read a refusal the server sent before reading the whole body (413, then the connection closed).
"""

from __future__ import annotations

import base64
import http.client
import json
import time
import urllib.parse
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np

T = TypeVar("T")
Text = Union[str, bytes]


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
    text_input_name: str = "text"
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

    def predict(self, images: Sequence[bytes], texts: Union[None, Text, Sequence[Text]] = None) -> Prediction:
        """Probabilities for each encoded picture, in batches of at most ``max_batch_size``.

        Args:
          images: encoded pictures (JPEG, PNG, GIF or BMP bytes).
          texts: None (no ``text`` input is sent), one ``str`` / ``bytes`` for every picture, or a
            list with one per picture.

        Raises:
          ValueError: no pictures, or a list of texts whose length is not the number of pictures.
        """
        if not images:
            raise ValueError("no pictures to predict")
        per_picture = None
        if texts is not None and not isinstance(texts, (str, bytes)):
            per_picture = list(texts)
            if len(per_picture) != len(images):
                raise ValueError(f"texts: {len(per_picture)} given for {len(images)} pictures; give one text per "
                                 "picture, or a single str for all of them")
        inputs_of = []
        for start in range(0, len(images), self.config.max_batch_size):
            end = start + self.config.max_batch_size
            inputs: Dict[str, List[Text]] = {self.config.input_name: list(images[start:end])}
            if per_picture is not None:
                inputs[self.config.text_input_name] = per_picture[start:end]
            elif texts is not None:
                inputs[self.config.text_input_name] = [texts]  # one text: the model broadcasts it
            inputs_of.append(inputs)
        return self._predict_batches(inputs_of)

    def predict_texts(self, texts: Sequence[Text]) -> Prediction:
        """Probabilities for each text, for a model that reads text alone (``serving_default(text)``)."""
        if isinstance(texts, (str, bytes)):
            texts = [texts]
        if not texts:
            raise ValueError("no texts to predict")
        size = self.config.max_batch_size
        return self._predict_batches([{self.config.text_input_name: list(texts[i:i + size])}
                                      for i in range(0, len(texts), size)])

    def _predict_batches(self, batches: List[Dict[str, List[Text]]]) -> Prediction:
        parts, classes = [], None
        for inputs in batches:
            outputs = self._with_retries(lambda: self._predict(inputs))
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

    def _path(self, suffix: str = "") -> str:
        c = self.config
        where = f"/versions/{c.version}" if c.version is not None else f"/labels/{c.label}" if c.label else ""
        return f"/v1/models/{c.model_name}{where}{suffix}"

    def _url(self, suffix: str = "") -> str:
        return f"http://{self.config.host}:{self.config.port}{self._path(suffix)}"

    def _request(self, url: str, payload: Optional[dict] = None) -> dict:
        """GET (no payload) or POST ``payload`` as JSON; the server's JSON answer, or a typed error.

        Plain ``http.client`` (no proxies): when the server refuses a request before reading all of
        its body (413, over its size limit) and closes the connection, the send fails with a broken
        pipe, yet the server's answer is there to read; it is read and raised as the refusal it is,
        not retried as a transient failure.
        """
        parts = urllib.parse.urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        data = json.dumps(payload).encode() if payload is not None else None
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.config.timeout_s)
        try:
            send_error: Optional[OSError] = None
            try:
                connection.request("POST" if data is not None else "GET", path, body=data,
                                   headers={"Content-Type": "application/json"})
            except (BrokenPipeError, ConnectionResetError) as e:
                send_error = e  # the server may have answered without reading the whole body
            except OSError as e:
                raise UnavailableError(f"{url}: {e}", "UNAVAILABLE") from e
            try:
                response = connection.getresponse()
                status, body = response.status, response.read()
            except (OSError, http.client.HTTPException) as e:
                raise UnavailableError(f"{url}: {send_error or e}", "UNAVAILABLE") from e
        finally:
            connection.close()
        if 200 <= status < 300:
            try:
                return json.loads(body)
            except ValueError as e:
                raise UnavailableError(f"{url}: the answer is not JSON ({e})", "UNAVAILABLE") from e
        try:
            message = json.loads(body).get("error", body.decode(errors="replace"))
        except (ValueError, AttributeError):
            message = body.decode(errors="replace")[:500]
        if status == 404:
            raise ModelNotFoundError(message, "NOT_FOUND")
        if status in (502, 503, 504):
            raise UnavailableError(message, f"HTTP {status}")
        raise InvalidRequestError(message, "INVALID_ARGUMENT" if status == 400 else f"HTTP {status}")

    @staticmethod
    def _json_value(value: Text) -> object:
        """A str as a JSON string; bytes (pictures, or text that need not be UTF-8) as {"b64": ...}."""
        if isinstance(value, str):
            return value
        return {"b64": base64.b64encode(value).decode()}

    def _predict(self, inputs: Dict[str, List[Text]]) -> Dict[str, object]:
        payload = {"signature_name": self.config.signature_name,
                   "inputs": {name: [self._json_value(v) for v in values] for name, values in inputs.items()}}
        outputs = self._request(self._url(":predict"), payload)["outputs"]
        return outputs if isinstance(outputs, dict) else {"probabilities": outputs}

    def status(self) -> List[Dict[str, object]]:
        entries = self._request(self._url())["model_version_status"]
        return [{"version": int(e["version"]), "state": e["state"],
                 "error": e.get("status", {}).get("error_message", "")} for e in entries]

    def metadata(self) -> dict:
        return self._request(self._url("/metadata"))

    def input_names(self, signature_name: Optional[str] = None) -> List[str]:
        """The inputs of a signature of the served model (default: the client's), from its metadata."""
        definitions = self.metadata()["metadata"]["signature_def"]["signature_def"]
        name = signature_name or self.config.signature_name
        if name not in definitions:
            raise InvalidRequestError(f"the served model has no signature '{name}' ({sorted(definitions)})",
                                      "INVALID_ARGUMENT")
        return sorted(definitions[name]["inputs"])


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

    def _predict(self, inputs: Dict[str, List[Text]]) -> Dict[str, object]:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec)
        request.model_spec.signature_name = self.config.signature_name
        for name, values in inputs.items():
            encoded = [v.encode("utf-8") if isinstance(v, str) else v for v in values]
            request.inputs[name].CopyFrom(tf.make_tensor_proto(encoded, dtype=tf.string, shape=[len(encoded)]))
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

    def input_names(self, signature_name: Optional[str] = None) -> List[str]:
        """The inputs of a signature of the served model (default: the client's), from its metadata."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        definitions = get_model_metadata_pb2.SignatureDefMap()
        self.metadata().metadata["signature_def"].Unpack(definitions)
        name = signature_name or self.config.signature_name
        if name not in definitions.signature_def:
            raise InvalidRequestError(f"the served model has no signature '{name}' "
                                      f"({sorted(definitions.signature_def)})", "INVALID_ARGUMENT")
        return sorted(definitions.signature_def[name].inputs)


def make_client(protocol: str, config: ClientConfig) -> _Client:
    if protocol == "rest":
        return RestClient(config)
    if protocol == "grpc":
        return GrpcClient(config)
    raise ValueError(f"unknown protocol '{protocol}': use grpc or rest")
