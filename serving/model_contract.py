"""The exported model's contract: what every reader of a pushed or trained model may rely on.

The Trainers write it (``components.trainer.export``); the Evaluator's config, the gate, the infra
validator, the Pusher, the explainer, ``review``, the runner, the clients and the local server read
it. It lives here, at the bottom of the import graph (``serving`` imports nothing of ``pipeline`` or
``components``), so every layer imports it downward. Plain Python: importing it loads no TensorFlow.

Signatures (inputs → outputs):

- ``serving_default``: ``images`` (``[batch]`` encoded JPEG/PNG/GIF/BMP bytes) and, for a model that
  reads text, ``text`` (``[batch]`` UTF-8 strings; **optional**: its SignatureDef default is
  ``[""]``, and one text is broadcast to the whole batch) → ``probabilities`` ``[batch, classes]``,
  ``label``, ``score``, ``scores``, ``classes`` (TF Serving's classification names). A text-only
  model (no backbone) takes ``text`` alone.
- ``serving_examples``: ``examples`` (serialized ``tf.Example`` with ``image_bytes`` and the text
  columns the model reads, e.g. ``product_name`` and ``description``) → the same outputs (TFMA,
  infra validation, batch jobs).
- ``serving_pixels``: ``pixels`` (decoded pictures, float ``[batch, size, size, 3]`` in 0..255) and,
  with text, ``text`` → ``probabilities`` (what SHAP's image masker perturbs).
- For a model with pictures and text: ``serving_image_branch``: ``pixels`` → ``probabilities`` of the
  image classifier alone; ``serving_fusion``: ``image_probabilities`` and ``text`` → the final
  ``probabilities`` (SHAP explains the words with the picture's branch computed once).

Files: ``assets.extra/labels.txt`` (one label per line, in output order), ``assets.extra/metadata.json``
(backbone, image size, text columns, weights, recipe, ...), and in an infra-validated or pushed copy
``assets.extra/tf_serving_warmup_requests``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

SERVING_DEFAULT = "serving_default"
SERVING_EXAMPLES = "serving_examples"
SERVING_PIXELS = "serving_pixels"
SERVING_IMAGE_BRANCH = "serving_image_branch"
SERVING_FUSION = "serving_fusion"

IMAGES = "images"
TEXT = "text"
EXAMPLES = "examples"
PIXELS = "pixels"
IMAGE_PROBABILITIES = "image_probabilities"

PROBABILITIES = "probabilities"
LABEL = "label"
SCORE = "score"
SCORES = "scores"
CLASSES = "classes"

# tf.Example features the ExampleGen writes and the model reads.
IMAGE_FEATURE = "image_bytes"
LABEL_FEATURE = "label"
ID_FEATURE = "uniq_id"
TEXT_FEATURES = ("product_name", "description", "brand")

ASSETS_EXTRA = "assets.extra"
LABELS_FILE = "labels.txt"
METADATA_FILE = "metadata.json"
WARMUP_FILE = "tf_serving_warmup_requests"
SAVED_MODEL_FILE = "saved_model.pb"
# Written last into a pushed version (under assets.extra/): the version's files are all there. The
# local server and the pipeline load only versions that have it (a copy to an object store is not
# atomic); TF Serving ignores the file.
COMPLETE_MARKER = "push_complete.json"
TRAINER_SERVING_SUBDIR = "Format-Serving"  # where a Trainer's Model artifact keeps the SavedModel


def _open(path: str, mode: str = "r"):
    if "://" in path:  # gs://, s3://: through TensorFlow's filesystems
        import tensorflow as tf

        return tf.io.gfile.GFile(path, mode)
    return open(path, mode, encoding=None if "b" in mode else "utf-8")


def _exists(path: str) -> bool:
    if "://" in path:
        import tensorflow as tf

        return tf.io.gfile.exists(path)
    return os.path.exists(path)


def serving_dir(model_uri: str) -> str:
    """The SavedModel folder of a Trainer's ``model`` artifact (its ``Format-Serving``), or the folder itself."""
    candidate = os.path.join(model_uri, TRAINER_SERVING_SUBDIR)
    return candidate if _exists(candidate) else model_uri


def read_labels(model_dir: str) -> List[str]:
    """The labels in output order (``assets.extra/labels.txt``)."""
    with _open(os.path.join(model_dir, ASSETS_EXTRA, LABELS_FILE)) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def read_metadata(model_dir: str) -> Dict[str, Any]:
    """``assets.extra/metadata.json``: backbone, image size, text columns, weights, recipe, ..."""
    with _open(os.path.join(model_dir, ASSETS_EXTRA, METADATA_FILE)) as f:
        return json.loads(f.read())


def is_complete(version_dir: str) -> bool:
    """Whether a pushed version folder carries the completion marker (and a SavedModel)."""
    return (_exists(os.path.join(version_dir, ASSETS_EXTRA, COMPLETE_MARKER))
            and _exists(os.path.join(version_dir, SAVED_MODEL_FILE)))


def write_complete_marker(version_dir: str, record: Dict[str, Any]) -> None:
    """Marks a staged version as whole (the last file a push writes)."""
    if "://" in version_dir:
        import tensorflow as tf

        tf.io.gfile.makedirs(os.path.join(version_dir, ASSETS_EXTRA))
    else:
        os.makedirs(os.path.join(version_dir, ASSETS_EXTRA), exist_ok=True)
    with _open(os.path.join(version_dir, ASSETS_EXTRA, COMPLETE_MARKER), "w") as f:
        f.write(json.dumps(record, indent=2))


def reads_text(metadata: Dict[str, Any]) -> bool:
    return bool(metadata.get("text_columns"))


def reads_images(metadata: Dict[str, Any]) -> bool:
    return metadata.get("backbone") not in (None, "none")


def signature_defaults(model_dir: str) -> Dict[str, Dict[str, Any]]:
    """Per signature, the inputs that have a default value (``SignatureDef.defaults``) as NumPy arrays:
    what a server uses for an input a request leaves out (``text`` of a model that reads text)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with _open(os.path.join(model_dir, SAVED_MODEL_FILE), "rb") as f:
        saved.ParseFromString(f.read())
    graphs = [g for g in saved.meta_graphs if "serve" in g.meta_info_def.tags] or list(saved.meta_graphs)
    if not graphs:
        return {}
    return {name: {key: tf.make_ndarray(value) for key, value in signature.defaults.items()}
            for name, signature in graphs[0].signature_def.items() if signature.defaults}
