"""One training run, from TFRecords to an exported SavedModel; knows nothing of TFX.

``fit_and_export`` builds the frozen backbone, caches its features for the train and eval splits
(augmented views for the train split when augmentation is on), trains the head, and exports the
full image-bytes-to-probabilities model. ``run_fn`` (TFX) is a thin adapter over it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from placedemarche.pipeline.trainer import backbones, export as export_lib, model as model_lib, train as train_lib

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSpec:
    """What one Trainer run needs (the model and training sections of the pipeline config)."""

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

    @classmethod
    def from_dicts(cls, model: Dict, training: Dict) -> "TrainSpec":
        merged = {**model, **training}
        if model.get("epochs") is not None:  # the model's own override
            merged["epochs"] = model["epochs"]
        return cls(**{k: merged[k] for k in cls.__dataclass_fields__})


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


def fit_and_export(
    spec: TrainSpec,
    train_files: Sequence[str],
    eval_files: Sequence[str],
    serving_model_dir: str,
    model_run_dir: str,
    vocabulary: Optional[Sequence[str]] = None,
) -> Dict[str, object]:
    """Trains the head on cached features and exports the full model.

    Args:
      spec: the backbone and recipe.
      train_files, eval_files: GZIP TFRecord file patterns of the train and eval splits.
      serving_model_dir: where the SavedModel goes (the Trainer's ``model`` artifact).
      model_run_dir: where ``history.json``, ``history.png`` and the best-epoch checkpoint go.
      vocabulary: the labels in output order (the schema's label domain); None: the sorted labels
        of the train split.

    Returns:
      The metadata written next to the model (also in ``assets.extra/metadata.json``).

    Raises:
      backbones.WeightsUnavailable: ImageNet weights are missing and random ones are not allowed.
      ValueError: an eval label is not in the vocabulary, or the train split is empty.
    """
    timings: Dict[str, float] = {}
    start = time.perf_counter()
    # Seeds Python, NumPy and TF: random backbone weights, augmentation and shuffling repeat.
    keras.utils.set_random_seed(spec.seed)
    if spec.mixed_precision and tf.config.list_logical_devices("GPU"):
        keras.mixed_precision.set_global_policy("mixed_float16")
    train_images, train_labels = train_lib.read_split(train_files)
    eval_images, eval_labels = train_lib.read_split(eval_files)
    if not train_images:
        raise ValueError("the train split is empty: add products or lower data.test_fraction")
    if not eval_images:
        raise ValueError(
            "the eval split is empty: early stopping needs validation data; raise "
            "data.eval_fraction or add products"
        )
    labels = list(vocabulary) if vocabulary else sorted(set(train_labels))
    timings["read_seconds"] = time.perf_counter() - start

    strategy = distribution_strategy()
    with strategy.scope():
        extractor, weights_source = backbones.build(
            spec.backbone, spec.image_size, spec.weights, spec.allow_random_weights
        )
    t = time.perf_counter()
    views = spec.augmented_views if spec.augmentation else 1
    plain = train_lib.feature_step(extractor, spec.image_size)
    augmented = (
        train_lib.feature_step(extractor, spec.image_size, model_lib.build_augmenter(spec.seed))
        if views > 1 else None
    )
    train_x = np.concatenate([
        train_lib.extract_features(
            plain if v == 0 else augmented, train_images, spec.image_size, spec.batch_size,
            description=f"{spec.backbone} train features (view {v + 1}/{views})",
        )
        for v in range(views)  # view 0 is the plain picture; the others are augmented
    ])
    train_y = np.concatenate([train_lib.one_hot(train_labels, labels)] * views)
    eval_x = train_lib.extract_features(
        plain, eval_images, spec.image_size, spec.batch_size, description=f"{spec.backbone} eval features"
    )
    eval_y = train_lib.one_hot(eval_labels, labels)
    timings["feature_seconds"] = time.perf_counter() - t
    timings["feature_images"] = float(len(train_images) * views + len(eval_images))

    with strategy.scope():
        head = model_lib.build_head(
            int(extractor.output_shape[-1]), len(labels), spec.dense_units, spec.dropout, spec.seed,
            train_features=train_x,
        )
    os.makedirs(model_run_dir, exist_ok=True)
    result = train_lib.train_head(
        head, train_x, train_y, eval_x, eval_y, spec.epochs, spec.batch_size, spec.optimizer,
        spec.learning_rate, spec.early_stopping_patience,
        os.path.join(model_run_dir, "best_epoch.weights.h5"), spec.seed,
    )
    timings["head_seconds"] = result.seconds_per_epoch * len(result.history.get("loss", []))
    result.timings = timings

    metadata: Dict[str, object] = {
        "backbone": spec.backbone,
        "image_size": spec.image_size,
        "weights": weights_source,
        "augmentation": spec.augmentation,
        "augmented_views": views,
        "data_fingerprint": data_fingerprint(list(train_files) + list(eval_files)),
        "train_examples": len(train_images),
        "train_feature_rows": int(train_x.shape[0]),
        "eval_examples": len(eval_images),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history.get("loss", [])),
        "val_accuracy": result.history["val_accuracy"][result.best_epoch - 1] if result.best_epoch else None,
        "recipe": asdict(spec),
    }
    t = time.perf_counter()
    try:
        classifier = export_lib.ImageClassifier(extractor, head, labels, spec.image_size)
        export_lib.export(classifier, serving_model_dir, metadata)
        timings["export_seconds"] = time.perf_counter() - t
        timings["total_seconds"] = time.perf_counter() - start
    finally:  # a failed export still leaves the training curves
        train_lib.save_history(result, model_run_dir)
    logger.info("trained %s: best epoch %s, val accuracy %s; %s", spec.backbone, result.best_epoch,
                metadata["val_accuracy"], {k: round(v, 2) for k, v in timings.items()})
    return metadata
