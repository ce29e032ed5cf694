"""The listing's words inside the model: normalisation, word and character n-grams, TF-IDF.

The vocabulary and its inverse document frequencies are learnt from the **train split only**
(:func:`fit_vocabulary`) and travel inside the exported SavedModel (:class:`TextFeaturizer`: a
lookup table and a weight vector), so TF Serving receives raw strings and nothing outside the model
has to be kept in sync with it. Fitting and serving tokenise with the same TensorFlow ops
(:func:`tokens`), so there is no training / serving skew in how words are cut.

What any text becomes, whatever it holds:

- only the first :data:`MAX_TEXT_BYTES` bytes are read (a 1 MB description costs what 16 KiB do);
- bytes that are not UTF-8 (and a multi-byte character cut by that limit) become U+FFFD, never an
  error;
- lower case; every run of characters that are neither letters nor digits becomes one space;
- an empty text, or one of punctuation only, has no tokens: its TF-IDF vector is all zeros, and the
  candidates' text branch then adds nothing (the image-only answer, see ``model.build_text_head``).

Tokens are word n-grams (``w:`` prefix, words joined by a space) and character n-grams of each word
padded with one space on both sides (``c:`` prefix, like scikit-learn's ``char_wb`` analyzer). Each
text's vector is sublinear term frequency (``1 + ln(count)``) times the IDF, L2-normalised.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Iterable, List, Sequence, Tuple

import numpy as np
import tensorflow as tf

MAX_TEXT_BYTES = 16384
WORD_PREFIX = "w:"
CHAR_PREFIX = "c:"
TEXT_SEPARATOR = " "  # between the text columns a candidate reads (product_name, description)


@dataclass(frozen=True)
class TextSettings:
    """How a candidate reads text (from its config: ``text_*`` keys)."""

    word_ngrams: Tuple[int, int] = (1, 2)  # (0, 0): no word n-grams
    char_ngrams: Tuple[int, int] = (3, 5)  # (0, 0): no character n-grams
    max_words: int = 20000  # most frequent word n-grams kept (by document frequency in train)
    max_chars: int = 30000  # most frequent character n-grams kept
    min_df: int = 2  # a token must appear in at least this many train texts

    def __post_init__(self):
        for name in ("word_ngrams", "char_ngrams"):
            lo, hi = getattr(self, name)
            if (lo, hi) != (0, 0) and not 1 <= lo <= hi:
                raise ValueError(f"{name} must be (lo, hi) with 1 <= lo <= hi, or (0, 0) for none; got {(lo, hi)}")
        if self.word_ngrams == (0, 0) and self.char_ngrams == (0, 0):
            raise ValueError("text needs word n-grams, character n-grams or both")


def join_columns(columns: Sequence[Sequence[str]]) -> List[str]:
    """Per row, the text columns joined by a space (missing columns are empty strings)."""
    return [TEXT_SEPARATOR.join(parts).strip() for parts in zip(*columns)]


def normalise(text: tf.Tensor) -> tf.Tensor:
    """``[batch]`` strings → ``[batch]`` normalised strings (see the module docstring)."""
    text = tf.strings.substr(text, 0, MAX_TEXT_BYTES, unit="BYTE")
    text = tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD)
    text = tf.strings.lower(text, encoding="utf-8")
    text = tf.strings.regex_replace(text, r"[^\pL\pN]+", " ")
    return tf.strings.strip(text)


def _prefixed(prefix: str, grams: tf.RaggedTensor) -> tf.RaggedTensor:
    return tf.ragged.map_flat_values(lambda v: tf.strings.join([prefix, v]), grams)


def tokens(text: tf.Tensor, settings: TextSettings) -> tf.RaggedTensor:
    """``[batch]`` raw strings → ``[batch, None]`` tokens (word then character n-grams)."""
    words = tf.strings.split(normalise(text))
    parts = []
    lo, hi = settings.word_ngrams
    if hi:
        parts.append(_prefixed(WORD_PREFIX, tf.strings.ngrams(words, tuple(range(lo, hi + 1)), separator=" ")))
    lo, hi = settings.char_ngrams
    if hi:
        padded = tf.ragged.map_flat_values(lambda w: tf.strings.join([" ", w, " "]), words)
        chars = tf.strings.unicode_split(padded, "UTF-8")
        grams = tf.strings.ngrams(chars, tuple(range(lo, hi + 1)), separator="")
        parts.append(_prefixed(CHAR_PREFIX, grams.merge_dims(1, 2)))
    return tf.concat(parts, axis=1) if len(parts) > 1 else parts[0]


@dataclass(frozen=True)
class Vocabulary:
    """Tokens in column order and their inverse document frequencies, learnt from train texts."""

    tokens: List[str]
    idf: np.ndarray  # float32 [len(tokens)]
    documents: int  # train texts it was learnt from

    def __len__(self) -> int:
        return len(self.tokens)


def fit_vocabulary(texts: Sequence[str], settings: TextSettings, batch_size: int = 256) -> Vocabulary:
    """The vocabulary of ``texts`` (the train split's, and only those) with scikit-learn's smooth IDF.

    Per kind (word, character), the ``max_*`` tokens with the highest document frequency among those
    in at least ``min_df`` texts, ties broken by the token, so the same texts give the same columns.
    ``idf = ln((1 + n) / (1 + df)) + 1``.

    Raises:
      ValueError: no texts, or no token reaches ``min_df`` (all texts empty, say).
    """
    return choose_vocabulary(document_frequency(texts, settings, batch_size), len(texts), settings)


def document_frequency(texts: Sequence[str], settings: TextSettings, batch_size: int = 256) -> collections.Counter:
    """Token → number of ``texts`` holding it (depends on the n-gram ranges only, not on the limits).

    Raises:
      ValueError: no texts.
    """
    if not texts:
        raise ValueError("no texts to learn a vocabulary from: the train split is empty")
    frequency: collections.Counter = collections.Counter()
    for start in range(0, len(texts), batch_size):
        batch = tokens(tf.constant(list(texts[start:start + batch_size]), tf.string), settings)
        for row in batch.to_list():
            frequency.update(set(row))
    return frequency


def choose_vocabulary(frequency: collections.Counter, n: int, settings: TextSettings) -> Vocabulary:
    """The vocabulary :func:`fit_vocabulary` learns, from the document frequencies of ``n`` texts.

    Raises:
      ValueError: no token reaches ``min_df``.
    """
    chosen: List[Tuple[str, int]] = []
    for prefix, limit in ((WORD_PREFIX, settings.max_words), (CHAR_PREFIX, settings.max_chars)):
        kind = [(t.decode("utf-8"), df) for t, df in frequency.items()
                if t.startswith(prefix.encode()) and df >= settings.min_df]
        kind.sort(key=lambda item: (-item[1], item[0]))
        chosen.extend(kind[:limit])
    if not chosen:
        raise ValueError(
            f"no token appears in at least {settings.min_df} of the {n} train texts: the text "
            "columns are empty or nearly so; read no text (text_columns: []) or lower text_min_df"
        )
    idf = np.array([math.log((1 + n) / (1 + df)) + 1.0 for _, df in chosen], np.float32)
    return Vocabulary([t for t, _ in chosen], idf, n)


class TextFeatures:
    """The train and eval TF-IDF rows of one split pair, per text setting, computed once each.

    A tuning search tries several vocabulary sizes and n-gram ranges on the same texts: the
    tokenisation depends on the n-gram ranges only, so it is counted once per range, and each
    setting's rows are kept for the trials that come back to it, the last ``keep`` settings only
    (a 50 000-token vocabulary over 850 texts is 170 MB of rows).
    """

    def __init__(self, train_texts: Sequence[str], eval_texts: Sequence[str], keep: int = 2):
        self.train_texts, self.eval_texts = list(train_texts), list(eval_texts)
        self.keep = keep
        self._frequency: dict = {}
        self._rows: "collections.OrderedDict" = collections.OrderedDict()

    def get(self, settings: TextSettings) -> Tuple[Vocabulary, "TextFeaturizer", np.ndarray, np.ndarray]:
        """``(vocabulary, featurizer, train rows, eval rows)`` for ``settings``.

        Raises:
          ValueError: as :func:`fit_vocabulary`.
        """
        if settings not in self._rows:
            ranges = (settings.word_ngrams, settings.char_ngrams)
            if ranges not in self._frequency:
                self._frequency[ranges] = document_frequency(self.train_texts, settings)
            vocabulary = choose_vocabulary(self._frequency[ranges], len(self.train_texts), settings)
            featurizer = TextFeaturizer(vocabulary, settings)
            self._rows[settings] = (vocabulary, featurizer, featurize(featurizer, self.train_texts),
                                    featurize(featurizer, self.eval_texts))
            while len(self._rows) > self.keep:
                self._rows.popitem(last=False)
        self._rows.move_to_end(settings)
        return self._rows[settings]


class TextFeaturizer(tf.Module):
    """Raw texts → TF-IDF vectors ``[batch, len(vocabulary)]``, inside the exported model."""

    def __init__(self, vocabulary: Vocabulary, settings: TextSettings):
        super().__init__(name="text_featurizer")
        self.settings = settings
        self.size = len(vocabulary)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(vocabulary.tokens, tf.string), tf.range(self.size, dtype=tf.int64)),
            default_value=-1,
        )
        self.idf = tf.Variable(vocabulary.idf, trainable=False, name="idf")

    def token_ids(self, text: tf.Tensor) -> tf.RaggedTensor:
        """``[batch, None]`` vocabulary ids of each text's tokens (-1: not in the vocabulary)."""
        return tf.ragged.map_flat_values(self.table.lookup, tokens(text, self.settings))

    def __call__(self, text: tf.Tensor) -> tf.Tensor:
        ids = self.token_ids(text)
        batch = tf.shape(text, out_type=tf.int64)[0]
        flat, rows = ids.flat_values, ids.value_rowids()
        known = flat >= 0
        cells = tf.boolean_mask(rows * self.size + flat, known)
        counts = tf.math.unsorted_segment_sum(
            tf.ones_like(cells, tf.float32), cells, batch * self.size)
        counts = tf.reshape(counts, tf.stack([batch, tf.constant(self.size, tf.int64)]))
        weights = tf.where(counts > 0, 1.0 + tf.math.log(tf.maximum(counts, 1.0)), 0.0) * self.idf
        return tf.math.l2_normalize(weights, axis=1)


def featurize(featurizer: TextFeaturizer, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """TF-IDF rows of ``texts`` as a float32 array (what the head is trained on)."""
    out = [featurizer(tf.constant(list(texts[i:i + batch_size]), tf.string)).numpy()
           for i in range(0, len(texts), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, featurizer.size), np.float32)


def vocabulary_entries(featurizer: TextFeaturizer, token_texts: Iterable[str]) -> List[bool]:
    """Whether each token (``w:word``, ``c: wo``) has a column (for tests and reviews)."""
    keys = tf.constant(list(token_texts), tf.string)
    return [bool(v >= 0) for v in featurizer.table.lookup(keys).numpy()]
