"""SHAP explanations of an exported classifier: the proof of concept's Partition explainer, productised.

The picture is decoded and resized exactly as the served model does it (``pipeline.trainer.model``),
then rounded to whole 0..255 levels: SHAP's ``inpaint_*`` maskers inpaint 8-bit pictures, so
rounding first makes "nothing masked" the very picture explained. The model is called through its
``serving_pixels`` signature (everything after decoding, the backbone's own preprocessing
included), so the explanation is of the model that would be served.

Masked pictures are evaluated in batches of ``batch_size``. Inpainting runs in a thread pool
(OpenCV releases the GIL) while the masks of a batch are prepared; ``timings`` reports how the time
splits between masking and the model, to check that inpainting does not dominate.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)

MASKERS = ("inpaint_telea", "inpaint_ns", "blur", "mean")
PIXELS_SIGNATURE = "serving_pixels"


@dataclass
class Explanation:
    """SHAP values of one picture for its top-k classes."""

    pixels: np.ndarray  # [H, W, 3] uint8, the picture explained
    probabilities: np.ndarray  # [classes], the model on ``pixels``
    classes: List[int]  # the top-k class ids, most probable first
    values: np.ndarray  # [H, W, 3, k] attributions per class of ``classes``
    base_values: np.ndarray  # [k] the model on the fully masked picture
    seconds: float = 0.0

    def efficiency_gap(self) -> np.ndarray:
        """|sum of attributions + fully-masked output - output| per explained class (0 in theory)."""
        total = self.values.reshape(-1, self.values.shape[-1]).sum(axis=0)
        return np.abs(total + self.base_values - self.probabilities[self.classes])


@dataclass
class Timings:
    """Where explaining time went (seconds), summed over pictures."""

    masking: float = 0.0
    model: float = 0.0
    model_calls: int = 0
    masked_images: int = 0
    total: float = 0.0
    per_image: List[float] = field(default_factory=list)


def masker_spec(masker: str, image_size: int) -> str:
    """The SHAP mask value for a masker name: ``blur`` scales its kernel with the picture."""
    if masker not in MASKERS:
        raise ValueError(f"unknown masker '{masker}': choose one of {', '.join(MASKERS)}")
    if masker == "blur":
        k = max(3, image_size // 8)
        return f"blur({k},{k})"
    return masker


class _BatchingModel:
    """SHAP's model callable: inpaints the batch's masked pictures in threads, then one model call.

    The masker handed to SHAP (``_DeferredMasker``) returns the picture with masked pixels set to NaN;
    the actual filling (inpainting, blur or mean) happens here, in parallel, per batch.
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], fill: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 timings: Timings, threads: int):
        self.predict, self.fill, self.timings = predict, fill, timings
        self.pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None
        self.original: Optional[np.ndarray] = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        jobs = [(row, np.isnan(row).any(axis=-1)) for row in batch]
        mapper = self.pool.map if self.pool else map
        filled = list(mapper(lambda job: self.fill(self.original, job[1]) if job[1].any() else self.original, jobs))
        pixels = np.stack(filled).astype(np.float32)
        masked = time.perf_counter()
        out = self.predict(pixels)
        self.timings.masking += masked - start
        self.timings.model += time.perf_counter() - masked
        self.timings.model_calls += 1
        self.timings.masked_images += len(batch)
        return out


