"""Running an exported model over a split's examples (through its tf.Example signature)."""

from __future__ import annotations

import glob
import os
from typing import List, Sequence, Tuple

import numpy as np
import tensorflow as tf

from pipeline.trainer import export as export_lib


def serving_dir(model_uri: str) -> str:
    """The SavedModel folder of a Trainer's ``model`` artifact (its ``Format-Serving``)."""
    candidate = os.path.join(model_uri, "Format-Serving")
    return candidate if tf.io.gfile.exists(candidate) else model_uri


def read_labels(model_dir: str) -> List[str]:
    with tf.io.gfile.GFile(os.path.join(model_dir, "assets.extra", export_lib.LABELS_FILE)) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def predict_examples(
    model_dir: str, file_patterns: Sequence[str], batch_size: int = 32
) -> Tuple[np.ndarray, List[str], List[str]]:
    """Probabilities of every example in the files, with each example's true label and uniq_id.

    The model is called through ``serving_examples``, as TF Serving and the Evaluator call it.
    """
    files = sorted(f for p in file_patterns for f in glob.glob(p))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {list(file_patterns)}")
    signature = tf.saved_model.load(model_dir).signatures[export_lib.SERVING_EXAMPLES]
    spec = {"label": tf.io.FixedLenFeature([], tf.string), "uniq_id": tf.io.FixedLenFeature([], tf.string)}
    probabilities, labels, ids = [], [], []
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(batch_size):
        probabilities.append(signature(examples=batch)["probabilities"].numpy())
        parsed = tf.io.parse_example(batch, spec)
        labels.extend(v.decode("utf-8") for v in parsed["label"].numpy())
        ids.extend(v.decode("utf-8") for v in parsed["uniq_id"].numpy())
    return np.concatenate(probabilities), labels, ids
