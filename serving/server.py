"""A local server that speaks TensorFlow Serving's REST and gRPC APIs, for machines without TF Serving.

This is NOT TensorFlow Serving: it is a Python stand-in for laptops and these CI machines, which
have neither the ``tensorflow_model_server`` binary nor Docker. Production serves with the real
binary (``kubernetes/serving``). What it implements, with TF Serving's formats and error codes:

REST (``--rest-port``):
  GET  /v1/models/NAME                       model status (every known version)
  GET  /v1/models/NAME/versions/N            one version's status
  GET  /v1/models/NAME/labels/L              the status of the version a label points at
  GET  /v1/models/NAME[/versions/N]/metadata signature definitions
  POST /v1/models/NAME[/versions/N | /labels/L]:predict   row ("instances") or columnar ("inputs")
       format, binary values as {"b64": "..."}; errors as {"error": "..."} with HTTP 400 / 404 / 413
gRPC (``--grpc-port``): PredictionService.Predict and GetModelMetadata, ModelService.GetModelStatus,
  with INVALID_ARGUMENT / NOT_FOUND / RESOURCE_EXHAUSTED status codes.

It serves the Pusher's layout (``<base>/<integer version>/``), loads new versions as they appear
and switches without dropping requests (``serving.models``), replays each version's TF Serving
warm-up requests before serving it, batches concurrent ``serving_default`` requests, and refuses
oversized or malformed requests with a clear error while it keeps serving.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
from concurrent import futures
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Optional, Tuple

import numpy as np

from placedemarche.serving.models import ModelStore, ServingError

logger = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
_HTTP = {"INVALID_ARGUMENT": HTTPStatus.BAD_REQUEST, "NOT_FOUND": HTTPStatus.NOT_FOUND,
         "RESOURCE_EXHAUSTED": HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "UNAVAILABLE": HTTPStatus.SERVICE_UNAVAILABLE,
         "INTERNAL": HTTPStatus.INTERNAL_SERVER_ERROR}
_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                   r"(?P<tail>/metadata|:predict)?/?$")


# --- JSON <-> arrays (TF Serving's REST encoding) -----------------------------------------------------


def _decode_value(value: Any) -> Any:
    """{"b64": "..."} → bytes, recursively; other values unchanged."""
    if isinstance(value, dict):
        if set(value) == {"b64"}:
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (binascii.Error, TypeError, ValueError) as e:
                raise ServingError("INVALID_ARGUMENT", f"Unable to base64 decode: {e}") from e
        raise ServingError("INVALID_ARGUMENT", f"unexpected object {sorted(value)[:5]}: binary values must be "
                           'given as {"b64": "<base64>"}')
    if isinstance(value, list):
        return [_decode_value(v) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8")
    return value


def _to_array(value: Any) -> np.ndarray:
    decoded = _decode_value(value)
    try:
        array = np.array(decoded, dtype=object if _has_bytes(decoded) else None)
    except ValueError as e:
        raise ServingError("INVALID_ARGUMENT", f"inputs of inconsistent shape: {e}") from e
    if array.dtype == object and not _has_bytes(decoded):
        raise ServingError("INVALID_ARGUMENT", "inputs of inconsistent shape (ragged lists)")
    return array


def _has_bytes(value: Any) -> bool:
    if isinstance(value, bytes):
        return True
    return isinstance(value, list) and bool(value) and _has_bytes(value[0])


def _jsonable(array: np.ndarray) -> Any:
    if array.dtype == object or array.dtype.kind == "S":
        return np.vectorize(lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else b,
                            otypes=[object])(array).tolist() if array.size else array.tolist()
    return array.tolist()


def parse_predict_body(body: Dict[str, Any], input_names) -> Tuple[str, Dict[str, np.ndarray], bool]:
    """(signature name, inputs, row format?) from a REST predict body."""
    if not isinstance(body, dict):
        raise ServingError("INVALID_ARGUMENT", "the request body must be a JSON object")
    signature = body.get("signature_name") or "serving_default"
    if ("instances" in body) == ("inputs" in body):
        raise ServingError("INVALID_ARGUMENT", 'JSON request must have exactly one of "instances" (row format) or '
                           '"inputs" (columnar format)')
    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list) or not rows:
            raise ServingError("INVALID_ARGUMENT", '"instances" must be a non-empty list')
        named = all(isinstance(r, dict) and set(r) != {"b64"} for r in rows)
        if named:
            keys = set(rows[0])
            if any(set(r) != keys for r in rows):
                raise ServingError("INVALID_ARGUMENT", "every instance must name the same inputs")
            return signature, {k: _to_array([r[k] for r in rows]) for k in keys}, True
        if len(input_names) != 1:
            raise ServingError("INVALID_ARGUMENT", f"the signature takes {len(input_names)} inputs: name them in each instance")
        return signature, {input_names[0]: _to_array(rows)}, True
    inputs = body["inputs"]
    if isinstance(inputs, dict) and set(inputs) != {"b64"}:
        return signature, {k: _to_array(v) for k, v in inputs.items()}, False
    if len(input_names) != 1:
        raise ServingError("INVALID_ARGUMENT", f"the signature takes {len(input_names)} inputs: name them in \"inputs\"")
    return signature, {input_names[0]: _to_array(inputs)}, False


def format_predict_response(outputs: Dict[str, np.ndarray], row: bool) -> Dict[str, Any]:
    if row:
        names = sorted(outputs)
        n = len(next(iter(outputs.values())))
        if len(names) == 1:
            return {"predictions": _jsonable(outputs[names[0]])}
        columns = {k: _jsonable(v) for k, v in outputs.items()}
        return {"predictions": [{k: columns[k][i] for k in names} for i in range(n)]}
    if len(outputs) == 1:
        return {"outputs": _jsonable(next(iter(outputs.values())))}
    return {"outputs": {k: _jsonable(v) for k, v in outputs.items()}}


def signature_metadata(version) -> Dict[str, Any]:
    """The signature definitions in TF Serving's metadata JSON shape."""

    def tensor(spec):
        dims = [{"size": str(d if d is not None else -1)} for d in (spec.shape.as_list() if spec.shape.rank is not None else [])]
        return {"dtype": f"DT_{spec.dtype.name.upper()}", "tensor_shape": {"dim": dims, "unknown_rank": spec.shape.rank is None},
                "name": spec.name or ""}

    defs = {}
    for name, sig in version.signatures.items():
        defs[name] = {
            "inputs": {k: tensor(s) for k, s in sig.structured_input_signature[1].items()},
            "outputs": {k: tensor(s) for k, s in sig.structured_outputs.items()},
            "method_name": "tensorflow/serving/predict",
        }
    return {"signature_def": {"signature_def": defs}}


