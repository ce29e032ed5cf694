"""The local server's model side: versions loaded from the Pusher's layout, hot swaps, batching.

``ModelStore`` watches ``<base_path>/<integer version>/`` (what ServingPusher and TF Serving use) and
keeps loaded, in the background:

- the newest **complete** version (``model_contract.is_complete``: ``saved_model.pb`` and the
  Pusher's ``assets.extra/push_complete.json``; a folder still being copied is not a candidate), or,
  while the newest cannot be loaded, the newest one that can;
- every version a label (``stable``, ``canary``) names.

It is availability preserving, like TF Serving: a version is swapped in only once it is loaded and
warmed up, and a version is unloaded only once a newer wanted version is AVAILABLE (a corrupt newer
version never takes traffic away from the one serving). A version that fails to load is retried
with exponential backoff (``retry_base_s``, doubling, capped at ``retry_max_s``), and at once when
its files change, so a folder that was still being copied, or that an operator repaired, loads
without a restart. Requests never wait on a load and none is dropped: a request holds the version
object it started with, and an unloaded version is only forgotten, never torn down under a request.

``LoadedVersion.run`` is the one place a request meets the model: it fills inputs the request left
out with the signature's defaults (``model_contract.signature_defaults``: ``text`` of a model that
reads text defaults to ``[""]``, so an image-only client of an image+text model gets the image
classifier's answer), checks names, ranks, shapes and types, and turns TensorFlow's errors into
short messages (no graph node names or traces); when a call of several instances fails, the failing
instance(s) are found by bisection and named. ``Batcher`` merges concurrent requests to a signature
whose inputs are all rank-1 strings (``serving_default``: ``images``, and ``text``) into one model
call, and splits the outputs back per request; one bad request in a merged batch fails only itself.

Status names and their gRPC / HTTP codes live in one table, :data:`STATUS_CODES`, read by both
protocols (``serving.server``).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from placedemarche.serving import model_contract as contract

logger = logging.getLogger(__name__)

_VERSION = re.compile(r"^\d+$")

# TF Serving's status names → (canonical gRPC code, HTTP status of its REST API). The one table
# both protocols map errors with.
STATUS_CODES: Dict[str, Tuple[int, int]] = {
    "OK": (0, 200),
    "UNKNOWN": (2, 500),
    "INVALID_ARGUMENT": (3, 400),
    "DEADLINE_EXCEEDED": (4, 504),
    "NOT_FOUND": (5, 404),
    "RESOURCE_EXHAUSTED": (8, 413),
    "FAILED_PRECONDITION": (9, 400),
    "UNIMPLEMENTED": (12, 501),
    "INTERNAL": (13, 500),
    "UNAVAILABLE": (14, 503),
}
_NAME_OF_CODE = {code: name for name, (code, _) in STATUS_CODES.items()}

# Inputs a model broadcasts when a request gives one value for all rows (the model's own
# ``_broadcast_text``): the batcher repeats them to the request's rows before merging requests.
BROADCAST_INPUTS = frozenset({contract.TEXT})
_MAX_MESSAGE_CHARS = 300


class ServingError(Exception):
    """An error with TF Serving's status name (``code``: NOT_FOUND, INVALID_ARGUMENT, ...).

    ``message`` is what the client sees: short, without internal details (no server paths, no
    TensorFlow node names or traces). ``grpc_code`` and ``http_status`` come from :data:`STATUS_CODES`.
    """

    def __init__(self, code: str, message: str):
        if code not in STATUS_CODES:
            raise ValueError(f"unknown status name '{code}'")
        super().__init__(message)
        self.code, self.message = code, message

    @property
    def grpc_code(self) -> int:
        return STATUS_CODES[self.code][0]

    @property
    def http_status(self) -> int:
        return STATUS_CODES[self.code][1]


# --- messages without internal details -----------------------------------------------------------------

_PATH_TOKEN = re.compile(r"(?:[A-Za-z][\w+.-]*://[^\s'\"]+|(?<![\w.~/-])/(?:[^\s'\"/]+/)*[^\s'\"/]*)")
_NODE_NOISE = re.compile(r"\[\[.*?\]\]|\[Op:[^\]]*\]|\{\{[^}]*\}\}")
_ASSERTION = re.compile(r"assertion failed: \[(?P<message>[^\]]*)\]")
_DECODE_ERRORS = re.compile(r"image file format|JPEG|PNG|GIF|BMP|decode|Invalid (?:PNG|JPEG) data", re.IGNORECASE)
PICTURE_ERROR = "not a picture the model can decode (JPEG, PNG, GIF or BMP)"


def scrub_paths(text: str) -> str:
    """``text`` with every absolute path or URL replaced by its last component."""
    def last(match: "re.Match[str]") -> str:
        token = match.group(0).rstrip("/")
        return token.rsplit("/", 1)[-1] or "/"
    return _PATH_TOKEN.sub(last, text)


def shorten(text: str, limit: int = _MAX_MESSAGE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def summarize_tf_error(message: str) -> str:
    """The first meaningful line of a TensorFlow error, without node names, traces or paths.

    ``Graph execution error: Detected at node map/while/DecodeImage defined at ... Unknown image file
    format. One of JPEG, PNG, GIF, BMP required. [[{{node ...}}]] [Op:__inference_...]`` becomes
    ``Unknown image file format. One of JPEG, PNG, GIF, BMP required.``; an assertion of the model
    (``assertion failed: [msg] [Condition x == y ...]``) becomes ``msg``.
    """
    in_trace = False
    for raw in message.splitlines():
        line = raw.strip()
        if not line or line.startswith("Graph execution error"):
            continue
        if line.startswith("Detected at node") or line.startswith("Traceback"):
            in_trace = True
            continue
        if in_trace and (raw[:1].isspace() or line.startswith(("File ", "<stack traces"))):
            continue
        in_trace = False
        cleaned = _NODE_NOISE.sub("", line).strip()
        if not cleaned:
            continue
        assertion = _ASSERTION.search(cleaned)
        if assertion:
            cleaned = assertion.group("message").replace("\\'", "'").strip()
        return shorten(scrub_paths(cleaned))
    return "the model refused the input"


def short_reason(error: BaseException) -> str:
    """``Type: first line`` of an exception, paths scrubbed (what a status may show)."""
    text = getattr(error, "message", None) or str(error)
    first = summarize_tf_error(text) if text else ""
    return shorten(f"{type(error).__name__}: {first}" if first else type(error).__name__, 200)


# --- calling a signature -------------------------------------------------------------------------------


def _call(signature, tensors) -> Dict[str, np.ndarray]:
    """One call of a signature; TensorFlow's status errors become short ServingErrors."""
    import tensorflow as tf

    try:
        outputs = signature(**tensors)
    except tf.errors.OpError as e:  # e.g. bytes that are not a picture, the model's own assertions
        name = _NAME_OF_CODE.get(e.error_code, "UNKNOWN")
        if name in ("INTERNAL", "UNKNOWN"):
            raise  # a fault of the model or the server: logged in full by the caller, not shown
        logger.debug("signature call failed: %s", e.message)
        raise ServingError(name, summarize_tf_error(e.message)) from e
    return {k: v.numpy() for k, v in outputs.items()}


