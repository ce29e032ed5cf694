"""The exported SavedModel: raw image bytes (and raw text) in, per-class probabilities out.

Decoding, resizing, the backbone's own preprocessing and, for a candidate that reads text, the whole
text pipeline (normalisation, n-grams, vocabulary, TF-IDF) are inside the graph, so TF Serving
receives exactly what a seller uploads and nothing outside the model must be kept in sync with it.
The signatures are the contract in ``serving/model_contract.py``.

A model that reads pictures and text fuses one classifier per modality (``fusion``): the image head
on the backbone's features, and a linear text classifier on the TF-IDF vector. A request without
text (empty, punctuation only, or words the model never saw in training) gets the image head's own
answer, exactly.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Dict, Optional, Sequence

import keras
import tensorflow as tf

from placedemarche.components.trainer import fusion as fusion_lib
from placedemarche.components.trainer import model as model_lib
from placedemarche.components.trainer import text as text_lib
from placedemarche.serving import model_contract as contract

# Kept for readers that imported them from here.
SERVING_DEFAULT = contract.SERVING_DEFAULT
SERVING_EXAMPLES = contract.SERVING_EXAMPLES
SERVING_PIXELS = contract.SERVING_PIXELS
LABELS_FILE = contract.LABELS_FILE
METADATA_FILE = contract.METADATA_FILE


class _Untracked:
    """A plain holder: what it holds stays out of the SavedModel's object graph."""

    def __init__(self, **objects):
        self.__dict__.update(objects)