# --- REST ---------------------------------------------------------------------------------------------


class _RestHandler(BaseHTTPRequestHandler):
    server_version = "placedemarche-local-serving"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # keep the console for errors
        logger.debug("rest: " + fmt, *args)

    def _send(self, status: int, payload: Dict[str, Any]) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, error: ServingError) -> None:
        self._send(_HTTP.get(error.code, HTTPStatus.BAD_REQUEST), {"error": error.message})

    def _route(self):
        match = _PATH.match(self.path.split("?")[0])
        if not match:
            raise ServingError("NOT_FOUND", f"Malformed request: {self.command} {self.path}")
        store: ModelStore = self.server.store
        if match["name"] != store.model_name:
            raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({match['name']})")
        version = int(match["version"]) if match["version"] else None
        return store, version, match["label"], match["tail"] or ""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        try:
            store, version, label, tail = self._route()
            if tail == ":predict":
                raise ServingError("INVALID_ARGUMENT", "predict takes POST")
            if tail == "/metadata":
                loaded = store.get(version, label)
                self._send(200, {"model_spec": {"name": store.model_name, "signature_name": "",
                                                "version": str(loaded.version)},
                                 "metadata": signature_metadata(loaded)})
                return
            entries = store.status(version, label)
            self._send(200, {"model_version_status": [
                {"version": str(e["version"]), "state": e["state"],
                 "status": {"error_code": "UNKNOWN" if e["error"] else "OK", "error_message": e["error"]}}
                for e in entries]})
        except ServingError as e:
            self._error(e)

    def do_POST(self):  # noqa: N802
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length > self.server.max_request_bytes:
                # Discard the body in chunks (never buffered) so the client reads the answer instead of
                # a broken pipe; a body far over the limit is cut off and the connection closed.
                remaining = min(length, 16 * self.server.max_request_bytes)
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 1 << 20))
                    if not chunk:
                        break
                    remaining -= len(chunk)
                self.close_connection = True
                raise ServingError("RESOURCE_EXHAUSTED", f"request of {length} bytes exceeds the "
                                   f"{self.server.max_request_bytes}-byte limit (--max-request-bytes)")
            raw = self.rfile.read(length)
            store, version, label, tail = self._route()
            if tail != ":predict":
                raise ServingError("INVALID_ARGUMENT", f"POST is only for :predict, not {self.path}")
            try:
                body = json.loads(raw or b"null")
            except json.JSONDecodeError as e:
                raise ServingError("INVALID_ARGUMENT", f"JSON Parse error: {e}") from e
            loaded = store.get(version, label)
            signature_name = body.get("signature_name") if isinstance(body, dict) else None
            signature = loaded.signatures.get(signature_name or "serving_default")
            if signature is None:
                raise ServingError("INVALID_ARGUMENT", f"Serving signature name: \"{signature_name}\" not found in "
                                   f"signature def (available: {sorted(loaded.signatures)})")
            input_names = sorted(signature.structured_input_signature[1]) if signature is not None else []
            signature_name, inputs, row = parse_predict_body(body, input_names)
            outputs = loaded.run(signature_name, inputs)
            self._send(200, format_predict_response(outputs, row))
        except ServingError as e:
            self._error(e)
        except Exception as e:  # never let one request take the server down
            logger.exception("predict failed")
            self._error(ServingError("INTERNAL", f"{type(e).__name__}: {e}"))


class RestServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, store: ModelStore, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
        super().__init__(address, _RestHandler)
        self.store, self.max_request_bytes = store, max_request_bytes


# --- gRPC ---------------------------------------------------------------------------------------------


def _grpc_services(store: ModelStore):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                         predict_pb2, prediction_service_pb2_grpc)
    from tensorflow_serving.apis import status_pb2

    codes = {"INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT, "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
             "RESOURCE_EXHAUSTED": grpc.StatusCode.RESOURCE_EXHAUSTED, "UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
             "INTERNAL": grpc.StatusCode.INTERNAL}

    def locate(spec):
        if spec.name != store.model_name:
            raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({spec.name})")
        version = spec.version.value if spec.HasField("version") else None
        label = spec.version_label or None
        return version, label

    def guard(method):
        def wrapper(self, request, context):
            try:
                return method(self, request, context)
            except ServingError as e:
                context.abort(codes.get(e.code, grpc.StatusCode.UNKNOWN), e.message)
            except Exception as e:
                logger.exception("gRPC call failed")
                context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
        return wrapper

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        @guard
        def Predict(self, request, context):  # noqa: N802 (gRPC names)
            version, label = locate(request.model_spec)
            loaded = store.get(version, label)
            name = request.model_spec.signature_name or "serving_default"
            inputs = {}
            for key, proto in request.inputs.items():
                try:
                    inputs[key] = tf.make_ndarray(proto)
                except Exception as e:
                    raise ServingError("INVALID_ARGUMENT", f"input '{key}' is not a valid TensorProto: {e}") from e
            outputs = loaded.run(name, inputs)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = store.model_name
            response.model_spec.version.value = loaded.version
            response.model_spec.signature_name = name
            wanted = set(request.output_filter) or set(outputs)
            for key in wanted:
                if key not in outputs:
                    raise ServingError("INVALID_ARGUMENT", f"output_filter '{key}' is not an output of '{name}'")
                response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key]))
            return response

        @guard
        def GetModelMetadata(self, request, context):  # noqa: N802
            if list(request.metadata_field) != ["signature_def"]:
                raise ServingError("INVALID_ARGUMENT", "Metadata field signature_def is the only one supported")
            version, label = locate(request.model_spec)
            loaded = store.get(version, label)
            sigs = get_model_metadata_pb2.SignatureDefMap()
            for name, sig in loaded.signatures.items():
                definition = sigs.signature_def[name]
                definition.method_name = "tensorflow/serving/predict"
                for key, spec in sig.structured_input_signature[1].items():
                    _tensor_info(definition.inputs[key], spec)
                for key, spec in sig.structured_outputs.items():
                    _tensor_info(definition.outputs[key], spec)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = store.model_name
            response.model_spec.version.value = loaded.version
            response.metadata["signature_def"].Pack(sigs)
            return response

    class ModelService(model_service_pb2_grpc.ModelServiceServicer):
        @guard
        def GetModelStatus(self, request, context):  # noqa: N802
            version, label = locate(request.model_spec)
            response = get_model_status_pb2.GetModelStatusResponse()
            for entry in store.status(version, label):
                status = response.model_version_status.add()
                status.version = entry["version"]
                status.state = get_model_status_pb2.ModelVersionStatus.State.Value(entry["state"])
                status.status.CopyFrom(status_pb2.StatusProto(error_code=2 if entry["error"] else 0,
                                                              error_message=entry["error"]))
            return response

    def _tensor_info(info, spec):
        info.name = spec.name or ""
        info.dtype = spec.dtype.as_datatype_enum
        if spec.shape.rank is None:
            info.tensor_shape.unknown_rank = True
        else:
            for d in spec.shape.as_list():
                info.tensor_shape.dim.add(size=-1 if d is None else d)

    return PredictionService(), ModelService(), prediction_service_pb2_grpc, model_service_pb2_grpc