def _rows(arrays: Dict[str, np.ndarray]) -> Optional[int]:
    """The common leading dimension of all inputs, or None when they have none."""
    lengths = {len(a) for a in arrays.values() if np.ndim(a) >= 1}
    if len(lengths) != 1 or any(np.ndim(a) == 0 for a in arrays.values()):
        return None
    return lengths.pop()


def _failing_rows(run: Callable[[Dict[str, np.ndarray]], Any], arrays: Dict[str, np.ndarray], lo: int, hi: int,
                  limit: int = 8) -> List[Tuple[int, ServingError]]:
    """Rows in ``[lo, hi)`` that fail alone, by bisection (``[lo, hi)`` is known to fail)."""
    if hi - lo == 1:
        try:
            run({k: v[lo:hi] for k, v in arrays.items()})
        except ServingError as e:
            return [(lo, e)]
        return []
    found: List[Tuple[int, ServingError]] = []
    mid = (lo + hi) // 2
    for a, b in ((lo, mid), (mid, hi)):
        if len(found) >= limit:
            break
        try:
            run({k: v[a:b] for k, v in arrays.items()})
        except ServingError as e:
            if e.code != "INVALID_ARGUMENT":
                raise
            found.extend(_failing_rows(run, arrays, a, b, limit - len(found)) if b - a > 1 else [(a, e)])
    return found


