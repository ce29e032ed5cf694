"""The local server's model side: versions loaded from the Pusher's layout, hot swaps, batching.

``ModelStore`` watches ``<base_path>/<integer version>/`` (what ServingPusher and TF Serving use),
loads the newest version (and any version a label names) in the background, and swaps it in only
once it is loaded, so requests never wait on a load and none is dropped: a request holds the
version object it started with, and an unloaded version is only forgotten, never torn down under a
request. ``Batcher`` merges concurrent ``serving_default`` requests into one model call.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

logger = logging.getLogger(__name__)

_VERSION = re.compile(r"^\d+$")


class ServingError(Exception):
    """An error with TF Serving's status code name (NOT_FOUND, INVALID_ARGUMENT, ...)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class LoadedVersion:
    version: int
    path: str
    model: object  # the loaded SavedModel
    signatures: Dict[str, object]
    batcher: Optional["Batcher"] = None
    loaded_at: float = field(default_factory=time.time)

    def run(self, signature_name: str, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Runs a signature; ``serving_default`` goes through the batcher when there is one."""
        import tensorflow as tf

        if signature_name not in self.signatures:
            raise ServingError("INVALID_ARGUMENT", f"Serving signature name: \"{signature_name}\" not found in "
                               f"signature def (available: {sorted(self.signatures)})")
        signature = self.signatures[signature_name]
        expected = signature.structured_input_signature[1]
        missing, unknown = set(expected) - set(inputs), set(inputs) - set(expected)
        if missing or unknown:
            raise ServingError("INVALID_ARGUMENT", f"signature '{signature_name}' takes inputs {sorted(expected)}; "
                               f"missing {sorted(missing)}, unexpected {sorted(unknown)}")
        tensors = {}
        for name, value in inputs.items():
            spec = expected[name]
            if spec.shape.rank is not None and np.ndim(value) != spec.shape.rank:
                raise ServingError("INVALID_ARGUMENT", f"input '{name}' must have rank {spec.shape.rank} "
                                   f"(shape {spec.shape}), got shape {list(np.shape(value))}")
            try:
                tensors[name] = tf.constant(value, dtype=spec.dtype)
            except (TypeError, ValueError) as e:
                raise ServingError("INVALID_ARGUMENT", f"input '{name}' is not {spec.dtype.name}: {e}") from e
        if self.batcher is not None and signature_name == self.batcher.signature_name:
            return self.batcher.submit(inputs[self.batcher.input_name])
        return _call(signature, tensors)


def _call(signature, tensors) -> Dict[str, np.ndarray]:
    import tensorflow as tf

    try:
        outputs = signature(**tensors)
    except tf.errors.InvalidArgumentError as e:  # e.g. bytes that are not a picture
        raise ServingError("INVALID_ARGUMENT", e.message) from e
    return {k: v.numpy() for k, v in outputs.items()}


class Batcher:
    """Merges concurrent requests to one signature (a single batched input) into one model call.

    A batch closes when it holds ``max_batch_size`` items or ``timeout_ms`` after its first request
    arrived, like TF Serving's batching (``max_batch_size``, ``batch_timeout_micros``).
    """

    def __init__(self, signature, signature_name: str, input_name: str, max_batch_size: int = 32,
                 timeout_ms: float = 2.0):
        self.signature, self.signature_name, self.input_name = signature, signature_name, input_name
        self.max_batch_size, self.timeout = max_batch_size, timeout_ms / 1000.0
        self._pending: List = []  # (values, future)
        self._cv = threading.Condition()
        self._stopped = False
        self.calls = 0
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{signature_name}", daemon=True)
        self._thread.start()

    def submit(self, values: np.ndarray) -> Dict[str, np.ndarray]:
        future: Future = Future()
        with self._cv:
            if self._stopped:
                raise ServingError("UNAVAILABLE", "the model version is being unloaded; retry")
            self._pending.append((np.asarray(values), future))
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
                while sum(len(v) for v, _ in self._pending) < self.max_batch_size and not self._stopped:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cv.wait(remaining)
                batch, size = [], 0
                while self._pending and (not batch or size + len(self._pending[0][0]) <= self.max_batch_size):
                    values, future = self._pending.pop(0)
                    batch.append((values, future))
                    size += len(values)
            try:
                merged = np.concatenate([v for v, _ in batch])
                outputs = _call(self.signature, {self.input_name: tf.constant(merged, tf.string)})
                self.calls += 1
            except Exception as e:  # one bad item fails its batch: retry the requests one by one
                if len(batch) > 1:
                    for values, future in batch:
                        try:
                            future.set_result(_call(self.signature, {self.input_name: tf.constant(values, tf.string)}))
                        except Exception as single:
                            future.set_exception(single)
                else:
                    batch[0][1].set_exception(e)
                continue
            start = 0
            for values, future in batch:
                future.set_result({k: v[start:start + len(values)] for k, v in outputs.items()})
                start += len(values)

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify_all()


class ModelStore:
    """The versions of one model under ``base_path``, kept loaded and up to date."""

    def __init__(self, model_name: str, base_path: str, labels: Optional[Dict[str, int]] = None,
                 poll_seconds: float = 1.0, max_batch_size: int = 32, batch_timeout_ms: float = 2.0,
                 batching: bool = True):
        self.model_name, self.base_path = model_name, base_path
        self.labels = dict(labels or {})
        self.poll_seconds = poll_seconds
        self.max_batch_size, self.batch_timeout_ms, self.batching = max_batch_size, batch_timeout_ms, batching
        self._versions: Dict[int, LoadedVersion] = {}
        self._states: Dict[int, str] = {}  # version -> LOADING / AVAILABLE / END
        self._errors: Dict[int, str] = {}
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

    def on_disk(self) -> List[int]:
        if not os.path.isdir(self.base_path):
            return []
        return sorted(int(n) for n in os.listdir(self.base_path)
                      if _VERSION.match(n) and os.path.exists(os.path.join(self.base_path, n, "saved_model.pb")))

    def wanted(self, on_disk: List[int]) -> List[int]:
        """TF Serving's default policy (the latest version) plus the versions labels point at."""
        wanted = set(on_disk[-1:]) | {v for v in self.labels.values() if v in on_disk}
        return sorted(wanted)

    def refresh(self) -> None:
        """Loads new wanted versions (before dropping old ones), then forgets unwanted ones."""
        on_disk = self.on_disk()
        wanted = self.wanted(on_disk)
        for version in wanted:
            if version in self._versions or self._errors.get(version):
                continue
            self._states[version] = "LOADING"
            try:
                loaded = self._load(version)
            except Exception as e:
                logger.error("loading %s version %d failed: %s", self.model_name, version, e)
                self._errors[version] = f"{type(e).__name__}: {e}"
                self._states[version] = "END"
                continue
            with self._lock:
                self._versions[version] = loaded
                self._states[version] = "AVAILABLE"
            logger.info("serving %s version %d from %s", self.model_name, version, loaded.path)
        for version in list(self._versions):
            if version not in wanted and any(v in self._versions for v in wanted):
                with self._lock:
                    old = self._versions.pop(version)
                    self._states[version] = "END"
                if old.batcher:
                    old.batcher.stop()
                logger.info("unloaded %s version %d", self.model_name, version)

    def _load(self, version: int) -> LoadedVersion:
        import tensorflow as tf

        path = os.path.join(self.base_path, str(version))
        model = tf.saved_model.load(path)
        signatures = dict(model.signatures)
        loaded = LoadedVersion(version, path, model, signatures)
        default = signatures.get("serving_default")
        inputs = default.structured_input_signature[1] if default is not None else {}
        if self.batching and len(inputs) == 1:
            (name, spec), = inputs.items()
            if spec.dtype == tf.string and spec.shape.rank == 1:
                loaded.batcher = Batcher(default, "serving_default", name, self.max_batch_size, self.batch_timeout_ms)
        self._warm_up(loaded)
        return loaded

    @staticmethod
    def _warm_up(loaded: LoadedVersion) -> None:
        """Replays the model's TF Serving warm-up requests, as TF Serving does before serving it."""
        path = os.path.join(loaded.path, "assets.extra", "tf_serving_warmup_requests")
        if not os.path.exists(path):
            return
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        for record in tf.data.TFRecordDataset([path]):
            request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
            name = request.model_spec.signature_name or "serving_default"
            if name in loaded.signatures:
                _call(loaded.signatures[name], {k: tf.make_ndarray(v) for k, v in request.inputs.items()})

    # --- lookups

    def get(self, version: Optional[int] = None, label: Optional[str] = None) -> LoadedVersion:
        """The version asked for (by number or label), or the newest loaded one."""
        with self._lock:
            if label is not None:
                if label not in self.labels:
                    raise ServingError("NOT_FOUND", f"Unrecognized servable version label: {label}")
                version = self.labels[label]
            if version is not None:
                if version not in self._versions:
                    raise ServingError("NOT_FOUND", f"Servable not found for request: Specific({self.model_name}, {version})")
                return self._versions[version]
            if not self._versions:
                raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({self.model_name})")
            return self._versions[max(self._versions)]

    def status(self, version: Optional[int] = None, label: Optional[str] = None) -> List[Dict[str, object]]:
        """TF Serving's model_version_status entries (all known versions, or the one asked for)."""
        with self._lock:
            if label is not None:
                if label not in self.labels:
                    raise ServingError("NOT_FOUND", f"Unrecognized servable version label: {label}")
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
