"""A local server that speaks TensorFlow Serving's REST and gRPC APIs, for machines without TF Serving.

This is NOT TensorFlow Serving: it is a Python stand-in for laptops and these CI machines, which
have neither the ``tensorflow_model_server`` binary nor Docker. Production serves with the real
binary (``kubernetes/serving``). What it implements, with TF Serving's formats and error codes:

REST (``rest_port``):
  GET  /v1/models/NAME                       model status (every known version)
  GET  /v1/models/NAME/versions/N            one version's status
  GET  /v1/models/NAME/labels/L              the status of the version a label points at
  GET  /v1/models/NAME[/versions/N]/metadata signature definitions
  POST /v1/models/NAME[/versions/N | /labels/L]:predict   row ("instances") or columnar ("inputs")
       format, binary values as {"b64": "..."}; errors as {"error": "..."}
gRPC (``grpc_port``): PredictionService.Predict and GetModelMetadata, ModelService.GetModelStatus.

Layout (kserve's pattern): each protocol is a thin transport that decodes a request into NumPy
inputs and calls one shared :class:`DataPlane`; errors are ``ServingError`` with TF Serving's status
names, mapped to gRPC codes and HTTP statuses by one table (``models.STATUS_CODES``:
INVALID_ARGUMENT → 400, NOT_FOUND → 404, RESOURCE_EXHAUSTED → 413, UNAVAILABLE → 503). Error answers
carry short messages: never a TensorFlow trace, a raw exception or a server path (an unexpected
failure is INTERNAL with a reference; the details are logged).

Models (``serving.models``): the Pusher's layout (``<base>/<integer version>/``, complete versions
only), hot swaps that keep the newest AVAILABLE version serving, load retries with backoff, default
inputs (an image-only client of an image+text model), batching of concurrent ``serving_default``
requests (``images`` and ``text``), warm-up replay.

Hardening (a server that a bad client cannot take down or starve):

- Both protocols bind to ``host``, loopback (``127.0.0.1``) unless told otherwise (``0.0.0.0``).
- REST: malformed JSON of any kind (invalid, not UTF-8, lone surrogates, nested too deep, wrong
  types) is 400 with a clear message. ``Content-Length`` is required on POST (411) and must be a
  plain non-negative integer (400); a declared length over ``max_request_bytes`` is 413, answered at
  once without reading the body, and the connection is closed. Connections are multiplexed by one
  event loop: an idle or slow client holds no worker; a request goes to the fixed pool of
  ``max_connections`` workers only once its headers are in. Headers must arrive within
  ``read_timeout_s`` (else 408 and close), a body may stall no longer than ``read_timeout_s``, and
  idle keep-alive connections are closed after ``read_timeout_s``. At most ``max_open_connections``
  are open at once (beyond: 503 and close).
- gRPC: a ``TensorProto`` is checked before ``tf.make_ndarray`` materialises it: known dtype, known
  rank, no negative dimension, content that matches the declared shape (``tensor_content`` of exactly
  shape x itemsize; no more values than elements), and at most ``max_input_elements`` elements for a
  string input or for a value TensorFlow would repeat to fill the shape (a 30-byte request that
  declares 2**31 strings is INVALID_ARGUMENT, not 16 GB).
- A picture that cannot be decoded is INVALID_ARGUMENT naming the instance ("instance 2 of 3
  ('images'): not a picture the model can decode (JPEG, PNG, GIF or BMP)").
"""

from __future__ import annotations

import base64
import binascii
import http.client
import io
import json
import logging
import math
import queue
import re
import selectors
import socket
import threading
import time
import uuid
from concurrent import futures
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from placedemarche.serving import model_contract as contract
from placedemarche.serving.models import STATUS_CODES, LoadedVersion, ModelStore, ServingError, shorten

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_CONNECTIONS = 64  # REST requests processed at once (worker threads)
DEFAULT_MAX_OPEN_CONNECTIONS = 1024  # REST connections open at once (idle ones included)
DEFAULT_READ_TIMEOUT_S = 10.0
DEFAULT_MAX_INPUT_ELEMENTS = 100_000  # per gRPC string input, or per value a TensorProto would repeat
MAX_JSON_DEPTH = 32
MAX_HEADER_BYTES = 64 * 1024
_MAX_RANK = 8
_MAX_DIM = 2 ** 31 - 1
_CONTENT_LENGTH = re.compile(r"^[0-9]{1,19}$")
_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d{1,18})|/labels/(?P<label>[^/:]+))?"
                   r"(?P<tail>/metadata|:predict)?/?$")