def grpc_server(store: ModelStore, port: int, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, threads: int = 16,
                host: str = "0.0.0.0"):
    """A started gRPC server on ``host:port`` (port 0: any free port; read ``server.port``)."""
    import grpc

    prediction, model, prediction_grpc, model_grpc = _grpc_services(store)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads), options=[
        ("grpc.max_receive_message_length", max_request_bytes),
        ("grpc.max_send_message_length", max_request_bytes),
    ])
    prediction_grpc.add_PredictionServiceServicer_to_server(prediction, server)
    model_grpc.add_ModelServiceServicer_to_server(model, server)
    server.port = server.add_insecure_port(f"{host}:{port}")
    server.start()
    return server


class LocalServer:
    """Both protocols over one ModelStore; ``start()`` returns once the first version is loaded."""

    def __init__(self, model_name: str, base_path: str, rest_port: int = 8501, grpc_port: int = 8500,
                 host: str = "0.0.0.0", labels: Optional[Dict[str, int]] = None, poll_seconds: float = 1.0,
                 max_batch_size: int = 32, batch_timeout_ms: float = 2.0, batching: bool = True,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
        self.store = ModelStore(model_name, base_path, labels, poll_seconds, max_batch_size, batch_timeout_ms, batching)
        self.host, self.rest_port, self.grpc_port = host, rest_port, grpc_port
        self.max_request_bytes = max_request_bytes
        self.rest: Optional[RestServer] = None
        self.grpc = None

    def start(self) -> "LocalServer":
        self.store.start()
        self.rest = RestServer((self.host, self.rest_port), self.store, self.max_request_bytes)
        self.rest_port = self.rest.server_address[1]
        threading.Thread(target=self.rest.serve_forever, name="rest", daemon=True).start()
        self.grpc = grpc_server(self.store, self.grpc_port, self.max_request_bytes, host=self.host)
        self.grpc_port = self.grpc.port
        return self

    def stop(self) -> None:
        if self.rest:
            self.rest.shutdown()
            self.rest.server_close()
        if self.grpc:
            self.grpc.stop(grace=1).wait()
        self.store.stop()
