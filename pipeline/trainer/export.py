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

from placedemarche.pipeline.trainer import model as model_lib

SERVING_DEFAULT = "serving_default"
SERVING_EXAMPLES = "serving_examples"
SERVING_PIXELS = "serving_pixels"
LABELS_FILE = "labels.txt"
METADATA_FILE = "metadata.json"


class _Untracked:
    """A plain holder: what it holds stays out of the SavedModel's object graph."""

    def __init__(self, **objects):
        self.__dict__.update(objects)


class ImageClassifier(tf.Module):
    """Backbone features + head over decoded pictures; callable in memory and exportable.

    The SavedModel keeps the signatures and the variables, not the Keras models as objects: saved
    as objects, Keras 3 traces a ``serving_default`` function of its own for each functional model
    (two more copies of the backbone's graph), which made an EfficientNet-B7 export slower, its
    graph bigger and every load of it slower, for functions that nothing calls.
    """

    def __init__(self, extractor: keras.Model, head: keras.Model, labels: Sequence[str], image_size: int):
        super().__init__(name="image_classifier")
        self._keras = _Untracked(extractor=extractor, head=head)
        self.model_variables = list(extractor.variables) + list(head.variables)
        self.image_size = image_size
        self.labels = tf.Variable(list(labels), dtype=tf.string, trainable=False, name="labels")

    @property
    def extractor(self) -> keras.Model:
        return self._keras.extractor

    @property
    def head(self) -> keras.Model:
        return self._keras.head

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
        # Through ``classify_pixels`` (its input signature matches), not ``_probabilities``: the
        # backbone is traced once and the SavedModel holds one copy of its graph for all three
        # signatures (tests/test_trainer.py counts the convolutions in it).
        probabilities = self.classify_pixels(pixels)["probabilities"]
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
    """Writes the SavedModel with its three signatures and its assets; returns ``export_dir``.

    Custom gradients are not saved (``experimental_custom_gradients=False``): nothing
    differentiates the exported model (TF Serving, TFMA and SHAP's Partition explainer only call
    it), and saving them traces a gradient function (``internal_grad_fn``) for each swish activation
    of the EfficientNets: under cProfile, 102 of the 148 seconds of a B7 export on 2 cores.
    """
    tf.saved_model.save(
        classifier,
        export_dir,
        signatures={
            SERVING_DEFAULT: classifier.classify_images,
            SERVING_EXAMPLES: classifier.classify_examples,
            SERVING_PIXELS: classifier.classify_pixels,
        },
        options=tf.saved_model.SaveOptions(experimental_custom_gradients=False),
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