def _filler(masker: str, image_size: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``fill(original uint8 [H,W,3], masked bool [H,W]) -> filled picture`` for a masker name."""
    import cv2

    if masker.startswith("inpaint"):
        flag = cv2.INPAINT_TELEA if masker == "inpaint_telea" else cv2.INPAINT_NS

        def fill(original, masked):
            if masked.all():  # nothing left to inpaint from: SHAP's own rule, the mean colour
                return np.broadcast_to(original.reshape(-1, 3).mean(axis=0), original.shape)
            return cv2.inpaint(original, masked.astype(np.uint8), 3, flag)

        return fill
    if masker == "blur":
        k = max(3, image_size // 8)
        last: list = [None, None]  # the picture being explained and its blur, computed once for it

        def fill(original, masked):
            if last[0] is not original:
                last[:] = [original, cv2.blur(original, (k, k))]
            return np.where(masked[..., None], last[1], original)

        return fill

    def fill(original, masked):  # mean colour
        return np.where(masked[..., None], original.reshape(-1, 3).mean(axis=0), original)

    return fill


def _deferred_masker(image_size: int, spec: str):
    """A SHAP image masker with the same partition tree, whose masked pixels come out as NaN."""
    import shap

    class _DeferredMasker(shap.maskers.Image):
        def __call__(self, mask, x):
            out = np.array(x, dtype=np.float32, copy=True).ravel()
            if mask is None:
                mask = np.zeros(out.shape, dtype=bool)
            out[~mask] = np.nan
            return (out.reshape(1, *self.input_shape),)

    return _DeferredMasker(spec, (image_size, image_size, 3))


class Explainer:
    """Explains pictures for a ``predict(pixels [N,H,W,3] float 0..255) -> probabilities [N,C]``."""

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        image_size: int,
        labels: Sequence[str],
        masker: str = "inpaint_telea",
        max_evals: int = 300,
        batch_size: int = 50,
        top_k: int = 3,
        threads: Optional[int] = None,
    ):
        if max_evals < 3:
            raise ValueError(f"max_evals must be at least 3, got {max_evals}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.image_size, self.labels = image_size, list(labels)
        self.masker_name = masker
        self.max_evals, self.batch_size = max_evals, batch_size
        self.top_k = max(1, min(top_k, len(self.labels)))
        self.timings = Timings()
        self.model = _BatchingModel(predict, _filler(masker, image_size), self.timings,
                                    threads or min(4, os.cpu_count() or 1))
        self.masker = _deferred_masker(image_size, masker_spec(masker, image_size))

    def explain(self, pixels: np.ndarray) -> Explanation:
        """SHAP values of one ``[H, W, 3]`` picture (0..255; rounded to uint8) for its top-k classes."""
        import shap

        if pixels.shape != (self.image_size, self.image_size, 3):
            raise ValueError(f"picture of shape {pixels.shape}, expected ({self.image_size}, {self.image_size}, 3)")
        image = np.clip(np.round(pixels), 0, 255).astype(np.uint8)
        start = time.perf_counter()
        self.model.original = image
        probabilities = self.model(image[None].astype(np.float32))[0]
        classes = [int(i) for i in np.argsort(-probabilities)[: self.top_k]]
        explainer = shap.Explainer(self.model, self.masker, output_names=self.labels, algorithm="partition")
        result = explainer(image[None].astype(np.float32), max_evals=self.max_evals, batch_size=self.batch_size,
                           outputs=classes, silent=True)
        seconds = time.perf_counter() - start
        self.timings.total += seconds
        self.timings.per_image.append(seconds)
        return Explanation(image, probabilities, classes, np.asarray(result.values[0]),
                           np.asarray(result.base_values[0]), seconds)


def saved_model_predict(model_dir: str) -> Callable[[np.ndarray], np.ndarray]:
    """``predict(pixels) -> probabilities`` through the exported model's ``serving_pixels`` signature."""
    import tensorflow as tf

    loaded = tf.saved_model.load(model_dir)
    if PIXELS_SIGNATURE not in loaded.signatures:
        raise ValueError(
            f"the model in {model_dir} has no '{PIXELS_SIGNATURE}' signature (it has "
            f"{sorted(loaded.signatures)}): it was exported before explanations existed; retrain it"
        )
    signature = loaded.signatures[PIXELS_SIGNATURE]

    def predict(pixels: np.ndarray) -> np.ndarray:
        return signature(pixels=tf.constant(pixels, tf.float32))["probabilities"].numpy()

    predict.loaded = loaded  # keep the SavedModel alive as long as the function
    return predict


def decode(image_bytes: bytes, image_size: int) -> np.ndarray:
    """The served model's own decoding and resizing of one picture → ``[size, size, 3]`` float 0..255."""
    import tensorflow as tf

    from placedemarche.pipeline.trainer import model as model_lib

    try:
        return model_lib.decode_and_resize(tf.constant(image_bytes), image_size).numpy()
    except tf.errors.InvalidArgumentError as e:
        raise ValueError(f"not a picture the model can decode (JPEG, PNG, GIF or BMP): {e.message}") from e
