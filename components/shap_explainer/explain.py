"""SHAP explanations of an exported classifier: the proof of concept's Partition explainer, productised.

The picture is decoded and resized exactly as the served model does it (``components.trainer.model``),
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
from typing import Callable, List, Optional, Sequence

import numpy as np

from placedemarche.serving import model_contract as contract

logger = logging.getLogger(__name__)

MASKERS = ("inpaint_telea", "inpaint_ns", "blur", "mean")
PIXELS_SIGNATURE = contract.SERVING_PIXELS


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
    text: float = 0.0  # explaining the words (models that read text), all pictures together


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


class SavedModelPredictor:
    """The exported model's signatures as NumPy functions, for explaining.

    ``pixels(pixels) -> probabilities`` (``serving_pixels``; for a model that reads text, with the text
    set by :meth:`use_text` held fixed), and for such a model ``image_branch(pixels)`` and
    ``fusion(image_probabilities, texts)`` (the words explained with the picture's branch computed once).
    """

    def __init__(self, model_dir: str):
        import tensorflow as tf

        self._tf = tf
        self.loaded = tf.saved_model.load(model_dir)  # kept alive as long as the predictor
        signatures = self.loaded.signatures
        if PIXELS_SIGNATURE not in signatures:
            raise ValueError(
                f"the model in {model_dir} has no '{PIXELS_SIGNATURE}' signature (it has {sorted(signatures)}): "
                "it reads no pictures, or it was exported before explanations existed; retrain it"
            )
        self._pixels = signatures[PIXELS_SIGNATURE]
        self.reads_text = contract.TEXT in self._pixels.structured_input_signature[1]
        self._branch = signatures.get(contract.SERVING_IMAGE_BRANCH)
        self._fusion = signatures.get(contract.SERVING_FUSION)
        self.text = ""

    def use_text(self, text: str) -> None:
        """The listing text held fixed while the picture is explained."""
        self.text = text or ""

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        tf = self._tf
        inputs = {contract.PIXELS: tf.constant(pixels, tf.float32)}
        if self.reads_text:
            inputs[contract.TEXT] = tf.constant([self.text.encode("utf-8")])
        return self._pixels(**inputs)[contract.PROBABILITIES].numpy()

    def image_branch(self, pixels: np.ndarray) -> np.ndarray:
        return self._branch(**{contract.PIXELS: self._tf.constant(pixels, self._tf.float32)})[contract.PROBABILITIES].numpy()

    def fusion(self, image_probabilities: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        tf = self._tf
        return self._fusion(**{contract.IMAGE_PROBABILITIES: tf.constant(image_probabilities, tf.float32),
                               contract.TEXT: tf.constant([t.encode("utf-8") for t in texts])})[
            contract.PROBABILITIES].numpy()


def saved_model_predict(model_dir: str) -> SavedModelPredictor:
    """``predict(pixels) -> probabilities`` through the exported model's ``serving_pixels`` signature."""
    return SavedModelPredictor(model_dir)


@dataclass
class TextExplanation:
    """SHAP values of a listing's words for the classes explained on its picture."""

    text: str
    tokens: List[str]
    values: np.ndarray  # [tokens, k]
    base_values: np.ndarray  # [k]: every word masked = the picture's own answer
    probabilities: np.ndarray  # [classes]: the picture with the whole text
    classes: List[int]
    seconds: float = 0.0

    def efficiency_gap(self) -> np.ndarray:
        """|sum of the words' attributions + the no-text output - the output| per class (0 in theory)."""
        return np.abs(self.values.sum(axis=0) + self.base_values - self.probabilities[self.classes])


class TextExplainer:
    """Which words moved the decision, with the picture held fixed (SHAP Partition over words).

    ``fusion(image_probabilities [N, C], texts) -> probabilities [N, C]`` is the model after its image
    branch, so the backbone runs once per picture, not once per masked text. Masked words are
    removed from the text; with every word masked, the answer is the picture's alone.
    """

    def __init__(self, fusion: Callable[[np.ndarray, Sequence[str]], np.ndarray], labels: Sequence[str],
                 max_evals: int = 300, batch_size: int = 50):
        self.fusion, self.labels = fusion, list(labels)
        self.max_evals, self.batch_size = max_evals, batch_size
        self.seconds = 0.0

    def explain(self, image_probabilities: np.ndarray, text: str, classes: Sequence[int]) -> TextExplanation:
        import shap

        start = time.perf_counter()
        fixed = np.asarray(image_probabilities, np.float32).reshape(1, -1)

        def model(texts) -> np.ndarray:
            texts = [str(t) for t in np.asarray(texts).reshape(-1)]
            return self.fusion(np.repeat(fixed, len(texts), axis=0), texts)

        full = model([text])[0]
        # Masked words become SHAP's "..." mask token, which the model's own normalisation turns into
        # a space: a masked word is a removed word.
        masker = shap.maskers.Text()
        tokens = masker.tokenizer(text)["input_ids"] if text.strip() else []
        if not tokens:  # nothing to explain: the answer is the picture's
            values, base = np.zeros((0, len(classes)), np.float32), full[list(classes)]
        else:
            explainer = shap.Explainer(model, masker, output_names=self.labels, algorithm="partition")
            result = explainer([text], max_evals=max(self.max_evals, 2 * len(tokens) + 1),
                               batch_size=self.batch_size, outputs=list(classes), silent=True)
            values, base = np.asarray(result.values[0], np.float32), np.asarray(result.base_values[0])
            tokens = [str(t).strip() for t in result.data[0]]
        seconds = time.perf_counter() - start
        self.seconds += seconds
        return TextExplanation(text, list(tokens), values, base, full, list(classes), seconds)


def decode(image_bytes: bytes, image_size: int) -> np.ndarray:
    """The served model's own decoding and resizing of one picture → ``[size, size, 3]`` float 0..255."""
    import tensorflow as tf

    from placedemarche.components.trainer import model as model_lib

    try:
        return model_lib.decode_and_resize(tf.constant(image_bytes), image_size).numpy()
    except tf.errors.InvalidArgumentError as e:
        raise ValueError(f"not a picture the model can decode (JPEG, PNG, GIF or BMP): {e.message}") from e
