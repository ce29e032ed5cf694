"""One training run, from TFRecords (and cached backbone features) to an exported SavedModel.

Knows nothing of TFX: the ``HeadTrainer`` component's executor is a thin adapter over
:func:`fit_and_export`.

For a candidate that reads pictures, the frozen backbone's features come from the
``BackboneFeatures`` artifact shared by every candidate on that backbone (or, without one, are
computed here); the proof of concept's head is trained on them. For a candidate that reads text, a
TF-IDF vocabulary is learnt from the train split's texts and a linear text classifier is trained on
it. With both, the two are fused with weights chosen on the eval split (``fusion``). The exported
model holds the backbone, the heads and the text pipeline (``export``).
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from placedemarche.components.trainer import export as export_lib
from placedemarche.components.trainer import features as features_lib
from placedemarche.components.trainer import fusion as fusion_lib
from placedemarche.components.trainer import model as model_lib
from placedemarche.components.trainer import precision
from placedemarche.components.trainer import text as text_lib
from placedemarche.components.trainer import train as train_lib

logger = logging.getLogger(__name__)

NO_BACKBONE = "none"


@dataclass(frozen=True)
class TrainSpec:
    """What one Trainer run needs (a candidate's or the baseline's section, and the training section)."""

    backbone: str
    weights: str
    image_size: int
    dense_units: int
    dropout: float
    augmentation: bool
    augmented_views: int
    epochs: int
    batch_size: int
    optimizer: str
    learning_rate: float
    early_stopping_patience: int
    allow_random_weights: bool
    mixed_precision: bool
    seed: int
    name: str = ""
    text_columns: Tuple[str, ...] = ()
    text_word_ngrams: Tuple[int, ...] = (1, 2)
    text_char_ngrams: Tuple[int, ...] = (3, 5)
    text_max_words: int = 20000
    text_max_chars: int = 30000
    text_min_df: int = 2
    text_dropout: float = 0.5
    text_refit: bool = True  # the exported text classifier is trained again on train + eval (fit_classifiers)
    max_image_pixels: int = 60_000_000  # data.max_image_pixels: the served model refuses larger pictures
    compute_dtype: str = "float32"  # training.compute_dtype: the features' backbone (float32 / bfloat16 / auto)
    serving_dtype: str = "float32"  # serving.compute_dtype: the exported backbone (float32 / bfloat16 / auto)

    @classmethod
    def from_dicts(cls, model: Dict, training: Dict) -> "TrainSpec":
        merged = {**training, **{k: v for k, v in model.items() if k != "epochs"}}
        if model.get("epochs") is not None:  # the model's own override
            merged["epochs"] = model["epochs"]
        fields = cls.__dataclass_fields__
        values = {k: merged[k] for k in fields if k in merged}
        for key in ("text_columns", "text_word_ngrams", "text_char_ngrams"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    @property
    def reads_images(self) -> bool:
        return self.backbone != NO_BACKBONE

    @property
    def reads_text(self) -> bool:
        return bool(self.text_columns)

    @property
    def views(self) -> int:
        return self.augmented_views if self.augmentation else 1

    def feature_spec(self, compute_dtype: str = "float32") -> features_lib.FeatureSpec:
        """The backbone's settings, computing in ``compute_dtype`` (resolved: float32 or bfloat16)."""
        return features_lib.FeatureSpec(self.backbone, self.weights, self.image_size, self.views, self.seed,
                                        self.allow_random_weights, self.batch_size, compute_dtype)

    def text_settings(self) -> text_lib.TextSettings:
        return text_lib.TextSettings(tuple(self.text_word_ngrams), tuple(self.text_char_ngrams), self.text_max_words,
                                     self.text_max_chars, self.text_min_df)


def distribution_strategy() -> tf.distribute.Strategy:
    """MirroredStrategy over every visible GPU when there are several; the default otherwise."""
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        logger.info("training on %d GPUs with MirroredStrategy", len(gpus))
        return tf.distribute.MirroredStrategy()
    logger.info("training on %s", "1 GPU" if gpus else "the CPU")
    return tf.distribute.get_strategy()


