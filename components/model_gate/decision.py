"""Comparing the candidate with the baseline on the same test pictures, and the blessing decision.

Plain NumPy, no TFX: given both models' predicted classes and the true classes of the same
examples, computes each model's accuracy, per-category accuracy / precision / recall / F1, macro F1
and confusion matrix, McNemar's paired test, and checks the configured thresholds. TFMA computes the
standard metrics inside the pipeline; McNemar needs both models' per-example outcomes side by side,
which TFMA does not provide, so the decision is made here from one set of predictions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class ModelMetrics:
    """One model's metrics on the test split."""

    accuracy: float
    macro_f1: float
    per_category: Dict[str, Dict[str, float]]  # label -> accuracy (= recall), precision, recall, f1, support
    confusion_matrix: List[List[int]]  # rows: true label, columns: predicted label (labels order)
    examples: int


@dataclass(frozen=True)
class McNemar:
    """McNemar's test on the examples exactly one model got right."""

    candidate_only_correct: int  # b: candidate right, baseline wrong
    baseline_only_correct: int  # c: baseline right, candidate wrong
    p_value: float  # two-sided; exact binomial when b + c < 25, else chi-squared with continuity correction
    method: str


@dataclass(frozen=True)
class Check:
    """One threshold of the gate, with its value and verdict."""

    name: str
    value: Optional[float]
    threshold: float
    passed: bool
    explanation: str


@dataclass(frozen=True)
class Decision:
    blessed: bool
    checks: List[Check]
    candidate: ModelMetrics
    baseline: ModelMetrics
    mcnemar: McNemar
    labels: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)

    def failed_checks(self) -> List[Check]:
        return [c for c in self.checks if not c.passed]


def model_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> ModelMetrics:
    """Accuracy, per-category metrics, macro F1 and the confusion matrix.

    Raises:
      ValueError: empty input, lengths differ, or a class index outside ``labels``.
    """
    t, p = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    if t.size == 0:
        raise ValueError("no test examples: the test split is empty")
    if t.shape != p.shape:
        raise ValueError(f"{t.size} true labels but {p.size} predictions")
    n = len(labels)
    if min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n:
        raise ValueError(f"class indices must be in 0..{n - 1} ({n} labels)")
    matrix = np.zeros((n, n), dtype=int)
    np.add.at(matrix, (t, p), 1)
    return metrics_from_confusion(matrix, labels)


def metrics_from_confusion(matrix, labels: Sequence[str]) -> ModelMetrics:
    """The same metrics from a confusion matrix (rows: true, columns: predicted, ``labels`` order).

    Macro F1 averages the categories present in the test split (support > 0).
    """
    matrix = np.asarray(matrix, dtype=int)
    if matrix.shape != (len(labels), len(labels)) or matrix.sum() == 0:
        raise ValueError(f"a {len(labels)} x {len(labels)} confusion matrix with examples is needed, "
                         f"got shape {list(matrix.shape)} with {int(matrix.sum())} examples")
    per_category: Dict[str, Dict[str, float]] = {}
    f1s = []
    for i, label in enumerate(labels):
        support = int(matrix[i].sum())
        predicted = int(matrix[:, i].sum())
        tp = int(matrix[i, i])
        recall = tp / support if support else 0.0
        precision = tp / predicted if predicted else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_category[label] = {"accuracy": recall, "precision": precision, "recall": recall, "f1": f1,
                               "support": support}
        if support:
            f1s.append(f1)
    return ModelMetrics(
        accuracy=float(np.trace(matrix) / matrix.sum()),
        macro_f1=float(np.mean(f1s)) if f1s else 0.0,
        per_category=per_category,
        confusion_matrix=matrix.tolist(),
        examples=int(matrix.sum()),
    )


def mcnemar(y_true: Sequence[int], candidate_pred: Sequence[int], baseline_pred: Sequence[int]) -> McNemar:
    """McNemar's paired test of two classifiers on the same examples."""
    t = np.asarray(y_true)
    cand_ok = np.asarray(candidate_pred) == t
    base_ok = np.asarray(baseline_pred) == t
    return mcnemar_from_counts(int(np.sum(cand_ok & ~base_ok)), int(np.sum(~cand_ok & base_ok)))


def mcnemar_from_counts(b: int, c: int) -> McNemar:
    """McNemar's test from the discordant counts: ``b`` candidate-only correct, ``c`` baseline-only."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got {b} and {c}")
    if b + c == 0:
        return McNemar(b, c, 1.0, "no discordant pairs")
    if b + c < 25:
        # Exact: under H0 the discordant pairs split as Binomial(b + c, 1/2).
        k, n = min(b, c), b + c
        tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
        return McNemar(b, c, min(1.0, 2 * tail), "exact binomial")
    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    # Chi-squared with 1 degree of freedom: P(X > s) = erfc(sqrt(s / 2)).
    return McNemar(b, c, float(math.erfc(math.sqrt(statistic / 2))), "chi-squared, continuity corrected")


def with_check(decision: Decision, check: Check) -> Decision:
    """``decision`` with one more check (the blessing then also needs it to pass)."""
    checks = [*decision.checks, check]
    return Decision(all(c.passed for c in checks), checks, decision.candidate, decision.baseline,
                    decision.mcnemar, decision.labels)


def decide(
    y_true: Sequence[int],
    candidate_pred: Sequence[int],
    baseline_pred: Sequence[int],
    labels: Sequence[str],
    min_accuracy: float,
    min_improvement: float,
    significance_level: float,
    require_significance: bool,
) -> Decision:
    """The blessing decision: every check must pass.

    Checks: the candidate's accuracy is at least ``min_accuracy``; it beats the baseline's by at
    least ``min_improvement``; and, when ``require_significance``, McNemar's p-value is below
    ``significance_level`` with the candidate the better one (the p-value is always reported).
    """
    return decide_from_metrics(
        model_metrics(y_true, candidate_pred, labels), model_metrics(y_true, baseline_pred, labels),
        mcnemar(y_true, candidate_pred, baseline_pred), labels,
        min_accuracy, min_improvement, significance_level, require_significance,
    )


def decide_from_metrics(
    cand: ModelMetrics,
    base: ModelMetrics,
    test: McNemar,
    labels: Sequence[str],
    min_accuracy: float,
    min_improvement: float,
    significance_level: float,
    require_significance: bool,
) -> Decision:
    """:func:`decide` from already computed metrics and McNemar test (e.g. TFMA's)."""
    gain = cand.accuracy - base.accuracy
    checks = [
        Check("accuracy_floor", cand.accuracy, min_accuracy, cand.accuracy >= min_accuracy,
              f"candidate test accuracy {cand.accuracy:.4f} must be >= {min_accuracy:.4f} "
              "(evaluation.min_accuracy)"),
        Check("improvement_over_baseline", gain, min_improvement, gain >= min_improvement,
              f"candidate {cand.accuracy:.4f} - baseline {base.accuracy:.4f} = {gain:+.4f} must be >= "
              f"{min_improvement:+.4f} (evaluation.min_improvement)"),
    ]
    significant = test.p_value < significance_level and test.candidate_only_correct > test.baseline_only_correct
    if require_significance:
        checks.append(Check(
            "mcnemar_significance", test.p_value, significance_level, significant,
            f"McNemar p-value {test.p_value:.4g} must be < {significance_level} with the candidate "
            f"right more often where the models disagree ({test.candidate_only_correct} vs "
            f"{test.baseline_only_correct}) (evaluation.require_significance)",
        ))
    return Decision(all(c.passed for c in checks), checks, cand, base, test, list(labels))