def _describe(error: ServingError, arrays: Dict[str, np.ndarray]) -> Tuple[str, Optional[str]]:
    """(reason, input it is about) for a failed single instance."""
    if contract.IMAGES in arrays and _DECODE_ERRORS.search(error.message):
        return PICTURE_ERROR, contract.IMAGES
    return error.message, (next(iter(arrays)) if len(arrays) == 1 else None)


def call_signature(signature, arrays: Dict[str, np.ndarray], dtypes: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """Calls ``signature`` on NumPy inputs; when a call of several instances is refused, names them.

    A failure of a multi-instance call (INVALID_ARGUMENT) is narrowed down to the instance(s) that
    fail alone, by bisection, and reported as ``instance 2 of 3 ('images'): not a picture the model
    can decode (JPEG, PNG, GIF or BMP)`` (instances count from 1). When no instance fails alone the
    batch as a whole was refused, and that message is reported.
    """
    import tensorflow as tf

    def run(part: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return _call(signature, {k: tf.constant(v, dtype=dtypes[k]) for k, v in part.items()})

    try:
        return run(arrays)
    except ServingError as e:
        if e.code != "INVALID_ARGUMENT":
            raise
        n = _rows(arrays)
        if n is None or n == 0:
            raise
        bad = _failing_rows(run, arrays, 0, n) if n > 1 else [(0, e)]
        if not bad:
            raise
        row, first = bad[0]
        reason, input_name = _describe(first, arrays)
        where = f"instance {row + 1} of {n}" + (f" ('{input_name}')" if input_name else "")
        more = ""
        if len(bad) > 1:
            more = f"; also instance(s) {', '.join(str(r + 1) for r, _ in bad[1:])}"
        raise ServingError("INVALID_ARGUMENT", f"{where}: {reason}{more}") from e


# --- one loaded version --------------------------------------------------------------------------------


@dataclass
class LoadedVersion:
    """A loaded SavedModel version: its signatures, their default inputs, and its batcher."""

    version: int
    path: str
    model: object  # the loaded SavedModel
    signatures: Dict[str, object]
    batcher: Optional["Batcher"] = None
    loaded_at: float = field(default_factory=time.time)
    defaults: Dict[str, Dict[str, np.ndarray]] = field(default_factory=dict)  # signature → input → value

    def signature(self, signature_name: str):
        if signature_name not in self.signatures:
            raise ServingError("INVALID_ARGUMENT", f"Serving signature name: \"{shorten(str(signature_name), 100)}\" "
                               f"not found in signature def (available: {sorted(self.signatures)})")
        return self.signatures[signature_name]

    def input_names(self, signature_name: str) -> Tuple[List[str], List[str]]:
        """(all inputs, inputs without a default) of a signature, sorted."""
        expected = sorted(self.signature(signature_name).structured_input_signature[1])
        defaults = self.defaults.get(signature_name, {})
        return expected, [n for n in expected if n not in defaults]

    def batchable(self, signature_name: str) -> bool:
        """Whether every input of the signature is a rank-1 string tensor (rows can be merged)."""
        import tensorflow as tf

        specs = self.signature(signature_name).structured_input_signature[1].values()
        return bool(specs) and all(s.dtype == tf.string and s.shape.rank == 1 for s in specs)

    def run(self, signature_name: str, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Runs a signature on NumPy inputs (what both protocols decoded).

        Inputs the request left out are filled with the signature's defaults; each input is checked
        against the signature (name, rank, shape, strings or numbers) before TensorFlow sees it.
        Requests to the batched signature go through the batcher.

        Raises:
          ServingError: INVALID_ARGUMENT naming the input or instance at fault.
        """
        signature = self.signature(signature_name)
        expected = signature.structured_input_signature[1]
        given = dict(inputs)
        for name, value in self.defaults.get(signature_name, {}).items():
            if name in expected and name not in given:
                given[name] = value
        missing, unknown = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
        if missing or unknown:
            parts = ([f"missing input(s) {missing}"] if missing else []) + \
                    ([f"unexpected input(s) {[shorten(str(u), 60) for u in unknown[:5]]}"] if unknown else [])
            raise ServingError("INVALID_ARGUMENT", f"signature '{signature_name}' takes inputs {sorted(expected)}: "
                               + "; ".join(parts))
        arrays = {name: _checked(name, expected[name], value) for name, value in given.items()}
        dtypes = {name: spec.dtype for name, spec in expected.items()}
        if self.batchable(signature_name):
            arrays, rows = align_rows(arrays)
            if self.batcher is not None and signature_name == self.batcher.signature_name:
                try:
                    return self.batcher.submit(arrays, rows)
                except BatcherStopped:  # unloaded while this request ran: the model is still here
                    pass
        return call_signature(signature, arrays, dtypes)


def _checked(name: str, spec, value: Any) -> np.ndarray:
    """``value`` as a NumPy array that fits ``spec`` (rank, shape, strings or numbers)."""
    array = np.asarray(value) if not isinstance(value, np.ndarray) else value
    rank = spec.shape.rank
    if rank is not None and array.ndim != rank:
        raise ServingError("INVALID_ARGUMENT", f"input '{name}' must have rank {rank} (shape {spec.shape}), "
                           f"got shape {list(array.shape)}")
    if not spec.shape.is_compatible_with(array.shape):
        raise ServingError("INVALID_ARGUMENT", f"input '{name}' must have shape {spec.shape}, got {list(array.shape)}")
    wants_strings = spec.dtype.name == "string"
    if array.size:
        if array.dtype == object:
            is_strings = all(isinstance(v, (bytes, str)) for v in array.flat)
            if not is_strings:
                raise ServingError("INVALID_ARGUMENT", f"input '{name}' holds values that are neither strings nor numbers")
        else:
            is_strings = array.dtype.kind in "SU"
            if not is_strings and array.dtype.kind not in "biuf":
                raise ServingError("INVALID_ARGUMENT", f"input '{name}' has unsupported values ({array.dtype})")
        if wants_strings and not is_strings:
            raise ServingError("INVALID_ARGUMENT", f"input '{name}' takes strings (DT_STRING), got numbers")
        if not wants_strings and is_strings:
            raise ServingError("INVALID_ARGUMENT", f"input '{name}' takes numbers (DT_{spec.dtype.name.upper()}), "
                               "got strings")
    if wants_strings and array.dtype != object:
        array = array.astype(object)
    return array


def align_rows(arrays: Dict[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], int]:
    """Rank-1 inputs of one request, aligned to the same number of rows.

    The rows are those of the inputs the model does not broadcast (``images``); an input it
    broadcasts (``text``) may hold one value for all of them, and is repeated to every row (merged
    requests must line up row by row).

    Raises:
      ServingError: INVALID_ARGUMENT naming the inputs and their lengths.
    """
    lengths = {name: len(a) for name, a in arrays.items()}
    rows_of = {name: n for name, n in lengths.items() if name not in BROADCAST_INPUTS} or lengths
    if len(set(rows_of.values())) > 1:
        described = ", ".join(f"'{k}' has {v}" for k, v in sorted(rows_of.items()))
        raise ServingError("INVALID_ARGUMENT", f"inputs of different lengths: {described} values")
    rows = max(rows_of.values())
    aligned = {}
    for name, array in arrays.items():
        if len(array) == rows:
            aligned[name] = array
        elif len(array) == 1 and name in BROADCAST_INPUTS:
            aligned[name] = np.repeat(array, rows)
        else:
            others = ", ".join(f"'{k}' has {v}" for k, v in sorted(rows_of.items()) if k != name)
            raise ServingError("INVALID_ARGUMENT", f"input '{name}' has {len(array)} values but {others}: give one "
                               f"'{name}' per row, or a single one for all rows")
    return aligned, rows


# --- batching ------------------------------------------------------------------------------------------


class BatcherStopped(Exception):
    """The batcher was stopped (its version unloaded); the caller runs the model directly."""


class Batcher:
    """Merges concurrent requests to one signature (rank-1 string inputs) into one model call.

    A batch closes when it holds ``max_batch_size`` rows or ``timeout_ms`` after its first request
    arrived, like TF Serving's batching (``max_batch_size``, ``batch_timeout_micros``). Each request
    arrives aligned (``align_rows``): every input has the request's number of rows, so merging is a
    concatenation per input and the outputs are split back by rows. When a merged call fails, the
    requests are run one by one, so a bad request fails alone.
    """

    def __init__(self, signature, signature_name: str, input_names, max_batch_size: int = 32,
                 timeout_ms: float = 2.0, run: Optional[Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]] = None):
        import tensorflow as tf

        self.signature, self.signature_name = signature, signature_name
        self.input_names = sorted(input_names)
        self.max_batch_size, self.timeout = max_batch_size, timeout_ms / 1000.0
        dtypes = {name: tf.string for name in self.input_names}
        self._run = run or (lambda arrays: call_signature(signature, arrays, dtypes))
        self._pending: List[Tuple[Dict[str, np.ndarray], int, Future]] = []
        self._cv = threading.Condition()
        self._stopped = False
        self.calls = 0
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{signature_name}", daemon=True)
        self._thread.start()

    def submit(self, arrays: Dict[str, np.ndarray], rows: int) -> Dict[str, np.ndarray]:
        """Queues one aligned request; returns its outputs (or raises its error)."""
        future: Future = Future()
        with self._cv:
            if self._stopped:
                raise BatcherStopped()
            self._pending.append((arrays, rows, future))
            self._cv.notify()
        return future.result()

    def _loop(self) -> None:
        import tensorflow as tf

        while True:
            with self._cv:
                while not self._pending and not self._stopped:
                    self._cv.wait()
                if self._stopped and not self._pending:
                    return
                deadline = time.monotonic() + self.timeout
                while sum(r for _, r, _ in self._pending) < self.max_batch_size and not self._stopped:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cv.wait(remaining)
                batch, size = [], 0
                while self._pending and (not batch or size + self._pending[0][1] <= self.max_batch_size):
                    item = self._pending.pop(0)
                    batch.append(item)
                    size += item[1]
            if len(batch) == 1:
                arrays, _, future = batch[0]
                self._settle(future, lambda: self._run(arrays))
                self.calls += 1
                continue
            try:
                merged = {name: np.concatenate([a[name] for a, _, _ in batch]) for name in self.input_names}
                outputs = _call(self.signature, {k: tf.constant(v, tf.string) for k, v in merged.items()})
                self.calls += 1
            except Exception:  # one bad request fails the merged call: run the requests one by one
                logger.debug("a merged batch of %d requests failed; running them one by one", len(batch))
                for arrays, _, future in batch:
                    self._settle(future, lambda a=arrays: self._run(a))
                    self.calls += 1
                continue
            start = 0
            for _, rows, future in batch:
                future.set_result({k: v[start:start + rows] for k, v in outputs.items()})
                start += rows

    @staticmethod
    def _settle(future: Future, compute: Callable[[], Dict[str, np.ndarray]]) -> None:
        try:
            future.set_result(compute())
        except Exception as e:  # handed to the waiting request, which reports it
            future.set_exception(e)

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify_all()


# --- the versions of one model -------------------------------------------------------------------------


@dataclass
class _Failure:
    attempts: int
    next_try: float  # time.monotonic()
    fingerprint: Tuple
    reason: str


class ModelStore:
    """The versions of one model under ``base_path``, kept loaded and up to date (module docstring).

    Args:
      labels: label → version (``stable``, ``canary``).
      poll_seconds: how often the folder is scanned.
      max_batch_size, batch_timeout_ms, batching: the batcher of ``serving_default``.
      retry_base_s, retry_max_s: the backoff of a version that failed to load (doubling per failure).
    """

    def __init__(self, model_name: str, base_path: str, labels: Optional[Dict[str, int]] = None,
                 poll_seconds: float = 1.0, max_batch_size: int = 32, batch_timeout_ms: float = 2.0,
                 batching: bool = True, retry_base_s: float = 1.0, retry_max_s: float = 60.0):
        self.model_name, self.base_path = model_name, base_path
        self.labels = dict(labels or {})
        self.poll_seconds = poll_seconds
        self.max_batch_size, self.batch_timeout_ms, self.batching = max_batch_size, batch_timeout_ms, batching
        self.retry_base_s, self.retry_max_s = retry_base_s, retry_max_s
        self._versions: Dict[int, LoadedVersion] = {}
        self._states: Dict[int, str] = {}  # version -> LOADING / AVAILABLE / END
        self._errors: Dict[int, str] = {}
        self._failures: Dict[int, _Failure] = {}
        self._incomplete_seen: set = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # --- lifecycle

    def start(self) -> "ModelStore":
        """Loads what is on disk now, then watches for new versions in the background."""
        self.refresh()
        self._thread = threading.Thread(target=self._watch, name="model-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            for v in self._versions.values():
                if v.batcher:
                    v.batcher.stop()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # a bad version must not stop the watcher
                logger.exception("refreshing %s failed", self.base_path)

    def _folders(self) -> Dict[int, str]:
        """Integer version → its folder, for every integer-named folder (complete or not)."""
        if not os.path.isdir(self.base_path):
            return {}
        found: Dict[int, str] = {}
        for name in os.listdir(self.base_path):
            if _VERSION.match(name) and os.path.isdir(os.path.join(self.base_path, name)):
                found.setdefault(int(name), os.path.join(self.base_path, name))
        return found

    def on_disk(self) -> List[int]:
        """The complete versions (``model_contract.is_complete``), ascending: the load candidates.

        A folder without the completion marker (a copy in progress, or a version exported by hand
        without it) is ignored and logged once.
        """
        complete = []
        for version, path in sorted(self._folders().items()):
            if contract.is_complete(path):
                complete.append(version)
                self._incomplete_seen.discard(version)
            elif version not in self._incomplete_seen:
                self._incomplete_seen.add(version)
                logger.info("%s version %d is not complete (no %s/%s yet): not loaded until it is",
                            self.model_name, version, contract.ASSETS_EXTRA, contract.COMPLETE_MARKER)
        return complete

    def wanted(self, on_disk: List[int]) -> List[int]:
        """The versions to keep loaded: those labels point at, and the newest version that is loaded
        or may still load (the newest on disk unless it failed and waits for its next attempt; then
        the next older one, down to one that is loaded)."""
        wanted = {v for v in self.labels.values() if v in on_disk}
        for version in reversed(on_disk):
            wanted.add(version)
            if version in self._versions or self._due(version):
                break
        return sorted(wanted)

    def refresh(self) -> None:
        """Loads wanted versions (newest first), then unloads versions no longer needed.

        A version is unloaded only when a newer wanted version is AVAILABLE (or, when its folder is
        gone, when another wanted version is), so a newer version that fails to load never takes
        traffic from the one serving.
        """
        on_disk = self.on_disk()
        folders = self._folders()
        latest: Optional[int] = None
        for version in reversed(on_disk):  # the newest version that is loaded or loads now
            if version in self._versions or (self._due(version) and self._try_load(version, folders[version])):
                latest = version
                break
        for version in sorted(set(self.labels.values())):
            if version in on_disk and version not in self._versions and self._due(version):
                self._try_load(version, folders[version])
        keep = {v for v in self.labels.values() if v in self._versions} | ({latest} if latest is not None else set())
        for version in list(self._versions):
            if version in keep:
                continue
            if version in on_disk:
                replaced = any(w > version and w in self._versions for w in keep)
            else:  # its folder is gone: unload once another version serves
                replaced = any(w in self._versions for w in keep)
            if replaced:
                with self._lock:
                    old = self._versions.pop(version)
                    self._states[version] = "END"
                if old.batcher:
                    old.batcher.stop()
                logger.info("unloaded %s version %d", self.model_name, version)

    def _due(self, version: int) -> bool:
        """Whether a version may be (re)tried now: never failed, backoff elapsed, or its files changed."""
        failure = self._failures.get(version)
        if failure is None:
            return True
        if time.monotonic() >= failure.next_try:
            return True
        path = self._folders().get(version)
        return path is not None and _fingerprint(path) != failure.fingerprint

    def _try_load(self, version: int, path: str) -> bool:
        """Loads one version; on failure records it (short reason, backoff). Returns whether it loaded."""
        with self._lock:
            self._states[version] = "LOADING"
        fingerprint = _fingerprint(path)
        try:
            loaded = self._load(version, path)
        except Exception as e:
            previous = self._failures.get(version)
            attempts = (previous.attempts + 1) if previous else 1
            delay = min(self.retry_base_s * (2 ** (attempts - 1)), self.retry_max_s)
            reason = short_reason(e)
            self._failures[version] = _Failure(attempts, time.monotonic() + delay, fingerprint, reason)
            logger.error("loading %s version %d from %s failed (attempt %d, next in %.1f s)", self.model_name,
                         version, path, attempts, delay, exc_info=True)
            with self._lock:
                self._errors[version] = (f"version {version} could not be loaded (attempt {attempts}; next attempt "
                                         f"in {delay:g} s): {reason}")
                self._states[version] = "END"
            return False
        with self._lock:
            self._versions[version] = loaded
            self._states[version] = "AVAILABLE"
            self._errors.pop(version, None)
        self._failures.pop(version, None)
        logger.info("serving %s version %d from %s", self.model_name, version, path)
        return True

    def _load(self, version: int, path: Optional[str] = None) -> LoadedVersion:
        import tensorflow as tf

        path = path or os.path.join(self.base_path, str(version))
        model = tf.saved_model.load(path)
        signatures = dict(model.signatures)
        loaded = LoadedVersion(version, path, model, signatures, defaults=contract.signature_defaults(path))
        default = signatures.get(contract.SERVING_DEFAULT)
        if self.batching and default is not None and loaded.batchable(contract.SERVING_DEFAULT):
            loaded.batcher = Batcher(default, contract.SERVING_DEFAULT, sorted(default.structured_input_signature[1]),
                                     self.max_batch_size, self.batch_timeout_ms)
        try:
            self._warm_up(loaded)
        except Exception:
            if loaded.batcher:
                loaded.batcher.stop()
            raise
        return loaded

    @staticmethod
    def _warm_up(loaded: LoadedVersion) -> None:
        """Replays the model's TF Serving warm-up requests, as TF Serving does before serving it."""
        path = os.path.join(loaded.path, contract.ASSETS_EXTRA, contract.WARMUP_FILE)
        if not os.path.exists(path):
            return
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        for record in tf.data.TFRecordDataset([path]):
            request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
            name = request.model_spec.signature_name or contract.SERVING_DEFAULT
            if name in loaded.signatures:
                loaded.run(name, {k: tf.make_ndarray(v) for k, v in request.inputs.items()})

    # --- lookups

    def get(self, version: Optional[int] = None, label: Optional[str] = None) -> LoadedVersion:
        """The version asked for (by number or label), or the newest loaded one."""
        with self._lock:
            if label is not None:
                if label not in self.labels:
                    raise ServingError("NOT_FOUND", f"Unrecognized servable version label: {shorten(label, 100)}")
                version = self.labels[label]
            if version is not None:
                if version not in self._versions:
                    raise ServingError("NOT_FOUND", f"Servable not found for request: Specific({self.model_name}, {version})")
                return self._versions[version]
            if not self._versions:
                raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({self.model_name})")
            return self._versions[max(self._versions)]

    def status(self, version: Optional[int] = None, label: Optional[str] = None) -> List[Dict[str, object]]:
        """TF Serving's model_version_status entries (all known versions, or the one asked for).

        An error says which version failed and why in a line, never where it lives on the server.
        """
        with self._lock:
            if label is not None:
                if label not in self.labels:
                    raise ServingError("NOT_FOUND", f"Unrecognized servable version label: {shorten(label, 100)}")
                version = self.labels[label]
            known = sorted(self._states, reverse=True)
            if version is not None:
                if version not in self._states:
                    raise ServingError("NOT_FOUND", f"Could not find version {version} of model {self.model_name}")
                known = [version]
            if not known:
                raise ServingError("NOT_FOUND", f"Could not find any versions of model {self.model_name}")
            return [{"version": v, "state": self._states[v], "error": self._errors.get(v, "")} for v in known]

    def loaded_versions(self) -> List[int]:
        with self._lock:
            return sorted(self._versions)


def _fingerprint(path: str) -> Tuple:
    """What changes when a version folder's files are replaced (sizes and modification times)."""
    parts = []
    for relative in (contract.SAVED_MODEL_FILE, os.path.join(contract.ASSETS_EXTRA, contract.COMPLETE_MARKER),
                     "variables"):
        try:
            stat = os.stat(os.path.join(path, relative))
            parts.append((relative, stat.st_size, stat.st_mtime_ns, stat.st_ino))
        except OSError:
            parts.append((relative, None))
    return tuple(parts)