def data_fingerprint(file_patterns: Sequence[str]) -> str:
    """A digest of the training data files (names and sizes), recorded in the model's metadata."""
    digest = hashlib.sha256()
    for path in sorted(f for p in file_patterns for f in tf.io.gfile.glob(p)):
        digest.update(f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}:{tf.io.gfile.stat(path).length}\n".encode())
    return digest.hexdigest()


@dataclass
class _Branch:
    """One modality's trained classifier and its eval-split probabilities."""

    result: train_lib.TrainResult
    eval_probabilities: np.ndarray
    extra: Dict[str, object] = field(default_factory=dict)


@dataclass
class TrainingData:
    """What a model's classifiers are fitted on: the train and eval splits, never the test split.

    ``train_x`` / ``eval_x`` are the frozen backbone's features (train: every cached view,
    view-major); None for a text-only model. ``texts`` turns a text setting into TF-IDF rows,
    computed once per setting (a tuning search comes back to the same ones).
    """

    labels: List[str]
    train: train_lib.Examples
    evaluation: train_lib.Examples
    train_y: np.ndarray  # one-hot, one row per train example
    eval_y: np.ndarray
    train_x: Optional[np.ndarray] = None
    eval_x: Optional[np.ndarray] = None
    texts: Optional[text_lib.TextFeatures] = None


def read_training_data(spec: TrainSpec, train_files: Sequence[str], eval_files: Sequence[str],
                       vocabulary: Optional[Sequence[str]] = None) -> TrainingData:
    """The train and eval examples of ``spec`` (ids, labels, pictures, its text columns), labels one-hot.

    Raises:
      ValueError: a split is empty, or an eval label is not in the vocabulary.
    """
    train = train_lib.read_examples(train_files, spec.text_columns)
    evaluation = train_lib.read_examples(eval_files, spec.text_columns)
    if not train.ids:
        raise ValueError("the train split is empty: add products or lower data.test_fraction")
    if not evaluation.ids:
        raise ValueError("the eval split is empty: early stopping needs validation data; raise "
                         "data.eval_fraction or add products")
    labels = list(vocabulary) if vocabulary else sorted(set(train.labels))
    data = TrainingData(labels, train, evaluation, train_lib.one_hot(train.labels, labels),
                        train_lib.one_hot(evaluation.labels, labels))
    if spec.reads_text:
        data.texts = text_lib.TextFeatures(train.text(spec.text_columns), evaluation.text(spec.text_columns))
    return data


def load_features(spec: TrainSpec, data: TrainingData, features_dir: str) -> None:
    """Puts the ``BackboneFeatures`` artifact's train and eval rows into ``data``, in example order.

    Raises:
      ValueError: an example has no features, or the views differ from ``spec``'s.
    """
    data.train_x = features_lib.align(features_lib.load_split(features_dir, "train"), data.train.ids)
    data.eval_x = features_lib.align(features_lib.load_split(features_dir, "eval"), data.evaluation.ids)
    views = features_lib.read_info(features_dir).views
    if views != spec.views:
        raise ValueError(f"the features in {features_dir} have {views} views per training picture; this model "
                         f"needs {spec.views} (augmentation / augmented_views differ)")


@dataclass
class Fitted:
    """A model's trained classifiers (image head, text classifier, fusion) and how they did on eval."""

    labels: List[str]
    image: Optional[_Branch]
    text: Optional[_Branch]
    featurizer: Optional[text_lib.TextFeaturizer]
    fusion: Optional[fusion_lib.Fusion]
    eval_probabilities: np.ndarray
    val_accuracy: float
    val_loss: float  # log loss of ``eval_probabilities``

    def predict(self, image_x: Optional[np.ndarray], texts: Optional[Sequence[str]]) -> np.ndarray:
        """Probabilities of examples from their backbone features and / or texts (as the exported model)."""
        image_p = _predict(self.image.result.head, image_x) if self.image else None
        if not self.text:
            return image_p
        rows = text_lib.featurize(self.featurizer, list(texts))
        text_p = _predict(self.text.result.head, rows)
        if image_p is None:
            return text_p
        return fusion_lib.fuse_numpy(image_p, text_p, rows.max(axis=1) > 0, self.fusion.image_weight,
                                     self.fusion.text_weight)


