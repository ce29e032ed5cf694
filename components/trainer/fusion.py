"""One classifier per modality, fused: how a candidate that reads pictures and text decides.

The image head (the proof of concept's, on the frozen backbone's features) and a linear text
classifier (on the listing's TF-IDF vector) are each trained alone, then combined as a weighted
product of their probabilities (a weighted sum of log-probabilities, renormalised), the late fusion
the winners of the Rakuten SIGIR eCom 2020 multimodal product classification challenge used. The two
weights are chosen on the **eval** split (lowest log loss over a small grid); the test split is
never looked at.

Trained jointly, the image head (thousands of features for hundreds of products) fits the training
set before the text classifier has learnt anything and early stopping ends training there (the
README's "Candidates" section has the measurements).

Without text (empty, punctuation only, or only words absent from the training vocabulary), the
fused answer is **exactly** the image head's: the text term is masked out, not guessed. So an
image-only client gets the image classifier's answer from a text candidate, without the model
having to learn it from examples with their text blanked.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

IMAGE_WEIGHTS: Tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0)
TEXT_WEIGHTS: Tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 3.0)
_EPSILON = 1e-7


@dataclass(frozen=True)
class Fusion:
    """Weights of the image's and the text's log-probabilities."""

    image_weight: float = 1.0
    text_weight: float = 1.0
    eval_log_loss: float = float("nan")  # of the chosen weights, on the eval split
    eval_accuracy: float = float("nan")


def fuse(image_probabilities: tf.Tensor, text_probabilities: tf.Tensor, has_text: tf.Tensor,
         weights: tf.Tensor) -> tf.Tensor:
    """``softmax(w_i log p_image + w_t log p_text)`` where there is text, ``p_image`` elsewhere."""
    logits = (weights[0] * tf.math.log(image_probabilities + _EPSILON)
              + weights[1] * tf.math.log(text_probabilities + _EPSILON))
    fused = tf.nn.softmax(logits, axis=-1)
    return tf.where(has_text[:, tf.newaxis], fused, image_probabilities)


def fuse_numpy(image_probabilities: np.ndarray, text_probabilities: np.ndarray, has_text: np.ndarray,
               image_weight: float, text_weight: float) -> np.ndarray:
    """:func:`fuse` in NumPy (fitting the weights)."""
    logits = image_weight * np.log(image_probabilities + _EPSILON) + text_weight * np.log(text_probabilities + _EPSILON)
    logits -= logits.max(axis=1, keepdims=True)
    fused = np.exp(logits)
    fused /= fused.sum(axis=1, keepdims=True)
    return np.where(has_text[:, None], fused, image_probabilities)


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log probability of the true class (``labels``: class ids)."""
    return float(-np.mean(np.log(probabilities[np.arange(len(labels)), labels] + _EPSILON)))


def fit(image_probabilities: np.ndarray, text_probabilities: np.ndarray, has_text: np.ndarray,
        labels: np.ndarray, image_weights: Sequence[float] = IMAGE_WEIGHTS,
        text_weights: Sequence[float] = TEXT_WEIGHTS) -> Fusion:
    """The weights with the lowest log loss on held-out (eval) examples; ties: the first in grid order.

    Args:
      image_probabilities, text_probabilities: ``[n, classes]`` of each classifier.
      has_text: ``[n]`` whether each example has text the model knows.
      labels: ``[n]`` true class ids.

    Raises:
      ValueError: no examples, or shapes that do not match.
    """
    n = len(labels)
    if n == 0:
        raise ValueError("no eval examples to choose the fusion weights on")
    if image_probabilities.shape != text_probabilities.shape or image_probabilities.shape[0] != n:
        raise ValueError(f"shapes differ: image {image_probabilities.shape}, text {text_probabilities.shape}, {n} labels")
    best = None
    for wi, wt in itertools.product(image_weights, text_weights):
        p = fuse_numpy(image_probabilities, text_probabilities, has_text, wi, wt)
        loss = log_loss(p, labels)
        if best is None or loss < best.eval_log_loss - 1e-12:
            best = Fusion(wi, wt, loss, float(np.mean(p.argmax(axis=1) == labels)))
    logger.info("fusion weights chosen on %d eval examples: image %.2f, text %.2f (log loss %.4f, accuracy %.4f)",
                n, best.image_weight, best.text_weight, best.eval_log_loss, best.eval_accuracy)
    return best
