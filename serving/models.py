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
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from placedemarche.serving import model_contract as contract
from placedemarche.serving.batching import Batcher, BatcherStopped  # noqa: F401 (re-exported)
from placedemarche.serving.errors import (  # noqa: F401 (re-exported)
    PICTURE_ERROR,
    STATUS_CODES,
    ServingError,
    scrub_paths,
    short_reason,
    shorten,
    summarize_tf_error,
)
from placedemarche.serving.signatures import BROADCAST_INPUTS, LoadedVersion, align_rows, call_signature  # noqa: F401

logger = logging.getLogger(__name__)


_VERSION = re.compile(r"^\d+$")


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

