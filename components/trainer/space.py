"""The search space of a candidate's head, and what tuned values change in its recipe.

The space is a KerasTuner ``HyperParameters`` whose names are the candidate's own config keys
(``dense_units``, ``dropout``, ``learning_rate``, ``optimizer``; for a candidate that reads text
``text_max_words``, ``text_max_chars``, ``text_word_ngrams``, ``text_char_ngrams``), each with the
candidate's configured value as its default, so ``best_hyperparameters`` reads like the config and
:func:`apply` is a plain replace. N-gram ranges are choices written ``"lo-hi"`` (``"0-0"``: none).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence

import keras_tuner as kt

from placedemarche.components.trainer.trainer import NO_BACKBONE, Fitted, TestData, TrainSpec

DENSE_UNITS = (64, 128, 256, 512, 1024)
DROPOUT = (0.0, 0.6, 0.1)  # min, max, step
LEARNING_RATE = (1e-4, 1e-2)  # log-uniform
OPTIMIZERS = ("rmsprop", "adam", "sgd")
TEXT_MAX_WORDS = (5000, 10000, 20000, 40000)
TEXT_MAX_CHARS = (10000, 30000, 60000)
TEXT_WORD_NGRAMS = ("1-1", "1-2", "1-3")
TEXT_CHAR_NGRAMS = ("0-0", "2-4", "3-5")
NONE = "0-0"
# KerasTuner's own bookkeeping entries (Hyperband's epoch budget): not settings of the model.
RESERVED_PREFIX = "tuner/"


def _ngrams(value: Sequence[int]) -> str:
    return f"{int(value[0])}-{int(value[1])}"


def _with(choices: Sequence[Any], default: Any) -> List[Any]:
    """``choices`` plus the configured default where it is not one of them (sorted when numeric)."""
    values = list(choices)
    if default not in values:
        values.append(default)
        if not isinstance(default, str):
            values.sort()
    return values


def search_space(spec: TrainSpec) -> kt.HyperParameters:
    """The space searched for ``spec``'s candidate, with its configured values as defaults."""
    hp = kt.HyperParameters()
    if spec.backbone != NO_BACKBONE:
        hp.Choice("dense_units", _with(DENSE_UNITS, spec.dense_units), default=spec.dense_units)
        lo, hi, step = DROPOUT
        hp.Float("dropout", min(lo, spec.dropout), max(hi, spec.dropout), step=step, default=spec.dropout)
    lo, hi = LEARNING_RATE
    hp.Float("learning_rate", min(lo, spec.learning_rate), max(hi, spec.learning_rate), sampling="log",
             default=spec.learning_rate)
    hp.Choice("optimizer", _with(OPTIMIZERS, spec.optimizer), default=spec.optimizer)
    if spec.text_columns:
        # A kind of n-gram the candidate reads none of ("0-0") stays off; one it reads may be searched off
        # only while the other kind is on (a text model needs one or the other).
        words, chars = _ngrams(spec.text_word_ngrams), _ngrams(spec.text_char_ngrams)
        if words != NONE:
            hp.Choice("text_max_words", _with(TEXT_MAX_WORDS, spec.text_max_words), default=spec.text_max_words)
            hp.Choice("text_word_ngrams", _with(TEXT_WORD_NGRAMS, words), default=words)
        if chars != NONE:
            choices = _with(TEXT_CHAR_NGRAMS, chars)
            if words == NONE:
                choices = [c for c in choices if c != NONE]
            hp.Choice("text_char_ngrams", choices, default=chars)
            hp.Choice("text_max_chars", _with(TEXT_MAX_CHARS, spec.text_max_chars), default=spec.text_max_chars)
    return hp


def defaults(spec: TrainSpec) -> Dict[str, Any]:
    """The configured value of every searched setting (the reference every trial is compared with)."""
    return dict(search_space(spec).values)


def settings(values: Mapping[str, Any]) -> Dict[str, Any]:
    """``values`` without KerasTuner's bookkeeping entries, floats rounded (0.30000000000000004 → 0.3)."""
    out = {}
    for key, value in values.items():
        if key.startswith(RESERVED_PREFIX):
            continue
        out[key] = round(value, 10) if isinstance(value, float) else value
    return out


def apply(spec: TrainSpec, values: Mapping[str, Any]) -> TrainSpec:
    """``spec`` with the tuned ``values`` (names of the search space) in place of its own.

    Raises:
      ValueError: a value names no setting of this candidate, or an n-gram range is malformed.
    """
    allowed = set(defaults(spec))
    changes: Dict[str, Any] = {}
    for key, value in settings(values).items():
        if key not in allowed:
            raise ValueError(f"tuned value '{key}' is not a setting tuned for candidate '{spec.name}' "
                             f"(tuned settings: {', '.join(sorted(allowed))}): were the hyperparameters written "
                             "for another candidate?")
        if key in ("text_word_ngrams", "text_char_ngrams"):
            try:
                lo, hi = (int(v) for v in str(value).split("-"))
            except ValueError as e:
                raise ValueError(f"tuned value {key}={value!r} is not an n-gram range 'lo-hi'") from e
            value = (lo, hi)
        changes[key] = value
    return dataclasses.replace(spec, **changes)


def _scores(fitted: Fitted, test: "TestData | str") -> Dict[str, Any]:
    scores: Dict[str, Any] = {"val_accuracy": fitted.val_accuracy, "val_loss": fitted.val_loss, "test_accuracy": None}
    if isinstance(test, TestData) and len(test.labels):
        probabilities = fitted.predict(test.image_x, test.texts)
        scores["test_accuracy"] = float((probabilities.argmax(axis=1) == test.labels).mean())
    return scores


def compare(default_spec: TrainSpec, tuned_spec: TrainSpec, tuned_values: Mapping[str, Any], tuned: Fitted,
            default: Fitted, test: "TestData | str", search: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """What the Trainer records of tuning (``metadata["tuning"]``): per searched setting its default and
    tuned value, and the eval and test accuracy of both recipes, trained the same way on the same data.

    ``test`` is the test split (read after both recipes are trained; it chooses nothing) or why there
    is none.
    """
    before = defaults(default_spec)
    after = settings(tuned_values)
    values = {key: {"default": before[key], "tuned": after.get(key, before[key])} for key in before}
    out: Dict[str, Any] = {
        "values": values,
        "changed": sorted(k for k, v in values.items() if v["default"] != v["tuned"]),
        "default": _scores(default, test),
        "tuned": _scores(tuned, test),
        "test_examples": len(test.labels) if isinstance(test, TestData) else 0,
        # Counted wrong: the model has no such class (the gate counts them the same way).
        "test_unknown_labels": int((test.labels < 0).sum()) if isinstance(test, TestData) else 0,
    }
    if not isinstance(test, TestData):
        out["test_note"] = test
    if search:
        out["search"] = dict(search)
    return out
