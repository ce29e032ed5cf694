"""Comparing a candidate with the baseline on the same test pictures, and the blessing decision.

Plain NumPy, no TFX. From TFMA's results (the Evaluator's): each model's accuracy, per-category
accuracy / precision / recall / F1 and macro F1 derived from its confusion matrix
(:func:`metrics_from_confusion`), McNemar's paired test from the discordant counts of TFMA's
``PairedOutcomes`` metric (:func:`mcnemar_from_counts`), and the gate's thresholds (:func:`decide`).
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


@dataclass(frozen=True)
class Thresholds:
    """The gate's thresholds (the ``evaluation`` section of the config)."""

    min_accuracy: float
    min_improvement: float
    significance_level: float = 0.05
    require_significance: bool = False


def decide(cand: ModelMetrics, base: ModelMetrics, test: McNemar, labels: Sequence[str],
           thresholds: Thresholds) -> Decision:
    """The blessing decision: every check must pass.

    Checks: the candidate's accuracy is at least ``min_accuracy``; it beats the baseline's by at
    least ``min_improvement``; and, when ``require_significance``, McNemar's p-value is below
    ``significance_level`` with the candidate the better one (the p-value is always reported).
    """
    min_accuracy, min_improvement = thresholds.min_accuracy, thresholds.min_improvement
    significance_level, require_significance = thresholds.significance_level, thresholds.require_significance
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


def champion_check(cand: ModelMetrics, champion: Optional[ModelMetrics], tolerance: float, about: str,
                   test: Optional[McNemar] = None) -> Check:
    """The challenger's check against the served champion: its accuracy may fall at most ``tolerance``
    below the champion's (``evaluation.champion_tolerance``). ``champion`` None: nothing comparable is
    served (``about`` says why), and the check passes saying so. ``about`` names the champion."""
    if champion is None:
        return Check("not_worse_than_champion", None, -tolerance, True, f"no champion compared: {about}")
    gap = cand.accuracy - champion.accuracy
    where = "" if test is None else (f"; McNemar p = {test.p_value:.4g} ({test.candidate_only_correct} right only "
                                     f"by the candidate, {test.baseline_only_correct} only by the champion)")
    return Check("not_worse_than_champion", gap, -tolerance, gap >= -tolerance - 1e-12,
                 f"candidate {cand.accuracy:.4f} - champion {champion.accuracy:.4f} ({about}) = {gap:+.4f} must be "
                 f">= {-tolerance:+.4f} (evaluation.champion_tolerance){where}")
