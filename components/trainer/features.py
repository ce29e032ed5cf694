"""A frozen backbone's features of the train and eval pictures, computed once and shared.

The expensive thing in training is the backbone's forward pass over every picture; the heads train
on its output in seconds. So the features are computed once per backbone (and augmentation
setting) per data version, by the ``BackboneFeatures`` component, and every Trainer whose model
uses that backbone reads them (``b7_image`` and ``b7_text`` share EfficientNet-B7's); TFX's cache
reuses them across runs while the examples and the settings do not change.

A features folder holds, per split, ``<split>.npy`` (float32 ``[views * n, dim]``, view-major: the
plain pictures first, then each augmented view) and ``<split>.ids.json`` (the ``uniq_id`` of each
of the ``n`` pictures, in row order), plus ``features.json`` (:class:`FeatureInfo`: backbone, size,
weights source and fingerprint, views, seed, timings).

The Trainer rebuilds the same backbone to export the served model and checks that its weights'
fingerprint is the one the features were computed with, so a model is never exported with other
weights than those its head was trained on.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from placedemarche.components.trainer import backbones, model as model_lib, train as train_lib

logger = logging.getLogger(__name__)

INFO_FILE = "features.json"
SPLITS: Tuple[str, ...] = ("train", "eval")


@dataclass(frozen=True)
class FeatureSpec:
    """Which backbone, how its input is prepared, and how many views of each training picture."""

    backbone: str
    weights: str
    image_size: int
    views: int  # 1: the plain pictures; n > 1: plus n - 1 augmented views of each training picture
    seed: int
    allow_random_weights: bool = False
    batch_size: int = 32
    compute_dtype: str = "float32"  # resolved (``precision.resolve``): float32 or bfloat16

    def __post_init__(self):
        if self.views < 1:
            raise ValueError(f"views must be >= 1, got {self.views}")


@dataclass
class FeatureInfo:
    """What ``features.json`` records."""

    backbone: str
    image_size: int
    views: int
    seed: int
    weights: str  # what was loaded, e.g. "imagenet (~/.keras/models/...)" or "none (random)"
    weights_fingerprint: str
    dim: int
    rows: Dict[str, int] = field(default_factory=dict)  # per split: pictures (not views)
    timings: Dict[str, float] = field(default_factory=dict)
    compute_dtype: str = "float32"  # the backbone's compute when the features were made
    compute_dtype_reason: str = ""  # what ``auto`` found, or "as configured"


@dataclass
class SplitFeatures:
    """One split's features: ``x`` ``[views * n, dim]`` (view-major) and the ``n`` ids in row order."""

    x: np.ndarray
    ids: List[str]
    views: int

    def view(self, v: int) -> np.ndarray:
        n = len(self.ids)
        return self.x[v * n:(v + 1) * n]


_BUILT: "collections.OrderedDict[Tuple, Tuple[keras.Model, str]]" = collections.OrderedDict()
_BUILT_KEEP = 2  # backbones kept per process (EfficientNet-B7 and VGG19: about 340 MB)


def build_backbone(spec: FeatureSpec) -> Tuple[keras.Model, str]:
    """The frozen backbone, seeded so that random weights are the same in every process.

    Within one process (the local runner runs every component in the CLI's process) the last
    backbones built are reused: the features step and each Trainer on that backbone would otherwise
    build the same frozen network again (3.5 s for EfficientNet-B7). The Trainer still checks the
    weights' fingerprint against the features'.
    """
    key = (spec.backbone, spec.weights, spec.image_size, spec.seed, spec.allow_random_weights, spec.compute_dtype)
    keras.utils.set_random_seed(spec.seed)
    if key in _BUILT:
        _BUILT.move_to_end(key)
        return _BUILT[key]
    built = backbones.build(spec.backbone, spec.image_size, spec.weights, spec.allow_random_weights, spec.compute_dtype)
    _BUILT[key] = built
    while len(_BUILT) > _BUILT_KEEP:
        _BUILT.popitem(last=False)
    return built


def weights_fingerprint(model: keras.Model, stride: int = 61) -> str:
    """A digest of every weight's shape and of every ``stride``-th value, in order: equal digests mean
    the same backbone (another weights file or another random seed changes every value, so a sample
    tells them apart at a fraction of the cost of hashing EfficientNet-B7's 260 MB).

    Names are left out: Keras numbers layers per process (``conv2d_3``), so the same backbone built
    twice in one process has other names but the same weights.
    """
    digest = hashlib.sha256()
    for variable in model.weights:
        value = keras.ops.convert_to_numpy(variable.value)
        digest.update(f"{value.shape}:{value.dtype}\n".encode())
        digest.update(np.ascontiguousarray(value.reshape(-1)[::stride]).tobytes())
    return digest.hexdigest()


