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

import hashlib
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from placedemarche.components.trainer import export as export_lib
from placedemarche.components.trainer import features as features_lib
from placedemarche.components.trainer import fusion as fusion_lib
from placedemarche.components.trainer import model as model_lib
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
    max_image_pixels: int = 60_000_000  # data.max_image_pixels: the served model refuses larger pictures

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

    def feature_spec(self) -> features_lib.FeatureSpec:
        return features_lib.FeatureSpec(self.backbone, self.weights, self.image_size, self.views, self.seed,
                                        self.allow_random_weights, self.batch_size)

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


def _train(head: keras.Model, train_x, train_y, eval_x, eval_y, spec: TrainSpec, checkpoint: str) -> train_lib.TrainResult:
    return train_lib.train_head(head, train_x, train_y, eval_x, eval_y, spec.epochs, spec.batch_size, spec.optimizer,
                                spec.learning_rate, spec.early_stopping_patience, checkpoint, spec.seed)


def fit_and_export(
    spec: TrainSpec,
    train_files: Sequence[str],
    eval_files: Sequence[str],
    serving_model_dir: str,
    model_run_dir: str,
    vocabulary: Optional[Sequence[str]] = None,
    features_dir: Optional[str] = None,
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

    Returns:
      The metadata written next to the model (also in ``assets.extra/metadata.json``).

    Raises:
      backbones.WeightsUnavailable: ImageNet weights are missing and random ones are not allowed.
      ValueError: an eval label is not in the vocabulary, a split is empty, the features do not
        match the examples or the backbone's weights.
    """
    timings: Dict[str, float] = {}
    start = time.perf_counter()
    keras.utils.set_random_seed(spec.seed)
    if spec.mixed_precision and tf.config.list_logical_devices("GPU"):
        keras.mixed_precision.set_global_policy("mixed_float16")
    train = train_lib.read_examples(train_files, spec.text_columns)
    evaluation = train_lib.read_examples(eval_files, spec.text_columns)
    if not train.ids:
        raise ValueError("the train split is empty: add products or lower data.test_fraction")
    if not evaluation.ids:
        raise ValueError("the eval split is empty: early stopping needs validation data; raise "
                         "data.eval_fraction or add products")
    labels = list(vocabulary) if vocabulary else sorted(set(train.labels))
    train_y1, eval_y = train_lib.one_hot(train.labels, labels), train_lib.one_hot(evaluation.labels, labels)
    timings["read_seconds"] = time.perf_counter() - start
    os.makedirs(model_run_dir, exist_ok=True)
    strategy = distribution_strategy()
    metadata: Dict[str, object] = {
        "candidate": spec.name, "backbone": spec.backbone, "image_size": spec.image_size if spec.reads_images else None,
        "data_fingerprint": data_fingerprint(list(train_files) + list(eval_files)),
        "train_examples": len(train.ids), "eval_examples": len(evaluation.ids),
    }
    image: Optional[_Branch] = None
    text: Optional[_Branch] = None
    extractor = featurizer = None

    if spec.reads_images:
        t = time.perf_counter()
        with strategy.scope():
            extractor, weights_source = features_lib.build_backbone(spec.feature_spec())
        if features_dir:
            problem = features_lib.check_weights(features_dir, extractor)
            if problem:
                raise ValueError(problem)
            train_x = features_lib.align(features_lib.load_split(features_dir, "train"), train.ids)
            eval_x = features_lib.align(features_lib.load_split(features_dir, "eval"), evaluation.ids)
            views = features_lib.read_info(features_dir).views
            if views != spec.views:
                raise ValueError(f"the features in {features_dir} have {views} views per training picture; this model "
                                 f"needs {spec.views} (augmentation / augmented_views differ)")
            timings["feature_source"] = features_dir  # type: ignore[assignment]
        else:
            computed = os.path.join(model_run_dir, "features")
            features_lib.compute(spec.feature_spec(), {"train": (train.ids, train.images),
                                                       "eval": (evaluation.ids, evaluation.images)}, computed)
            train_x = features_lib.load_split(computed, "train").x
            eval_x = features_lib.load_split(computed, "eval").x
        timings["feature_seconds"] = time.perf_counter() - t
        with strategy.scope():
            head = model_lib.build_head(int(extractor.output_shape[-1]), len(labels), spec.dense_units, spec.dropout,
                                        spec.seed, train_features=train_x)
        train_y = np.concatenate([train_y1] * spec.views)
        result = _train(head, train_x, train_y, eval_x, eval_y, spec, os.path.join(model_run_dir, "best_epoch.weights.h5"))
        image = _Branch(result, head.predict(eval_x, batch_size=256, verbose=0))
        metadata.update(weights=weights_source, augmentation=spec.augmentation, augmented_views=spec.views,
                        train_feature_rows=int(train_x.shape[0]))

    if spec.reads_text:
        t = time.perf_counter()
        settings = spec.text_settings()
        vocab = text_lib.fit_vocabulary(train.text(spec.text_columns), settings)
        featurizer = text_lib.TextFeaturizer(vocab, settings)
        train_t = text_lib.featurize(featurizer, train.text(spec.text_columns))
        eval_t = text_lib.featurize(featurizer, evaluation.text(spec.text_columns))
        timings["text_feature_seconds"] = time.perf_counter() - t
        with strategy.scope():
            text_head = model_lib.build_text_head(len(vocab), len(labels), spec.text_dropout, spec.seed)
        result = _train(text_head, train_t, train_y1, eval_t, eval_y, spec,
                        os.path.join(model_run_dir, "best_epoch_text.weights.h5"))
        text = _Branch(result, text_head.predict(eval_t, batch_size=256, verbose=0),
                       {"vocabulary_size": len(vocab), "train_texts_without_known_token": int(np.sum(train_t.max(axis=1) == 0)),
                        "eval_texts_without_known_token": int(np.sum(eval_t.max(axis=1) == 0))})
        metadata.update(text_columns=list(spec.text_columns), text=text.extra)

    y_eval = eval_y.argmax(axis=1)
    fusion = None
    has_text = eval_t.max(axis=1) > 0 if text else None
    if image and text:
        fusion = fusion_lib.fit(image.eval_probabilities, text.eval_probabilities, has_text, y_eval)
        fused = fusion_lib.fuse_numpy(image.eval_probabilities, text.eval_probabilities, has_text,
                                      fusion.image_weight, fusion.text_weight)
        val_accuracy = float(np.mean(fused.argmax(axis=1) == y_eval))
        metadata["fusion"] = asdict(fusion)
    else:
        val_accuracy = float(np.mean((image or text).eval_probabilities.argmax(axis=1) == y_eval))
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
                                  for b in branches.values())
    t = time.perf_counter()
    try:
        classifier = export_lib.Classifier(
            labels, spec.image_size, extractor=extractor, image_head=image.result.head if image else None,
            featurizer=featurizer, text_head=text.result.head if text else None, fusion=fusion,
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