# --- the data plane: what both protocols do once a request is decoded -----------------------------------


class DataPlane:
    """Model lookups, status and predictions over one ModelStore, for every transport."""

    def __init__(self, store: ModelStore):
        self.store = store

    @property
    def model_name(self) -> str:
        return self.store.model_name

    def _check_name(self, model_name: str) -> None:
        if model_name != self.store.model_name:
            raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({shorten(model_name, 100)})")

    def resolve(self, model_name: str, version: Optional[int] = None, label: Optional[str] = None) -> LoadedVersion:
        """The loaded version a request names (by number, label, or the newest)."""
        self._check_name(model_name)
        return self.store.get(version, label)

    def status(self, model_name: str, version: Optional[int] = None, label: Optional[str] = None) -> List[Dict[str, Any]]:
        self._check_name(model_name)
        return self.store.status(version, label)

    @staticmethod
    def predict(loaded: LoadedVersion, signature_name: str, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return loaded.run(signature_name or contract.SERVING_DEFAULT, inputs)

    @staticmethod
    def as_serving_error(error: BaseException, what: str) -> ServingError:
        """A ServingError for any failure: itself, or INTERNAL with a reference (details logged)."""
        if isinstance(error, ServingError):
            return error
        reference = uuid.uuid4().hex[:12]
        logger.error("%s failed (reference %s)", what, reference, exc_info=error)
        return ServingError("INTERNAL", f"internal error while serving the request (reference {reference}; "
                            "the details are in the server's log)")


# --- JSON <-> arrays (TF Serving's REST encoding) -----------------------------------------------------


def decode_json(raw: bytes) -> Any:
    """The request body as JSON; any malformed body is INVALID_ARGUMENT (never a server error)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ServingError("INVALID_ARGUMENT", f"JSON Parse error: the body is not UTF-8 (byte {e.start})") from e
    try:
        body = json.loads(text or "null")
    except json.JSONDecodeError as e:
        raise ServingError("INVALID_ARGUMENT", f"JSON Parse error: {e.msg} at line {e.lineno} column {e.colno}") from e
    except RecursionError as e:
        raise ServingError("INVALID_ARGUMENT", f"JSON Parse error: nested more than {MAX_JSON_DEPTH} levels deep") from e
    except ValueError as e:  # e.g. an integer with more digits than Python converts
        raise ServingError("INVALID_ARGUMENT", f"JSON Parse error: {shorten(str(e), 120)}") from e
    _check_depth(body)
    return body


def _check_depth(value: Any) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ServingError("INVALID_ARGUMENT", f"JSON Parse error: nested more than {MAX_JSON_DEPTH} levels deep")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def _utf8(value: str, name: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ServingError("INVALID_ARGUMENT", f"input '{name}': a string is not valid Unicode (lone surrogate "
                           f"\\u{ord(value[e.start]):04x}); send arbitrary bytes as {{\"b64\": \"...\"}}") from e


def _decode_value(value: Any, name: str) -> Any:
    """{"b64": "..."} → bytes and strings → UTF-8 bytes, recursively; numbers unchanged; else an error."""
    if isinstance(value, dict):
        if set(value) == {"b64"}:
            encoded = value["b64"]
            if not isinstance(encoded, str):
                raise ServingError("INVALID_ARGUMENT", f"input '{name}': \"b64\" must be a string, "
                                   f"not {_json_type(encoded)}")
            try:
                return base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError) as e:
                raise ServingError("INVALID_ARGUMENT", f"input '{name}': Unable to base64 decode: {e}") from e
        raise ServingError("INVALID_ARGUMENT", f"input '{name}': unexpected object with keys "
                           f"{[shorten(str(k), 40) for k in sorted(value)[:5]]}: binary values must be given as "
                           '{"b64": "<base64>"}')
    if isinstance(value, list):
        return [_decode_value(v, name) for v in value]
    if isinstance(value, str):
        return _utf8(value, name)
    if value is None:
        raise ServingError("INVALID_ARGUMENT", f"input '{name}': null is not a value")
    return value


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _leaves(value: Any):
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        else:
            yield item


def _to_array(value: Any, name: str) -> np.ndarray:
    """A JSON value of one input as a NumPy array: strings (object array of bytes) or numbers."""
    decoded = _decode_value(value, name)
    leaves = list(_leaves(decoded))
    strings = [isinstance(v, bytes) for v in leaves]
    if any(strings) and not all(strings):
        raise ServingError("INVALID_ARGUMENT", f"input '{name}' mixes strings and numbers")
    try:
        if leaves and all(strings):
            array = np.array(decoded, dtype=object)
            if any(not isinstance(v, bytes) for v in array.flat):
                raise ValueError("ragged")
        else:
            array = np.array(decoded)
            if array.dtype == object:
                raise ValueError("ragged or out of range")
    except ValueError as e:
        raise ServingError("INVALID_ARGUMENT", f"input '{name}': inputs of inconsistent shape (ragged lists) or "
                           "numbers out of range") from e
    return array


def parse_predict_body(body: Any, input_names) -> Tuple[str, Dict[str, np.ndarray], bool]:
    """(signature name, inputs, row format?) from a REST predict body.

    ``input_names``: the inputs an unnamed value may be for (those without a default); unnamed
    values need exactly one.
    """
    if not isinstance(body, dict):
        raise ServingError("INVALID_ARGUMENT", "the request body must be a JSON object")
    signature = body.get("signature_name") or contract.SERVING_DEFAULT
    if not isinstance(signature, str):
        raise ServingError("INVALID_ARGUMENT", f"\"signature_name\" must be a string, not {_json_type(signature)}")
    if ("instances" in body) == ("inputs" in body):
        raise ServingError("INVALID_ARGUMENT", 'JSON request must have exactly one of "instances" (row format) or '
                           '"inputs" (columnar format)')
    input_names = list(input_names)
    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list) or not rows:
            raise ServingError("INVALID_ARGUMENT", f'"instances" must be a non-empty list, not {_json_type(rows)}'
                               if not isinstance(rows, list) else '"instances" must be a non-empty list')
        named = all(isinstance(r, dict) and set(r) != {"b64"} for r in rows)
        if named:
            keys = set(rows[0])
            if any(set(r) != keys for r in rows):
                raise ServingError("INVALID_ARGUMENT", "every instance must name the same inputs")
            return signature, {k: _to_array([r[k] for r in rows], k) for k in sorted(keys)}, True
        if any(isinstance(r, dict) and set(r) != {"b64"} for r in rows):
            raise ServingError("INVALID_ARGUMENT", "either every instance names its inputs or none does")
        if len(input_names) != 1:
            raise ServingError("INVALID_ARGUMENT", f"the signature takes inputs {input_names}: name them in each "
                               "instance")
        return signature, {input_names[0]: _to_array(rows, input_names[0])}, True
    inputs = body["inputs"]
    if isinstance(inputs, dict) and set(inputs) != {"b64"}:
        return signature, {k: _to_array(v, k) for k, v in inputs.items()}, False
    if len(input_names) != 1:
        raise ServingError("INVALID_ARGUMENT", f"the signature takes inputs {input_names}: name them in \"inputs\"")
    return signature, {input_names[0]: _to_array(inputs, input_names[0])}, False


def _jsonable(array: np.ndarray) -> Any:
    if array.dtype == object or array.dtype.kind == "S":
        return np.vectorize(lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else b,
                            otypes=[object])(array).tolist() if array.size else array.tolist()
    return array.tolist()


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


# --- REST: the transport ---------------------------------------------------------------------------------


class _HttpError(Exception):
    """A refusal at the HTTP level (before any model is involved); the connection is closed after it."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(eq=False)  # hashed by identity (kept in a set)
class _Connection:
    sock: socket.socket
    address: Any
    buffer: bytearray = field(default_factory=bytearray)
    idle_since: float = field(default_factory=time.monotonic)
    request_started: Optional[float] = None  # first byte of the request being received


@dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: http.client.HTTPMessage
    body: bytes = b""


class RestServer:
    """TF Serving's REST API over a :class:`DataPlane`, with bounded threads and read timeouts.

    One event-loop thread (``serve_forever``) accepts connections and watches every open one; a
    connection is handed to one of ``max_connections`` worker threads only once a request's headers
    have arrived, and handed back to the loop between keep-alive requests. So idle connections and
    clients that send their headers slowly hold no worker, and the number of threads is fixed.

    Args:
      address: ``(host, port)``; port 0 picks a free port (read ``server_address``).
      plane: the data plane (a ModelStore is wrapped in one).
      max_request_bytes: the largest body accepted (413 beyond, answered without reading it).
      max_connections: worker threads (requests processed at once).
      read_timeout_s: how long headers may take to arrive, a body may stall, and a keep-alive
        connection may stay idle.
      max_open_connections: connections open at once; beyond, new ones get 503 and are closed.
    """

    server_version = "placedemarche-local-serving"

    def __init__(self, address, plane, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS, read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
                 max_open_connections: int = DEFAULT_MAX_OPEN_CONNECTIONS):
        if max_connections < 1 or read_timeout_s <= 0 or max_request_bytes < 1:
            raise ValueError("max_connections >= 1, read_timeout_s > 0 and max_request_bytes >= 1 are required")
        self.plane = plane if isinstance(plane, DataPlane) else DataPlane(plane)
        self.store = self.plane.store
        self.max_request_bytes, self.read_timeout_s = max_request_bytes, read_timeout_s
        self.max_connections, self.max_open_connections = max_connections, max_open_connections
        host, port = address
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        self.socket = socket.create_server((host, port), family=family, backlog=128)
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()[:2]
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._returned: "queue.SimpleQueue[_Connection]" = queue.SimpleQueue()
        self._pool = futures.ThreadPoolExecutor(max_connections, thread_name_prefix="rest-worker")
        self._open: set = set()
        self._open_lock = threading.Lock()
        self._stop = threading.Event()
        self._stopped = threading.Event()

    # --- the event loop

    def serve_forever(self) -> None:
        """Accepts and watches connections until ``shutdown()``."""
        self._selector.register(self.socket, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        tick = min(0.25, self.read_timeout_s / 4)
        try:
            while not self._stop.is_set():
                for key, _ in self._selector.select(timeout=tick):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        self._take_back()
                    else:
                        self._readable(key.data)
                self._expire()
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stops the loop (requests being processed finish) and waits for it."""
        self._stop.set()
        self._wake()
        self._stopped.wait(5)

    def server_close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for key in list(self._selector.get_map().values()):
            if isinstance(key.data, _Connection):
                self._close(key.data)
        with self._open_lock:
            leftover = list(self._open)
        for conn in leftover:
            self._close(conn)
        self._selector.close()
        for s in (self.socket, self._wake_r, self._wake_w):
            s.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:  # the loop is gone or its pipe is full: it wakes anyway
            logger.debug("waking the REST loop failed", exc_info=True)

    def _accept(self) -> None:
        while True:
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. out of file descriptors: the next tick retries
                logger.warning("accepting a REST connection failed", exc_info=True)
                return
            sock.setblocking(False)
            conn = _Connection(sock, address)
            with self._open_lock:
                full = len(self._open) >= self.max_open_connections
                if not full:
                    self._open.add(conn)
            if full:
                logger.warning("REST: %d connections open; refusing %s", self.max_open_connections, address)
                try:
                    sock.send(_response_bytes(503, {"error": "too many open connections; retry"}, close=True))
                except OSError:
                    logger.debug("could not tell %s the server is full", address)
                sock.close()
                continue
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _take_back(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while True:
            try:
                conn = self._returned.get_nowait()
            except queue.Empty:
                return
            if self._stop.is_set():
                self._close(conn)
                continue
            conn.sock.setblocking(False)
            self._selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _readable(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._unregister(conn)
            self._close(conn)
            return
        if not data:
            self._unregister(conn)
            self._close(conn)
            return
        if conn.request_started is None:
            conn.request_started = time.monotonic()
        conn.buffer += data
        if b"\r\n\r\n" in conn.buffer or len(conn.buffer) > MAX_HEADER_BYTES:
            self._unregister(conn)
            self._pool.submit(self._serve, conn)

    def _expire(self) -> None:
        now = time.monotonic()
        for key in list(self._selector.get_map().values()):
            conn = key.data
            if not isinstance(conn, _Connection):
                continue
            if conn.request_started is not None and now - conn.request_started > self.read_timeout_s:
                self._unregister(conn)
                logger.info("REST: %s sent no complete request headers within %g s; closing", conn.address,
                            self.read_timeout_s)
                try:
                    conn.sock.send(_response_bytes(408, {"error": f"request headers not received within "
                                                                  f"{self.read_timeout_s:g} s"}, close=True))
                except OSError:
                    logger.debug("could not send 408 to %s", conn.address)
                self._close(conn)
            elif conn.request_started is None and now - conn.idle_since > self.read_timeout_s:
                self._unregister(conn)
                self._close(conn)

    def _unregister(self, conn: _Connection) -> None:
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass

    def _close(self, conn: _Connection) -> None:
        with self._open_lock:
            self._open.discard(conn)
        try:
            conn.sock.close()
        except OSError:
            logger.debug("closing %s failed", conn.address)

    # --- a worker: one connection, request by request

    def _serve(self, conn: _Connection) -> None:
        """Answers the requests buffered on ``conn``; hands it back to the loop or closes it."""
        try:
            conn.sock.setblocking(True)
            conn.sock.settimeout(self.read_timeout_s)
            while True:
                keep = self._serve_one(conn)
                if not keep:
                    self._finish(conn)
                    return
                conn.idle_since, conn.request_started = time.monotonic(), None
                if conn.buffer:
                    conn.request_started = time.monotonic()
                    if b"\r\n\r\n" in conn.buffer:
                        continue  # a pipelined request is already here
                self._returned.put(conn)
                self._wake()
                return
        except (socket.timeout, OSError) as e:
            logger.info("REST: dropping %s: %s", conn.address, e)
            self._close(conn)
        except Exception:  # never lose a worker thread to one connection
            logger.exception("REST: serving %s failed", conn.address)
            self._close(conn)

    def _finish(self, conn: _Connection) -> None:
        """Closes after an answer: FIN first so the client reads the answer, then close."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            logger.debug("shutdown of %s failed", conn.address)
        self._close(conn)

    def _serve_one(self, conn: _Connection) -> bool:
        """Reads one request (its headers are buffered), answers it; returns whether to keep the connection."""
        try:
            request = self._read_request(conn)
        except _HttpError as e:
            conn.sock.sendall(_response_bytes(e.status, {"error": e.message}, close=True))
            return False
        keep = _keep_alive(request)
        status, payload = self._dispatch(request)
        conn.sock.sendall(_response_bytes(status, payload, close=not keep))
        return keep

    def _read_request(self, conn: _Connection) -> _Request:
        head, sep, rest = bytes(conn.buffer).partition(b"\r\n\r\n")
        if not sep:
            raise _HttpError(431, f"request headers over {MAX_HEADER_BYTES} bytes")
        line, _, header_block = head.partition(b"\r\n")
        try:
            method, target, version = line.decode("ascii").split(" ")
        except (UnicodeDecodeError, ValueError):
            raise _HttpError(400, "malformed request line") from None
        if version not in ("HTTP/1.0", "HTTP/1.1"):
            raise _HttpError(505, f"HTTP version not supported: {shorten(version, 20)}")
        try:
            headers = http.client.parse_headers(io.BytesIO(header_block + b"\r\n\r\n"))
        except (http.client.HTTPException, ValueError) as e:
            raise _HttpError(431 if "header" in str(e).lower() else 400, f"malformed headers: {shorten(str(e), 80)}") from e
        request = _Request(method, target, version, headers)
        if headers.get("Transfer-Encoding"):
            raise _HttpError(411, "send the body with a Content-Length (chunked transfer encoding is not supported)")
        lengths = headers.get_all("Content-Length") or []
        if not lengths:
            if method == "POST":
                raise _HttpError(411, "POST needs a Content-Length header")
            length = 0
        else:
            values = {v.strip() for v in lengths}
            value = values.pop()
            if values or not _CONTENT_LENGTH.match(value) or int(value) > 2 ** 63 - 1:
                raise _HttpError(400, "Content-Length must be one non-negative integer below 2**63, not "
                                 f"{shorten(repr(', '.join(lengths)), 60)}")
            length = int(value)
        if length > self.max_request_bytes:
            # Answered at once: the body is neither read nor drained, and the connection is closed.
            raise _HttpError(413, f"request of {length} bytes exceeds the {self.max_request_bytes}-byte limit "
                             "(--max-request-bytes)")
        if headers.get("Expect", "").lower() == "100-continue" and len(rest) < length:
            conn.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = bytearray(rest[:length])
        deadline = time.monotonic() + self.read_timeout_s + length / 100_000  # at least 100 kB/s
        while len(body) < length:
            if time.monotonic() > deadline:
                raise _HttpError(408, "request body not received in time")
            try:
                chunk = conn.sock.recv(min(length - len(body), 1 << 20))
            except socket.timeout:
                raise _HttpError(408, f"request body stalled for {self.read_timeout_s:g} s") from None
            if not chunk:
                raise OSError("the client closed the connection mid-body")
            body += chunk
        conn.buffer = bytearray(rest[length:])
        request.body = bytes(body)
        return request

    def _dispatch(self, request: _Request) -> Tuple[int, Dict[str, Any]]:
        """(HTTP status, JSON payload) for one request: routing, then the data plane."""
        try:
            if request.method == "GET":
                return 200, self._get(request)
            if request.method == "POST":
                return 200, self._post(request)
            return 405, {"error": f"method {shorten(request.method, 20)} is not supported: use GET or POST"}
        except Exception as e:
            error = self.plane.as_serving_error(e, f"REST {request.method} {shorten(request.target, 200)}")
            return error.http_status, {"error": error.message}

    def _route(self, request: _Request):
        match = _PATH.match(request.target.split("?")[0])
        if not match:
            raise ServingError("NOT_FOUND", f"Malformed request: {request.method} {shorten(request.target, 200)}")
        version = int(match["version"]) if match["version"] else None
        return match["name"], version, match["label"], match["tail"] or ""

    def _get(self, request: _Request) -> Dict[str, Any]:
        name, version, label, tail = self._route(request)
        if tail == ":predict":
            raise ServingError("INVALID_ARGUMENT", "predict takes POST")
        if tail == "/metadata":
            loaded = self.plane.resolve(name, version, label)
            return {"model_spec": {"name": self.plane.model_name, "signature_name": "", "version": str(loaded.version)},
                    "metadata": signature_metadata(loaded)}
        entries = self.plane.status(name, version, label)
        return {"model_version_status": [
            {"version": str(e["version"]), "state": e["state"],
             "status": {"error_code": "UNKNOWN" if e["error"] else "OK", "error_message": e["error"]}}
            for e in entries]}

    def _post(self, request: _Request) -> Dict[str, Any]:
        name, version, label, tail = self._route(request)
        if tail != ":predict":
            raise ServingError("INVALID_ARGUMENT", f"POST is only for :predict, not {shorten(request.target, 200)}")
        body = decode_json(request.body)
        loaded = self.plane.resolve(name, version, label)
        signature_name = body.get("signature_name") if isinstance(body, dict) else None
        if signature_name is not None and not isinstance(signature_name, str):
            raise ServingError("INVALID_ARGUMENT", f"\"signature_name\" must be a string, not {_json_type(signature_name)}")
        all_inputs, required = loaded.input_names(signature_name or contract.SERVING_DEFAULT)
        signature_name, inputs, row = parse_predict_body(body, required if len(required) == 1 else all_inputs)
        outputs = self.plane.predict(loaded, signature_name, inputs)
        return format_predict_response(outputs, row)


def _keep_alive(request: _Request) -> bool:
    connection = (request.headers.get("Connection") or "").lower()
    if request.version == "HTTP/1.1":
        return "close" not in connection
    return "keep-alive" in connection


def _response_bytes(status: int, payload: Dict[str, Any], close: bool) -> bytes:
    data = json.dumps(payload).encode("utf-8")  # ASCII: lone surrogates in echoed text are escaped
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    head = [f"HTTP/1.1 {status} {phrase}", f"Server: {RestServer.server_version}",
            "Content-Type: application/json", f"Content-Length: {len(data)}"]
    if close:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + data


# --- gRPC ---------------------------------------------------------------------------------------------


def _dtype_fields():
    from tensorflow.core.framework import types_pb2 as t

    # dtype → (the TensorProto field holding its values, bytes per element in tensor_content)
    return {t.DT_FLOAT: ("float_val", 4), t.DT_DOUBLE: ("double_val", 8), t.DT_HALF: ("half_val", 2),
            t.DT_BFLOAT16: ("half_val", 2), t.DT_INT8: ("int_val", 1), t.DT_UINT8: ("int_val", 1),
            t.DT_INT16: ("int_val", 2), t.DT_UINT16: ("int_val", 2), t.DT_INT32: ("int_val", 4),
            t.DT_INT64: ("int64_val", 8), t.DT_UINT32: ("uint32_val", 4), t.DT_UINT64: ("uint64_val", 8),
            t.DT_BOOL: ("bool_val", 1), t.DT_STRING: ("string_val", None)}


def tensor_proto_to_array(name: str, proto, max_elements: int = DEFAULT_MAX_INPUT_ELEMENTS) -> np.ndarray:
    """A request's TensorProto as a NumPy array, checked BEFORE anything is materialised.

    Refused (INVALID_ARGUMENT): an unsupported dtype, an unknown rank or more than 8 dimensions, a
    negative or huge dimension, ``tensor_content`` whose size is not shape x itemsize, more values
    than the shape holds, more than ``max_elements`` strings, or a shape of more than ``max_elements``
    elements that TensorFlow would fill by repeating fewer values (``tf.make_ndarray`` broadcasts).
    """
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2

    fields = _dtype_fields()
    if proto.dtype not in fields:
        dtype = types_pb2.DataType.Name(proto.dtype) if proto.dtype in types_pb2.DataType.values() else str(proto.dtype)
        raise ServingError("INVALID_ARGUMENT", f"input '{name}': dtype {dtype} is not supported")
    if proto.tensor_shape.unknown_rank:
        raise ServingError("INVALID_ARGUMENT", f"input '{name}': the tensor's shape must be known")
    dims = [d.size for d in proto.tensor_shape.dim]
    if len(dims) > _MAX_RANK:
        raise ServingError("INVALID_ARGUMENT", f"input '{name}': {len(dims)} dimensions (at most {_MAX_RANK})")
    if any(d < 0 for d in dims):
        raise ServingError("INVALID_ARGUMENT", f"input '{name}': shape {dims} has a negative dimension")
    count = math.prod(dims)
    field_name, itemsize = fields[proto.dtype]
    is_string = proto.dtype == types_pb2.DT_STRING
    if is_string and count > max_elements:
        raise ServingError("INVALID_ARGUMENT", f"input '{name}': shape {dims} declares {count} strings, over the "
                           f"limit of {max_elements} elements per input")
    if proto.tensor_content:
        if is_string:
            raise ServingError("INVALID_ARGUMENT", f"input '{name}': string tensors cannot use tensor_content")
        if len(proto.tensor_content) != count * itemsize:
            raise ServingError("INVALID_ARGUMENT", f"input '{name}': tensor_content holds {len(proto.tensor_content)} "
                               f"bytes, shape {dims} needs {count * itemsize}")
    else:
        values = len(getattr(proto, field_name))
        if values > count:
            raise ServingError("INVALID_ARGUMENT", f"input '{name}': {values} values for shape {dims} "
                               f"({count} elements)")
        if values < count and count > max_elements:
            raise ServingError("INVALID_ARGUMENT", f"input '{name}': shape {dims} declares {count} elements for "
                               f"{values} value(s), over the limit of {max_elements} elements per input")
    if any(d > _MAX_DIM for d in dims):
        raise ServingError("INVALID_ARGUMENT", f"input '{name}': shape {dims} has a dimension over {_MAX_DIM}")
    try:
        return tf.make_ndarray(proto)
    except Exception as e:  # whatever make_ndarray objects to is the request's fault
        raise ServingError("INVALID_ARGUMENT", f"input '{name}' is not a valid TensorProto: "
                           f"{shorten(str(e), 120)}") from e


def _grpc_services(plane: DataPlane, max_input_elements: int = DEFAULT_MAX_INPUT_ELEMENTS):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                         predict_pb2, prediction_service_pb2_grpc)
    from tensorflow_serving.apis import status_pb2

    def locate(spec):
        version = spec.version.value if spec.HasField("version") else None
        label = spec.version_label or None
        return spec.name, version, label

    def guard(method):
        def wrapper(self, request, context):
            try:
                return method(self, request, context)
            except Exception as e:
                error = plane.as_serving_error(e, f"gRPC {method.__name__}")
                context.abort(grpc.StatusCode[error.code], error.message)
        wrapper.__name__ = method.__name__
        return wrapper

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        @guard
        def Predict(self, request, context):  # noqa: N802 (gRPC names)
            loaded = plane.resolve(*locate(request.model_spec))
            name = request.model_spec.signature_name or contract.SERVING_DEFAULT
            inputs = {key: tensor_proto_to_array(key, proto, max_input_elements) for key, proto in request.inputs.items()}
            outputs = plane.predict(loaded, name, inputs)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = plane.model_name
            response.model_spec.version.value = loaded.version
            response.model_spec.signature_name = name
            wanted = set(request.output_filter) or set(outputs)
            for key in wanted:
                if key not in outputs:
                    raise ServingError("INVALID_ARGUMENT", f"output_filter '{shorten(key, 60)}' is not an output of '{name}'")
                response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key]))
            return response

        @guard
        def GetModelMetadata(self, request, context):  # noqa: N802
            if list(request.metadata_field) != ["signature_def"]:
                raise ServingError("INVALID_ARGUMENT", "Metadata field signature_def is the only one supported")
            loaded = plane.resolve(*locate(request.model_spec))
            sigs = get_model_metadata_pb2.SignatureDefMap()
            for name, sig in loaded.signatures.items():
                definition = sigs.signature_def[name]
                definition.method_name = "tensorflow/serving/predict"
                for key, spec in sig.structured_input_signature[1].items():
                    _tensor_info(definition.inputs[key], spec)
                for key, spec in sig.structured_outputs.items():
                    _tensor_info(definition.outputs[key], spec)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = plane.model_name
            response.model_spec.version.value = loaded.version
            response.metadata["signature_def"].Pack(sigs)
            return response

    class ModelService(model_service_pb2_grpc.ModelServiceServicer):
        @guard
        def GetModelStatus(self, request, context):  # noqa: N802
            response = get_model_status_pb2.GetModelStatusResponse()
            for entry in plane.status(*locate(request.model_spec)):
                status = response.model_version_status.add()
                status.version = entry["version"]
                status.state = get_model_status_pb2.ModelVersionStatus.State.Value(entry["state"])
                code = STATUS_CODES["UNKNOWN" if entry["error"] else "OK"][0]
                status.status.CopyFrom(status_pb2.StatusProto(error_code=code, error_message=entry["error"]))
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


