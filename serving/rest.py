"""The REST transport of the local server: one event loop multiplexes connections, a fixed pool of
workers serves requests whose headers are in; strict ``Content-Length``, read timeouts, 411 / 413 /
408 / 503 answered at once."""

from __future__ import annotations

import http.client
import io
import json
import logging
import queue
import re
import selectors
import socket
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Dict, Optional, Tuple

from placedemarche.serving import model_contract as contract
from placedemarche.serving.dataplane import (  # noqa: F401
    DataPlane,
    _json_type,
    decode_json,
    format_predict_response,
    parse_predict_body,
    signature_metadata,
)
from placedemarche.serving.errors import shorten
from placedemarche.serving.models import STATUS_CODES, ServingError  # noqa: F401

logger = logging.getLogger(__name__)


DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024


DEFAULT_MAX_CONNECTIONS = 64  # REST requests processed at once (worker threads)


DEFAULT_MAX_OPEN_CONNECTIONS = 1024  # REST connections open at once (idle ones included)


DEFAULT_READ_TIMEOUT_S = 10.0


MAX_HEADER_BYTES = 64 * 1024


_CONTENT_LENGTH = re.compile(r"^[0-9]{1,19}$")


_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d{1,18})|/labels/(?P<label>[^/:]+))?"
                   r"(?P<tail>/metadata|:predict)?/?$")


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