def _broadcast_text(text: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
    """One text for the whole batch (the signature's default ``[""]``, or a client's single text), or one per row."""
    n = tf.shape(text)[0]
    tf.debugging.assert_equal(
        tf.logical_or(tf.equal(n, 1), tf.equal(n, batch)), True,
        message="'text' must hold one string per picture (or a single string for all of them)")
    return tf.cond(tf.logical_and(tf.equal(n, 1), tf.not_equal(batch, 1)),
                   lambda: tf.repeat(text, batch), lambda: text)


class Classifier(tf.Module):
    """Pictures and / or text → probabilities; callable in memory and exportable.

    Args:
      labels: the classes in output order.
      image_size: the backbone's square input (pictures are decoded and resized to it).
      extractor, image_head: the frozen backbone (pixels → features) and the head (features →
        probabilities); None for a text-only model.
      featurizer, text_head: the TF-IDF featurizer and the text classifier (TF-IDF → probabilities);
        None for an image-only model.
      fusion: how the two are combined (:class:`fusion.Fusion`), for a model with both.
      text_columns: the tf.Example features joined into the text (``serving_examples``).
      max_image_pixels: pictures whose decoded size would exceed it are refused (``model.decode_and_resize``).

    The SavedModel keeps the signatures, the variables and the text lookup table, not the Keras
    models as objects: saved as objects, Keras 3 traces a ``serving_default`` of its own for each
    functional model (more copies of the backbone's graph), which made exports and loads slower.
    """

    def __init__(self, labels: Sequence[str], image_size: int = 0, extractor: Optional[keras.Model] = None,
                 image_head: Optional[keras.Model] = None, featurizer: Optional[text_lib.TextFeaturizer] = None,
                 text_head: Optional[keras.Model] = None, fusion: Optional[fusion_lib.Fusion] = None,
                 text_columns: Sequence[str] = (), max_image_pixels: int = model_lib.DEFAULT_MAX_PIXELS):
        super().__init__(name="classifier")
        if (extractor is None) != (image_head is None) or (featurizer is None) != (text_head is None):
            raise ValueError("give the backbone with its head, and the featurizer with its text classifier")
        if extractor is None and featurizer is None:
            raise ValueError("a classifier needs pictures, text or both")
        if featurizer is not None and not text_columns:
            raise ValueError("a classifier that reads text needs the text columns it reads")
        self._keras = _Untracked(extractor=extractor, image_head=image_head, text_head=text_head)
        self.model_variables = [v for m in (extractor, image_head, text_head) if m is not None for v in m.variables]
        self.featurizer = featurizer  # tracked: its lookup table and IDF weights are saved with the model
        self.image_size = image_size
        self.max_image_pixels = int(max_image_pixels)
        self.text_columns = list(text_columns)
        self.labels = tf.Variable(list(labels), dtype=tf.string, trainable=False, name="labels")
        fusion = fusion or fusion_lib.Fusion()
        self.fusion_weights = tf.Variable([fusion.image_weight, fusion.text_weight], trainable=False,
                                          dtype=tf.float32, name="fusion_weights")
        self._functions = _Untracked(**self._build_functions())

    @property
    def reads_images(self) -> bool:
        return self._keras.extractor is not None

    @property
    def reads_text(self) -> bool:
        return self.featurizer is not None

    @property
    def extractor(self) -> Optional[keras.Model]:
        return self._keras.extractor

    @property
    def head(self) -> Optional[keras.Model]:
        return self._keras.image_head

    # --- the model's parts, as plain graph functions ----------------------------------------------

    def _image_probabilities(self, pixels: tf.Tensor) -> tf.Tensor:
        features = self._keras.extractor(pixels, training=False)
        return tf.cast(self._keras.image_head(features, training=False), tf.float32)

    def _text_probabilities(self, text: tf.Tensor):
        vectors = self.featurizer(text)
        has_text = tf.reduce_max(vectors, axis=1) > 0.0  # a known token: else the text says nothing
        return tf.cast(self._keras.text_head(vectors, training=False), tf.float32), has_text

    def _fuse(self, image_probabilities: tf.Tensor, text: tf.Tensor) -> tf.Tensor:
        text = _broadcast_text(text, tf.shape(image_probabilities)[0])
        text_probabilities, has_text = self._text_probabilities(text)
        return fusion_lib.fuse(image_probabilities, text_probabilities, has_text, self.fusion_weights)

    def _outputs(self, probabilities: tf.Tensor) -> Dict[str, tf.Tensor]:
        top = tf.argmax(probabilities, axis=-1)
        return {
            contract.PROBABILITIES: probabilities,
            contract.LABEL: tf.gather(self.labels, top),
            contract.SCORE: tf.reduce_max(probabilities, axis=-1),
            # TF Serving's classification names: TFMA reads the label vocabulary from ``classes``
            # next to ``scores``, so string labels in the examples need no mapping.
            contract.SCORES: probabilities,
            contract.CLASSES: tf.tile(self.labels[tf.newaxis, :], [tf.shape(probabilities)[0], 1]),
        }

    def _example_spec(self) -> Dict[str, tf.io.FixedLenFeature]:
        spec = {}
        if self.reads_images:
            spec[contract.IMAGE_FEATURE] = tf.io.FixedLenFeature([], tf.string)
        for column in self.text_columns if self.reads_text else ():
            spec[column] = tf.io.FixedLenFeature([], tf.string, default_value="")
        return spec

    def _joined_text(self, parsed: Dict[str, tf.Tensor]) -> tf.Tensor:
        return tf.strings.strip(tf.strings.reduce_join(
            tf.stack([parsed[c] for c in self.text_columns], axis=1), axis=1, separator=text_lib.TEXT_SEPARATOR))

    def _build_functions(self) -> Dict[str, Callable]:
        """The signature functions for this model's modalities (see ``serving/model_contract.py``).

        Each part of the graph is one ``tf.function`` the others call (the backbone is traced once and
        the SavedModel holds one copy of its graph for every signature).
        """
        size, cap = self.image_size, self.max_image_pixels
        images_spec = tf.TensorSpec([None], tf.string, name=contract.IMAGES)
        text_spec = tf.TensorSpec([None], tf.string, name=contract.TEXT)
        pixels_spec = tf.TensorSpec([None, None, None, 3], tf.float32, name=contract.PIXELS)
        examples_spec = tf.TensorSpec([None], tf.string, name=contract.EXAMPLES)
        no_text = tf.constant([""])  # the SignatureDef's default of 'text': TF Serving may leave it out
        functions: Dict[str, Callable] = {}

        if self.reads_images and not self.reads_text:
            @tf.function(input_signature=[pixels_spec])
            def classify_pixels(pixels):
                return {contract.PROBABILITIES: self._image_probabilities(pixels)}

            @tf.function(input_signature=[images_spec])
            def classify_images(images):
                return self._outputs(classify_pixels(model_lib.decode_batch(images, size, cap))[contract.PROBABILITIES])

            @tf.function(input_signature=[examples_spec])
            def classify_examples(examples):
                parsed = tf.io.parse_example(examples, self._example_spec())
                return classify_images(parsed[contract.IMAGE_FEATURE])

            functions.update({contract.SERVING_PIXELS: classify_pixels})
        elif self.reads_images:
            @tf.function(input_signature=[pixels_spec])
            def image_branch(pixels):
                return {contract.PROBABILITIES: self._image_probabilities(pixels)}

            @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name=contract.IMAGE_PROBABILITIES),
                                          text_spec])
            def fusion(image_probabilities, text=no_text):
                return {contract.PROBABILITIES: self._fuse(image_probabilities, text)}

            @tf.function(input_signature=[pixels_spec, text_spec])
            def classify_pixels(pixels, text=no_text):
                return fusion(image_branch(pixels)[contract.PROBABILITIES], text)

            @tf.function(input_signature=[images_spec, text_spec])
            def classify_images(images, text=no_text):
                pixels = model_lib.decode_batch(images, size, cap)
                return self._outputs(classify_pixels(pixels, text)[contract.PROBABILITIES])

            @tf.function(input_signature=[examples_spec])
            def classify_examples(examples):
                parsed = tf.io.parse_example(examples, self._example_spec())
                return classify_images(parsed[contract.IMAGE_FEATURE], self._joined_text(parsed))

            functions.update({contract.SERVING_PIXELS: classify_pixels, contract.SERVING_IMAGE_BRANCH: image_branch,
                              contract.SERVING_FUSION: fusion})
        else:
            @tf.function(input_signature=[text_spec])
            def classify_images(text):
                probabilities, _ = self._text_probabilities(text)
                return self._outputs(probabilities)

            @tf.function(input_signature=[examples_spec])
            def classify_examples(examples):
                return classify_images(self._joined_text(tf.io.parse_example(examples, self._example_spec())))

        functions.update({contract.SERVING_DEFAULT: classify_images, contract.SERVING_EXAMPLES: classify_examples})
        return functions

    # --- in-memory calls (what the exported signatures compute) ------------------------------------

    def signature_functions(self) -> Dict[str, Callable]:
        return dict(vars(self._functions))

    def classify_images(self, images, text=None) -> Dict[str, tf.Tensor]:
        f = self._functions.__dict__[contract.SERVING_DEFAULT]
        if not self.reads_images:
            return f(tf.constant(text))
        return f(images) if text is None or not self.reads_text else f(images, tf.constant(text))

    def classify_examples(self, examples) -> Dict[str, tf.Tensor]:
        return self._functions.__dict__[contract.SERVING_EXAMPLES](examples)

    def classify_pixels(self, pixels, text=None) -> Dict[str, tf.Tensor]:
        f = self._functions.__dict__[contract.SERVING_PIXELS]
        return f(pixels) if text is None or not self.reads_text else f(pixels, tf.constant(text))