def grpc_server(store, port: int, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, threads: int = 16,
                host: str = DEFAULT_HOST, max_input_elements: int = DEFAULT_MAX_INPUT_ELEMENTS):
    """A started gRPC server on ``host:port`` (port 0: any free port; read ``server.port``).

    ``store``: a DataPlane, or a ModelStore (wrapped in one). Requests run on ``threads`` threads;
    gRPC's core multiplexes connections, so idle clients hold none.
    """
    import grpc

    plane = store if isinstance(store, DataPlane) else DataPlane(store)
    prediction, model, prediction_grpc, model_grpc = _grpc_services(plane, max_input_elements)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc-worker"), options=[
        ("grpc.max_receive_message_length", max_request_bytes),
        ("grpc.max_send_message_length", max_request_bytes),
    ])
    prediction_grpc.add_PredictionServiceServicer_to_server(prediction, server)
    model_grpc.add_ModelServiceServicer_to_server(model, server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    server.port = server.add_insecure_port(address)
    if not server.port:
        raise OSError(f"gRPC could not bind {address}")
    server.start()
    return server


class LocalServer:
    """Both protocols over one ModelStore; ``start()`` returns once the first version is loaded.

    Args:
      host: the address both protocols bind to: loopback (``127.0.0.1``) by default; ``0.0.0.0``
        serves every interface.
      max_request_bytes: the largest REST body / gRPC message.
      max_connections: REST worker threads (requests processed at once).
      read_timeout_s: REST headers / stalled body / idle keep-alive limit.
      max_input_elements: per gRPC input, the most strings, or elements filled by repetition.
      grpc_threads: gRPC worker threads.
      retry_base_s, retry_max_s: the backoff of a version that failed to load.
    """

    def __init__(self, model_name: str, base_path: str, rest_port: int = 8501, grpc_port: int = 8500,
                 host: str = DEFAULT_HOST, labels: Optional[Dict[str, int]] = None, poll_seconds: float = 1.0,
                 max_batch_size: int = 32, batch_timeout_ms: float = 2.0, batching: bool = True,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 read_timeout_s: float = DEFAULT_READ_TIMEOUT_S, max_input_elements: int = DEFAULT_MAX_INPUT_ELEMENTS,
                 grpc_threads: int = 16, retry_base_s: float = 1.0, retry_max_s: float = 60.0):
        self.store = ModelStore(model_name, base_path, labels, poll_seconds, max_batch_size, batch_timeout_ms, batching,
                                retry_base_s=retry_base_s, retry_max_s=retry_max_s)
        self.plane = DataPlane(self.store)
        self.host, self.rest_port, self.grpc_port = host, rest_port, grpc_port
        self.max_request_bytes, self.max_connections, self.read_timeout_s = max_request_bytes, max_connections, read_timeout_s
        self.max_input_elements, self.grpc_threads = max_input_elements, grpc_threads
        self.rest: Optional[RestServer] = None
        self.grpc = None

    def start(self) -> "LocalServer":
        self.store.start()
        self.rest = RestServer((self.host, self.rest_port), self.plane, self.max_request_bytes,
                               max_connections=self.max_connections, read_timeout_s=self.read_timeout_s)
        self.rest_port = self.rest.server_address[1]
        threading.Thread(target=self.rest.serve_forever, name="rest", daemon=True).start()
        self.grpc = grpc_server(self.plane, self.grpc_port, self.max_request_bytes, threads=self.grpc_threads,
                                host=self.host, max_input_elements=self.max_input_elements)
        self.grpc_port = self.grpc.port
        logger.info("local server for %s on %s: REST port %d, gRPC port %d", self.store.model_name, self.host,
                    self.rest_port, self.grpc_port)
        return self

    def stop(self) -> None:
        if self.rest:
            self.rest.shutdown()
            self.rest.server_close()
        if self.grpc:
            self.grpc.stop(grace=1).wait()
        self.store.stop()
