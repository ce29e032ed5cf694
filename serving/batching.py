"""Merging concurrent requests to one signature into one model call (TF Serving's batching), and
splitting the outputs back per request; one bad request in a merged batch fails only itself."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from placedemarche.serving.errors import BatcherStopped, ServingError  # noqa: F401
from placedemarche.serving.signatures import BROADCAST_INPUTS, _call, align_rows, call_signature  # noqa: F401

logger = logging.getLogger(__name__)


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

