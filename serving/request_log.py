"""A sample of the served requests, logged as tf.Examples: what ``skew`` compares with training.

Open-source TF Serving cannot log its requests (in production a gateway or a sidecar in front of it
does; ``kubernetes/README.md``). The local server can: with ``serving.request_log_dir`` set, each
prediction request is kept with probability ``serving.request_log_rate`` and written, one tf.Example
per picture of the request, to ``requests-<host>-<pid>-<start>.tfrecord`` in that folder, until the
file reaches ``serving.request_log_max_mb`` (then logging stops, with one warning: a full disk must
not take the server down).

Each tf.Example holds the request's inputs under the training features' names (for a
``serving_examples`` request ``image_bytes``, ``product_name``, ``description``, ``brand`` and, where
the example has them, the original's ``source_format``, ``width``, ``height``; for ``serving_default``
``image_bytes`` and ``text`` when the request has them), and ``request_id``, ``time_ms`` (milliseconds
since the epoch), ``model_version``, ``signature``, ``predicted_label`` and ``score``. Only answers
that carry a label are logged (not ``serving_pixels`` / ``serving_fusion`` calls). Files are plain
(uncompressed) TFRecords, flushed after each request; the records are built outside the lock, the
write and flush happen on the request's thread before its reply is sent. After a failed write the
log stops (a half-written record must not be followed by more).
"""

from __future__ import annotations

import logging
import os
import random
import re
import socket
import threading
import time
import uuid
from typing import Dict, Optional

import numpy as np

from placedemarche.serving import model_contract as contract

logger = logging.getLogger(__name__)

FILE_PREFIX = "requests-"
FILE_SUFFIX = ".tfrecord"
TEXT_INPUT_FEATURE = "text"  # serving_default's optional text, kept under its own name
LOGGED_FEATURES = ("request_id", "time_ms", "model_version", "signature", "predicted_label", "score")
ORIGINAL_FEATURES = ("source_format", "width", "height")  # what ingestion recorded of the seller's original


class RequestLog:
    """Samples requests and appends them to one TFRecord file (thread-safe).

    Args:
      directory: where the file goes (created).
      rate: the share of requests kept, 0 to 1.
      max_bytes: the file's cap; past it nothing more is written.
      seed: the sampling's seed (tests); None: random.
    """

    def __init__(self, directory: str, rate: float = 1.0, max_bytes: int = 100 * 1024 * 1024,
                 seed: Optional[int] = None):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"serving.request_log_rate must be between 0 and 1, got {rate}")
        import tensorflow as tf

        self.directory, self.rate, self.max_bytes = directory, rate, max_bytes
        tf.io.gfile.makedirs(directory)
        host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:40]
        self.path = os.path.join(directory, f"{FILE_PREFIX}{host}-{os.getpid()}-{int(time.time())}{FILE_SUFFIX}")
        self._writer = tf.io.TFRecordWriter(self.path)
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.written_bytes = 0
        self.requests = self.examples = 0
        self.full = False

    def record(self, version: int, signature: str, inputs: Dict[str, np.ndarray],
               outputs: Dict[str, np.ndarray]) -> bool:
        """Logs one answered request if it is sampled; returns whether it was written. Never raises:
        a logging failure is logged and the answer still goes out."""
        if contract.LABEL not in outputs:
            return False
        try:
            with self._lock:
                if self.full or self._random.random() >= self.rate:
                    return False
            records = [e.SerializeToString() for e in _examples(version, signature, inputs, outputs)]
            size = sum(len(r) + 16 for r in records)  # TFRecord framing: 16 bytes a record
            with self._lock:
                if self.full:
                    return False
                if self.written_bytes + size > self.max_bytes:
                    self.full = True
                    logger.warning("request log %s reached its cap (%d MB): no more requests are logged",
                                   self.path, self.max_bytes // (1024 * 1024))
                    return False
                try:
                    for r in records:
                        self._writer.write(r)
                    self._writer.flush()
                except Exception:
                    self._stop_after_failure()
                    raise
                self.written_bytes += size
                self.requests += 1
                self.examples += len(records)
                return True
        except Exception:  # noqa: BLE001 - the request was answered; its log entry is what failed
            logger.exception("could not log a request to %s", self.path)
            return False

    def _stop_after_failure(self) -> None:
        self.full = True
        logger.error("request log %s stopped after a failed write", self.path)

    def close(self) -> None:
        with self._lock:
            self._writer.close()
            self.full = True


def _rows(value: np.ndarray, n: int):
    """A per-row value of an input, broadcasting a single one (``text: [""]`` for a batch)."""
    flat = np.asarray(value).reshape(-1)
    return [flat[0] if len(flat) == 1 else flat[i] for i in range(n)]


def _examples(version: int, signature: str, inputs: Dict[str, np.ndarray], outputs: Dict[str, np.ndarray]):
    import tensorflow as tf

    labels = np.asarray(outputs.get(contract.LABEL, [])).reshape(-1)
    scores = np.asarray(outputs.get(contract.SCORE, [])).reshape(-1)
    n = len(labels)
    rows = [dict() for _ in range(n)]
    if contract.EXAMPLES in inputs:  # serving_examples: the features the model reads, as ingestion wrote them
        for row, serialized in zip(rows, _rows(inputs[contract.EXAMPLES], n)):
            parsed = tf.train.Example.FromString(_as_bytes(serialized)).features.feature
            for name in (contract.IMAGE_FEATURE, *contract.TEXT_FEATURES, *ORIGINAL_FEATURES):
                if name in parsed:
                    row[name] = parsed[name]
    else:  # only the inputs the request had: a text-only model's requests carry no picture
        if contract.IMAGES in inputs:
            for row, image in zip(rows, _rows(inputs[contract.IMAGES], n)):
                row[contract.IMAGE_FEATURE] = _as_bytes(image)
        if contract.TEXT in inputs:
            for row, text in zip(rows, _rows(inputs[contract.TEXT], n)):
                row[TEXT_INPUT_FEATURE] = _as_bytes(text)
    request_id, now_ms = uuid.uuid4().hex, int(time.time() * 1000)
    for i, row in enumerate(rows):
        label = labels[i]
        feature = {name: value if isinstance(value, tf.train.Feature) else _bytes(value) for name, value in row.items()}
        feature.update(
            request_id=_bytes(request_id.encode()), signature=_bytes(signature.encode()),
            predicted_label=_bytes(label if isinstance(label, bytes) else str(label).encode()),
            time_ms=tf.train.Feature(int64_list=tf.train.Int64List(value=[now_ms])),
            model_version=tf.train.Feature(int64_list=tf.train.Int64List(value=[int(version)])),
            score=tf.train.Feature(float_list=tf.train.FloatList(value=[float(scores[i]) if len(scores) > i else 0.0])),
        )
        yield tf.train.Example(features=tf.train.Features(feature=feature))


def _as_bytes(value) -> bytes:
    """A string input's value as bytes (the protocols give bytes; a str is UTF-8 encoded)."""
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _bytes(value: bytes):
    import tensorflow as tf

    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
