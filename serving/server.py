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
  ('images'): not a JPEG, PNG, GIF or BMP picture (...)", the model's own words; older models
  without them: "not a picture the model can decode (JPEG, PNG, GIF or BMP)").
"""

from __future__ import annotations

import logging
import threading
from typing import Dict, Optional

from placedemarche.serving.dataplane import (  # noqa: F401 (re-exported)
    DEFAULT_HOST,
    DataPlane,
    decode_json,
    format_predict_response,
    parse_predict_body,
    signature_metadata,
)
from placedemarche.serving.grpc_api import DEFAULT_MAX_INPUT_ELEMENTS, grpc_server, tensor_proto_to_array  # noqa: F401
from placedemarche.serving.models import STATUS_CODES, LoadedVersion, ModelStore, ServingError  # noqa: F401
from placedemarche.serving.rest import (  # noqa: F401 (re-exported)
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_OPEN_CONNECTIONS,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_READ_TIMEOUT_S,
    RestServer,
)

logger = logging.getLogger(__name__)




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
      request_log: a ``request_log.RequestLog`` keeping a sample of the requests, or None.
    """

    def __init__(self, model_name: str, base_path: str, rest_port: int = 8501, grpc_port: int = 8500,
                 host: str = DEFAULT_HOST, labels: Optional[Dict[str, int]] = None, poll_seconds: float = 1.0,
                 max_batch_size: int = 32, batch_timeout_ms: float = 2.0, batching: bool = True,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 read_timeout_s: float = DEFAULT_READ_TIMEOUT_S, max_input_elements: int = DEFAULT_MAX_INPUT_ELEMENTS,
                 grpc_threads: int = 16, retry_base_s: float = 1.0, retry_max_s: float = 60.0,
                 request_log=None):
        self.store = ModelStore(model_name, base_path, labels, poll_seconds, max_batch_size, batch_timeout_ms, batching,
                                retry_base_s=retry_base_s, retry_max_s=retry_max_s)
        self.plane = DataPlane(self.store, request_log)
        self.request_log = request_log
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
        if self.request_log is not None:
            self.request_log.close()