# The image-only classifier of earlier versions (tests and benchmarks build it directly).
def ImageClassifier(extractor: keras.Model, head: keras.Model, labels: Sequence[str], image_size: int) -> Classifier:
    return Classifier(labels, image_size, extractor=extractor, image_head=head)


def export(classifier: Classifier, export_dir: str, metadata: Dict[str, object]) -> str:
    """Writes the SavedModel with its signatures and its assets; returns ``export_dir``.

    Custom gradients are not saved (``experimental_custom_gradients=False``): nothing
    differentiates the exported model (TF Serving, TFMA and SHAP's Partition explainer only call
    it), and saving them traces a gradient function for each swish activation of the EfficientNets
    (most of a B7 export's time when profiled).
    """
    tf.saved_model.save(
        classifier,
        export_dir,
        signatures=classifier.signature_functions(),
        options=tf.saved_model.SaveOptions(experimental_custom_gradients=False),
    )
    extra = os.path.join(export_dir, contract.ASSETS_EXTRA)
    tf.io.gfile.makedirs(extra)
    labels = [l.decode("utf-8") for l in classifier.labels.numpy()]
    with tf.io.gfile.GFile(os.path.join(extra, contract.LABELS_FILE), "w") as f:
        f.write("".join(f"{l}\n" for l in labels))
    with tf.io.gfile.GFile(os.path.join(extra, contract.METADATA_FILE), "w") as f:
        f.write(json.dumps({**metadata, "labels": labels, "text_columns": classifier.text_columns,
                            "max_image_pixels": classifier.max_image_pixels,
                            "signatures": sorted(classifier.signature_functions())}, indent=2))
    return export_dir


def read_metadata(export_dir: str) -> Dict[str, object]:
    return contract.read_metadata(export_dir)