def compute(
    spec: FeatureSpec,
    images: Dict[str, Tuple[List[str], List[bytes]]],
    out_dir: str,
    dtype_reason: str = "",
) -> FeatureInfo:
    """Computes and writes the features of each split's pictures.

    Args:
      spec: the backbone and its settings.
      images: split name → ``(uniq_ids, encoded pictures)``; augmented views are computed for the
        ``train`` split only (evaluation always sees the plain picture).
      out_dir: the features folder (created).
      dtype_reason: why the backbone computes in ``spec.compute_dtype`` (recorded).

    Returns:
      What was written to ``features.json``.

    Raises:
      backbones.WeightsUnavailable: ImageNet weights are missing and random ones are not allowed.
      ValueError: a split has no pictures.
    """
    start = time.perf_counter()
    extractor, source = build_backbone(spec)
    fingerprint = weights_fingerprint(extractor)
    plain = train_lib.feature_step(extractor, spec.image_size)
    augmented = (train_lib.feature_step(extractor, spec.image_size, model_lib.build_augmenter(spec.seed))
                 if spec.views > 1 else None)
    info = FeatureInfo(spec.backbone, spec.image_size, spec.views, spec.seed, source, fingerprint,
                       int(extractor.output_shape[-1]))
    info.compute_dtype, info.compute_dtype_reason = spec.compute_dtype, dtype_reason
    tf.io.gfile.makedirs(out_dir)
    computed = 0
    t = time.perf_counter()
    for split, (ids, pictures) in images.items():
        views = spec.views if split == "train" else 1
        blocks = [
            train_lib.extract_features(
                plain if v == 0 else augmented, pictures, spec.image_size, spec.batch_size,
                description=f"{spec.backbone} {split} features" + (f" (view {v + 1}/{views})" if views > 1 else ""),
            )
            for v in range(views)
        ]
        save_split(out_dir, split, SplitFeatures(np.concatenate(blocks), list(ids), views))
        info.rows[split] = len(ids)
        computed += len(ids) * views
    seconds = time.perf_counter() - t
    info.timings = {"build_seconds": round(t - start, 3), "feature_seconds": round(seconds, 3),
                    "backbone_passes": float(computed),
                    "pictures_per_second": round(computed / seconds, 3) if seconds else 0.0}
    with tf.io.gfile.GFile(os.path.join(out_dir, INFO_FILE), "w") as f:
        f.write(json.dumps(asdict(info), indent=2))
    logger.info("%s features (%s): %s pictures in %.1f s (%.2f per second)", spec.backbone, spec.compute_dtype,
                info.rows, seconds, info.timings["pictures_per_second"])
    return info


def save_split(out_dir: str, split: str, features: SplitFeatures) -> None:
    with tf.io.gfile.GFile(os.path.join(out_dir, f"{split}.npy"), "wb") as f:
        np.save(f, features.x.astype(np.float32), allow_pickle=False)
    with tf.io.gfile.GFile(os.path.join(out_dir, f"{split}.ids.json"), "w") as f:
        f.write(json.dumps({"ids": features.ids, "views": features.views}))


def read_info(features_dir: str) -> FeatureInfo:
    with tf.io.gfile.GFile(os.path.join(features_dir, INFO_FILE)) as f:
        return FeatureInfo(**json.loads(f.read()))


def load_split(features_dir: str, split: str) -> SplitFeatures:
    """One split's features as written by :func:`compute`.

    Raises:
      FileNotFoundError: the folder holds no features of ``split``.
    """
    path = os.path.join(features_dir, f"{split}.npy")
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"no {split} features in {features_dir}: was it written by BackboneFeatures?")
    with tf.io.gfile.GFile(path, "rb") as f:
        x = np.load(f, allow_pickle=False)
    with tf.io.gfile.GFile(os.path.join(features_dir, f"{split}.ids.json")) as f:
        meta = json.loads(f.read())
    if x.shape[0] != len(meta["ids"]) * meta["views"]:
        raise ValueError(f"{path}: {x.shape[0]} rows for {len(meta['ids'])} pictures x {meta['views']} views")
    return SplitFeatures(x, meta["ids"], meta["views"])


def align(features: SplitFeatures, ids: Sequence[str]) -> np.ndarray:
    """The rows of ``features`` in the order of ``ids`` (every view, view-major).

    Raises:
      ValueError: an id has no features (the features were computed from other examples).
    """
    position = {uid: i for i, uid in enumerate(features.ids)}
    missing = [uid for uid in ids if uid not in position]
    if missing:
        raise ValueError(f"{len(missing)} examples have no backbone features (first: {missing[:3]}): the features "
                         "were computed from other examples")
    order = np.array([position[uid] for uid in ids], dtype=np.int64)
    n = len(features.ids)
    return np.concatenate([features.x[v * n + order] for v in range(features.views)])


def read_pictures(file_patterns: Sequence[str]) -> Tuple[List[str], List[bytes]]:
    """``(uniq_ids, encoded pictures)`` of the GZIP TFRecords matching ``file_patterns``."""
    examples = train_lib.read_examples(file_patterns, text_columns=())
    return examples.ids, examples.images


def check_weights(features_dir: str, extractor: keras.Model) -> Optional[str]:
    """None when ``extractor`` has the weights the features were computed with, else why not."""
    info = read_info(features_dir)
    fingerprint = weights_fingerprint(extractor)
    if fingerprint != info.weights_fingerprint:
        return (f"the backbone rebuilt for export ({info.backbone}, weights {info.weights}) differs from the one "
                f"the features in {features_dir} were computed with (fingerprint {fingerprint[:12]} vs "
                f"{info.weights_fingerprint[:12]}): the weights file changed between the two steps")
    return None