def _predict(head: keras.Model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """``head``'s probabilities, called eagerly: ``predict`` traces a new function for every new head
    (a tuning search builds dozens), which costs more than these small heads' forward pass."""
    if len(x) == 0:
        return np.zeros((0, int(head.output_shape[-1])), np.float32)
    return np.concatenate([keras.ops.convert_to_numpy(head(x[i:i + batch_size], training=False))
                           for i in range(0, len(x), batch_size)])


def _train(head: keras.Model, train_x, train_y, eval_x, eval_y, spec: TrainSpec, checkpoint: Optional[str],
           epochs: Optional[int], quiet: bool, trial: bool = False) -> train_lib.TrainResult:
    epochs = spec.epochs if epochs is None else epochs
    if trial:
        return train_lib.train_head_fast(head, train_x, train_y, eval_x, eval_y, epochs, spec.batch_size,
                                         spec.optimizer, spec.learning_rate, spec.early_stopping_patience, spec.seed)
    return train_lib.train_head(head, train_x, train_y, eval_x, eval_y, epochs, spec.batch_size, spec.optimizer,
                                spec.learning_rate, spec.early_stopping_patience, checkpoint, spec.seed,
                                log_epochs=not quiet)


# Image heads trained in this process, by everything their training depends on (_image_head_key).
# The local runner runs every Trainer in the CLI's process, and ``b7_text``'s image head is
# ``b7_image``'s: the same recipe on the same shared features. Training is deterministic on the same
# inputs (seeded; tests/test_text_model.py checks the reused head equals one trained again), so the
# second Trainer takes the first one's weights instead of training them again. On Kubeflow each
# Trainer is its own pod and trains its own.
_IMAGE_HEADS: "collections.OrderedDict[str, Tuple[str, List[np.ndarray], train_lib.TrainResult, np.ndarray]]" = \
    collections.OrderedDict()
_IMAGE_HEADS_KEEP = 4


def _image_head_key(spec: TrainSpec, data: TrainingData, train_y: np.ndarray, epochs: Optional[int],
                    strategy: tf.distribute.Strategy) -> str:
    """A digest of what training the image head depends on: its features and labels (values, in
    order), the label vocabulary, the head's recipe and the strategy."""
    digest = hashlib.sha256()
    recipe = (spec.dense_units, spec.dropout, spec.seed, spec.epochs if epochs is None else epochs, spec.batch_size,
              spec.optimizer, spec.learning_rate, spec.early_stopping_patience, spec.views, tuple(data.labels),
              type(strategy).__name__, keras.mixed_precision.global_policy().name)
    digest.update(repr(recipe).encode())
    for array in (data.train_x, train_y, data.eval_x, data.eval_y):
        digest.update(f"{array.shape}:{array.dtype}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _remember_image_head(key: str, name: str, image: _Branch) -> None:
    _IMAGE_HEADS[key] = (name, image.result.head.get_weights(), image.result, image.eval_probabilities)
    while len(_IMAGE_HEADS) > _IMAGE_HEADS_KEEP:
        _IMAGE_HEADS.popitem(last=False)


def _reuse_image_head(key: str, head: keras.Model, checkpoint: Optional[str]) -> _Branch:
    """``head`` with the weights of the image head trained earlier on the same inputs (and its history)."""
    _IMAGE_HEADS.move_to_end(key)
    name, weights, result, eval_probabilities = _IMAGE_HEADS[key]
    head.set_weights(weights)
    if checkpoint:
        head.save_weights(checkpoint)
    logger.info("image head: the same recipe on the same features as %s, trained earlier in this process: "
                "its weights are reused (best epoch %d)", name or "another Trainer", result.best_epoch)
    reused = train_lib.TrainResult(head, result.history, result.best_epoch, result.seconds_per_epoch,
                                   result.stopped_early, dict(result.timings))
    return _Branch(reused, eval_probabilities.copy(), {"reused_from": name})


def _train_text(head: keras.Model, train_x, train_y, eval_x, eval_y, spec: TrainSpec, epochs: Optional[int],
                quiet: bool, checkpoint: Optional[str]) -> train_lib.TrainResult:
    """The text classifier, early-stopped on eval: one compiled function per epoch (``train_head_fast``:
    the same recipe as Keras ``fit``, 3x faster on the wide TF-IDF rows; cross-validated on the real
    catalogue's train + eval, it scores as ``fit`` does: README "Candidates"). The best epoch's weights
    go to ``checkpoint`` once training ends."""
    result = train_lib.train_head_fast(head, train_x, train_y, eval_x, eval_y, spec.epochs if epochs is None else epochs,
                                       spec.batch_size, spec.optimizer, spec.learning_rate,
                                       spec.early_stopping_patience, spec.seed)
    if checkpoint:
        head.save_weights(checkpoint)
    if not quiet and result.history.get("loss"):
        e = result.best_epoch - 1
        logger.info("text classifier: %d epochs, best %d: loss %.4f accuracy %.4f val_loss %.4f val_accuracy %.4f",
                    len(result.history["loss"]), result.best_epoch, result.history["loss"][e],
                    result.history["accuracy"][e], result.history["val_loss"][e], result.history["val_accuracy"][e])
    return result


def _refit_text(text: _Branch, train_t: np.ndarray, eval_t: np.ndarray, data: TrainingData, spec: TrainSpec,
                strategy: tf.distribute.Strategy, vocabulary_size: int) -> Dict[str, object]:
    """Trains the text classifier again on train + eval for the epoch count early stopping chose, and
    puts it in ``text`` in place of the train-only one (whose eval probabilities ``text`` keeps: the
    fusion weights and the reported eval accuracy are held-out figures).

    Cross-validated on the real catalogue's train + eval (never its test split), this gained 0.75
    points of accuracy on average, 0.0 to 1.5 per draw (README "Candidates"): a third more labelled
    listings for a linear model at the text's ceiling. The vocabulary and IDF stay the train split's.
    ``best_epoch_text.weights.h5`` keeps the train-only classifier; the exported model holds this one.
    """
    start = time.perf_counter()
    with strategy.scope():
        head = model_lib.build_text_head(vocabulary_size, len(data.labels), spec.text_dropout, spec.seed)
    epochs = text.result.best_epoch
    train_lib.train_head_fast(head, np.concatenate([train_t, eval_t]), np.concatenate([data.train_y, data.eval_y]),
                              None, None, epochs, spec.batch_size, spec.optimizer, spec.learning_rate,
                              spec.early_stopping_patience, spec.seed)
    text.result.head = head
    return {"epochs": epochs, "examples": int(len(train_t) + len(eval_t)),
            "seconds": round(time.perf_counter() - start, 2)}


def fit_classifiers(spec: TrainSpec, data: TrainingData, run_dir: Optional[str] = None,
                    strategy: Optional[tf.distribute.Strategy] = None, epochs: Optional[int] = None,
                    quiet: bool = False, trial: bool = False, refit_text: bool = False) -> Fitted:
    """Trains ``spec``'s classifiers on ``data`` (train), early-stopped and fused on its eval split.

    Args:
      spec: the recipe (head size, dropout, optimizer, text settings...).
      data: from :func:`read_training_data` (and :func:`load_features` for a model that reads pictures).
      run_dir: where the best-epoch checkpoints go; None keeps them in memory (a tuning trial).
      strategy: the distribution strategy the heads are built under (default: the current one).
      epochs: the most epochs to train (default: ``spec.epochs``; Hyperband gives each trial its own).
      quiet: log no epoch (a tuning trial logs one line of its own).
      trial: train as a tuning trial (``train.train_head_fast``: same recipe, one compiled function
        per epoch, no checkpoint file).
      refit_text: with ``spec.text_refit``, the text classifier is trained again on train + eval for
        the epoch count early stopping chose (:func:`_refit_text`; what the Trainer exports). A tuning
        trial does not: its score is the train-only classifiers' eval accuracy.

    Raises:
      ValueError: as :func:`text.fit_vocabulary` (no usable token).
    """
    strategy = strategy or tf.distribute.get_strategy()
    keras.utils.set_random_seed(spec.seed)
    checkpoint = (lambda name: os.path.join(run_dir, name)) if run_dir else (lambda name: None)
    image = text = None
    featurizer = None
    if spec.reads_images:
        with strategy.scope():
            head = model_lib.build_head(int(data.train_x.shape[1]), len(data.labels), spec.dense_units, spec.dropout,
                                        spec.seed, train_features=data.train_x)
        train_y = np.concatenate([data.train_y] * spec.views)
        key = None if trial else _image_head_key(spec, data, train_y, epochs, strategy)
        if key in _IMAGE_HEADS:
            image = _reuse_image_head(key, head, checkpoint("best_epoch.weights.h5"))
        else:
            result = _train(head, data.train_x, train_y, data.eval_x, data.eval_y, spec,
                            checkpoint("best_epoch.weights.h5"), epochs, quiet, trial)
            image = _Branch(result, _predict(head, data.eval_x) if trial else
                            head.predict(data.eval_x, batch_size=256, verbose=0))
            if key is not None:
                _remember_image_head(key, spec.name, image)
    if spec.reads_text:
        vocab, featurizer, train_t, eval_t = data.texts.get(spec.text_settings())
        with strategy.scope():
            text_head = model_lib.build_text_head(len(vocab), len(data.labels), spec.text_dropout, spec.seed)
        result = _train_text(text_head, train_t, data.train_y, eval_t, data.eval_y, spec, epochs, quiet,
                             None if trial else checkpoint("best_epoch_text.weights.h5"))
        text = _Branch(result, _predict(text_head, eval_t),
                       {"vocabulary_size": len(vocab), "train_texts_without_known_token": int(np.sum(train_t.max(axis=1) == 0)),
                        "eval_texts_without_known_token": int(np.sum(eval_t.max(axis=1) == 0))})
        if refit_text and spec.text_refit and result.best_epoch:
            text.extra["refit"] = _refit_text(text, train_t, eval_t, data, spec, strategy, len(vocab))
    y_eval = data.eval_y.argmax(axis=1)
    fusion = None
    if image and text:
        has_text = eval_t.max(axis=1) > 0
        fusion = fusion_lib.fit(image.eval_probabilities, text.eval_probabilities, has_text, y_eval)
        probabilities = fusion_lib.fuse_numpy(image.eval_probabilities, text.eval_probabilities, has_text,
                                              fusion.image_weight, fusion.text_weight)
    else:
        probabilities = (image or text).eval_probabilities
    if text and "refit" in text.extra:
        # What the exported model does on eval: not a held-out figure (the refit text classifier saw eval).
        seen = _predict(text.result.head, eval_t)
        if image:
            seen = fusion_lib.fuse_numpy(image.eval_probabilities, seen, eval_t.max(axis=1) > 0,
                                         fusion.image_weight, fusion.text_weight)
        text.extra["refit"]["eval_accuracy_not_held_out"] = float(np.mean(seen.argmax(axis=1) == y_eval))
    return Fitted(data.labels, image, text, featurizer, fusion, probabilities,
                  float(np.mean(probabilities.argmax(axis=1) == y_eval)), fusion_lib.log_loss(probabilities, y_eval))


@dataclass
class TestData:
    """The test split as the tuning comparison reads it (after both recipes are trained)."""

    labels: np.ndarray  # class ids
    image_x: Optional[np.ndarray]
    texts: Optional[List[str]]


def read_test_data(spec: TrainSpec, test_files: Sequence[str], features_dir: Optional[str],
               labels: Sequence[str], weights_fingerprint: Optional[str] = None) -> "TestData | str":
    """The test split's labels, features and texts for the tuning comparison, or why there are none."""
    if not test_files:
        return "no test split was given to the Trainer"
    try:
        test = train_lib.read_examples(test_files, spec.text_columns)
    except FileNotFoundError as e:
        return str(e)
    if not test.ids:
        return "the test split is empty"
    image_x = None
    if spec.reads_images:
        if not features_dir:
            return "no test features were given to the Trainer (a TestFeatures node computes them for tuned candidates)"
        recorded = features_lib.read_info(features_dir).weights_fingerprint
        if weights_fingerprint is not None and recorded != weights_fingerprint:
            return (f"the test features in {features_dir} were computed with other backbone weights (fingerprint "
                    f"{recorded[:12]} vs {weights_fingerprint[:12]})")
        try:
            image_x = features_lib.align(features_lib.load_split(features_dir, "test"), test.ids)
        except FileNotFoundError:
            return f"{features_dir} holds no test features"
    # A test label the model does not have (absent from the schema's domain) counts as wrong, as in the gate.
    index = {label: i for i, label in enumerate(labels)}
    texts = test.text(spec.text_columns) if spec.reads_text else None
    return TestData(np.array([index.get(label, -1) for label in test.labels], np.int64), image_x, texts)


def fit_and_export(
    spec: TrainSpec,
    train_files: Sequence[str],
    eval_files: Sequence[str],
    serving_model_dir: str,
    model_run_dir: str,
    vocabulary: Optional[Sequence[str]] = None,
    features_dir: Optional[str] = None,
    tuned: Optional[Dict[str, object]] = None,
    test_files: Sequence[str] = (),
    test_features_dir: Optional[str] = None,
) -> Dict[str, object]:
    """Trains the model's classifiers and exports the full model.

    Args:
      spec: the backbone, text columns and recipe.
      train_files, eval_files: GZIP TFRecord file patterns of the train and eval splits.
      serving_model_dir: where the SavedModel goes (the Trainer's ``model`` artifact).
      model_run_dir: where ``history.json``, ``history.png`` and the best-epoch checkpoints go.
      vocabulary: the labels in output order (the schema's label domain); None: the sorted labels
        of the train split.
      features_dir: the ``BackboneFeatures`` artifact of ``spec``'s backbone; None: computed here.
      tuned: the Tuner's best values (``best_hyperparameters``' ``values``): the model is trained
        with them instead of ``spec``'s, and ``spec``'s own recipe is trained beside it for the
        comparison recorded in the metadata (``tuning``).
      test_files: with ``tuned``, the test split's file patterns, read only after both recipes are
        trained, for the comparison's test accuracy (never for a choice; the gate's figure is TFMA's).
      test_features_dir: with ``tuned``, the test pictures' features (a ``BackboneFeatures`` artifact
        of the test split).

    Returns:
      The metadata written next to the model (also in ``assets.extra/metadata.json``).

    Raises:
      backbones.WeightsUnavailable: ImageNet weights are missing and random ones are not allowed.
      ValueError: an eval label is not in the vocabulary, a split is empty, the features do not
        match the examples or the backbone's weights, a tuned value is not a setting of this model.
    """
    from placedemarche.components.trainer import space as space_lib

    timings: Dict[str, float] = {}
    start = time.perf_counter()
    default_spec = spec
    if tuned is not None:
        spec = space_lib.apply(spec, tuned)
    keras.utils.set_random_seed(spec.seed)
    if spec.mixed_precision and tf.config.list_logical_devices("GPU"):
        keras.mixed_precision.set_global_policy("mixed_float16")
    data = read_training_data(spec, train_files, eval_files, vocabulary)
    timings["read_seconds"] = time.perf_counter() - start
    os.makedirs(model_run_dir, exist_ok=True)
    strategy = distribution_strategy()
    metadata: Dict[str, object] = {
        "candidate": spec.name, "backbone": spec.backbone, "image_size": spec.image_size if spec.reads_images else None,
        "data_fingerprint": data_fingerprint(list(train_files) + list(eval_files)),
        "train_examples": len(data.train.ids), "eval_examples": len(data.evaluation.ids),
    }
    extractor = None
    if spec.reads_images:
        t = time.perf_counter()
        # The backbone inside the exported model computes in the serving dtype: what the gate evaluates,
        # the infra validator loads, SHAP explains and TF Serving runs. Its weights are float32 either way.
        served, served_why = precision.resolve(spec.serving_dtype, "serving.compute_dtype")
        with strategy.scope():
            extractor, weights_source = features_lib.build_backbone(spec.feature_spec(served))
        if features_dir:
            problem = features_lib.check_weights(features_dir, extractor)
            if problem:
                raise ValueError(problem)
            load_features(spec, data, features_dir)
            info = features_lib.read_info(features_dir)
            timings["feature_source"] = features_dir  # type: ignore[assignment]
        else:
            computed = os.path.join(model_run_dir, "features")
            dtype, why = precision.resolve(spec.compute_dtype, "training.compute_dtype")
            info = features_lib.compute(spec.feature_spec(dtype), {"train": (data.train.ids, data.train.images),
                                                                   "eval": (data.evaluation.ids, data.evaluation.images)},
                                        computed, dtype_reason=why)
            load_features(spec, data, computed)
        metadata["compute_dtype"] = {"features": info.compute_dtype, "features_reason": info.compute_dtype_reason,
                                     "served": served, "served_reason": served_why}
        timings["feature_seconds"] = time.perf_counter() - t
        metadata.update(weights=weights_source, augmentation=spec.augmentation, augmented_views=spec.views,
                        train_feature_rows=int(data.train_x.shape[0]))
    t = time.perf_counter()
    fitted = fit_classifiers(spec, data, model_run_dir, strategy, refit_text=True)
    image, text, fusion = fitted.image, fitted.text, fitted.fusion
    timings["fit_seconds"] = time.perf_counter() - t
    if text:
        metadata.update(text_columns=list(spec.text_columns), text=text.extra)
    if fusion:
        metadata["fusion"] = asdict(fusion)
    val_accuracy = fitted.val_accuracy
    y_eval = data.eval_y.argmax(axis=1)
    if tuned is not None:
        t = time.perf_counter()
        same = spec == default_spec  # the Tuner kept the defaults: the model is the default recipe's
        metadata["tuning"] = space_lib.compare(default_spec, spec, tuned, fitted,
                                               fitted if same else fit_classifiers(default_spec, data, None, strategy,
                                                                                   quiet=True, refit_text=True),
                                               read_test_data(spec, test_files, test_features_dir, data.labels,
                                                          info.weights_fingerprint if spec.reads_images else None))
        timings["default_recipe_seconds"] = time.perf_counter() - t
    branches = {name: b for name, b in (("image", image), ("text", text)) if b}
    main = image or text
    metadata.update(
        best_epoch=main.result.best_epoch,
        epochs_run=len(main.result.history.get("loss", [])),
        val_accuracy=val_accuracy,
        # The eval accuracy of each classifier alone (image alone = the answer to a request without text).
        branch_val_accuracy={n: float(np.mean(b.eval_probabilities.argmax(axis=1) == y_eval)) for n, b in branches.items()},
        branch_best_epoch={n: b.result.best_epoch for n, b in branches.items()},
        recipe=asdict(spec),
    )
    timings["head_seconds"] = sum(b.result.seconds_per_epoch * len(b.result.history.get("loss", []))
                                  for b in branches.values() if "reused_from" not in b.extra)
    if image and "reused_from" in image.extra:
        metadata["image_head_reused_from"] = image.extra["reused_from"]
    t = time.perf_counter()
    try:
        classifier = export_lib.Classifier(
            data.labels, spec.image_size, extractor=extractor, image_head=image.result.head if image else None,
            featurizer=fitted.featurizer, text_head=text.result.head if text else None, fusion=fusion,
            text_columns=spec.text_columns, max_image_pixels=spec.max_image_pixels)
        export_lib.export(classifier, serving_model_dir, metadata)
        timings["export_seconds"] = time.perf_counter() - t
        timings["total_seconds"] = time.perf_counter() - start
    finally:  # a failed export still leaves the training curves
        train_lib.save_history({n: b.result for n, b in branches.items()}, model_run_dir, timings)
    logger.info("trained %s (%s%s): val accuracy %.4f; %s", spec.name or spec.backbone, spec.backbone,
                " + text" if text else "", val_accuracy,
                {k: round(v, 2) for k, v in timings.items() if isinstance(v, float)})
    return metadata
