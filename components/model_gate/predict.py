"""Where a Trainer's exported model lives, and its labels in output order."""

from __future__ import annotations

import os
from typing import List

import tensorflow as tf

from placedemarche.pipeline.trainer import export as export_lib


def serving_dir(model_uri: str) -> str:
    """The SavedModel folder of a Trainer's ``model`` artifact (its ``Format-Serving``)."""
    candidate = os.path.join(model_uri, "Format-Serving")
    return candidate if tf.io.gfile.exists(candidate) else model_uri


def read_labels(model_dir: str) -> List[str]:
    with tf.io.gfile.GFile(os.path.join(model_dir, "assets.extra", export_lib.LABELS_FILE)) as f:
        return [line.rstrip("\n") for line in f if line.strip()]
