"""The exported SavedModel: raw image bytes in, per-class probabilities out.

Decoding, resizing and the backbone's own preprocessing are inside the graph, so TF Serving receives
exactly what a seller uploads. Signatures:

- ``serving_default``: ``images`` (a batch of encoded image bytes) → ``probabilities``
  ``[batch, classes]``, ``label`` (top label), ``score`` (its probability), and ``scores`` /
  ``classes`` (the probabilities again and the label vocabulary per row: TF Serving's classification
  output names, from which TFMA maps string labels to class ids);
- ``serving_examples``: ``examples`` (serialized ``tf.Example`` with ``image_bytes``) → the same, for
  the Evaluator and TF Serving warm-up requests;
- ``serving_pixels``: ``pixels`` (decoded pictures, float ``[batch, size, size, 3]`` in 0..255) →
  ``probabilities``: the model after decoding, which SHAP explanations perturb.

``assets.extra/labels.txt`` (the vocabulary, one per line, in output order) and
``assets.extra/metadata.json`` (backbone, image size, weights source, data fingerprint, ...) travel
with the model.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Sequence

import keras
import tensorflow as tf

from pipeline.trainer import model as model_lib

SERVING_DEFAULT = "serving_default"
SERVING_EXAMPLES = "serving_examples"
SERVING_PIXELS = "serving_pixels"
LABELS_FILE = "labels.txt"
METADATA_FILE = "metadata.json"


class ImageClassifier(tf.Module):
    """Backbone features + head over decoded pictures; callable in memory and exportable."""

    def __init__(self, extractor: keras.Model, head: keras.Model, labels: Sequence[str], image_size: int):
        super().__init__(name="image_classifier")
        self.extractor = extractor
        self.head = head
        self.image_size = image_size
        self.labels = tf.Variable(list(labels), dtype=tf.string, trainable=False, name="labels")

    def _probabilities(self, pixels: tf.Tensor) -> tf.Tensor:
        return tf.cast(self.head(self.extractor(pixels, training=False), training=False), tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="pixels")])
    def classify_pixels(self, pixels: tf.Tensor) -> Dict[str, tf.Tensor]:
        """Decoded pictures, ``[batch, image_size, image_size, 3]`` in 0..255 → probabilities.

        Everything after decoding, the backbone's own preprocessing included: what SHAP's image
        masker perturbs, so the explanation is of the served model.
        """
        return {"probabilities": self._probabilities(pixels)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def classify_images(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
        pixels = model_lib.decode_batch(images, self.image_size)
        probabilities = self._probabilities(pixels)
        top = tf.argmax(probabilities, axis=-1)
        return {
            "probabilities": probabilities,
            "label": tf.gather(self.labels, top),
            "score": tf.reduce_max(probabilities, axis=-1),
            # TF Serving's classification names: TFMA reads the label vocabulary from ``classes``
            # next to ``scores``, so string labels in the examples need no mapping.
            "scores": probabilities,
            "classes": tf.tile(self.labels[tf.newaxis, :], [tf.shape(images)[0], 1]),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def classify_examples(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(examples, {"image_bytes": tf.io.FixedLenFeature([], tf.string)})
        return self.classify_images(parsed["image_bytes"])


def export(classifier: ImageClassifier, export_dir: str, metadata: Dict[str, object]) -> str:
    """Writes the SavedModel with both signatures and its assets; returns ``export_dir``."""
    tf.saved_model.save(
        classifier,
        export_dir,
        signatures={
            SERVING_DEFAULT: classifier.classify_images,
            SERVING_EXAMPLES: classifier.classify_examples,
            SERVING_PIXELS: classifier.classify_pixels,
        },
    )
    extra = os.path.join(export_dir, "assets.extra")
    tf.io.gfile.makedirs(extra)
    labels = [l.decode("utf-8") for l in classifier.labels.numpy()]
    with tf.io.gfile.GFile(os.path.join(extra, LABELS_FILE), "w") as f:
        f.write("".join(f"{l}\n" for l in labels))
    with tf.io.gfile.GFile(os.path.join(extra, METADATA_FILE), "w") as f:
        f.write(json.dumps({**metadata, "labels": labels}, indent=2))
    return export_dir


def read_metadata(export_dir: str) -> Dict[str, object]:
    with tf.io.gfile.GFile(os.path.join(export_dir, "assets.extra", METADATA_FILE)) as f:
        return json.loads(f.read())
