"""The blessing decision library: metrics against scikit-learn, McNemar against SciPy, the gate."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from placedemarche.components.model_gate.decision import (Thresholds, decide, mcnemar_from_counts,
                                                           metrics_from_confusion)

LABELS = ["Baby Care", "Computers", "Watches"]


def model_metrics(y, pred, labels):
    """What TFMA's confusion matrix of these predictions gives the gate."""
    y, pred = np.asarray(y, int), np.asarray(pred, int)
    matrix = np.zeros((len(labels), len(labels)), int)
    np.add.at(matrix, (y, pred), 1)
    return metrics_from_confusion(matrix, labels)


def mcnemar(y, cand, base):
    """What TFMA's paired counts of these predictions give the gate."""
    cand_ok, base_ok = np.asarray(cand) == np.asarray(y), np.asarray(base) == np.asarray(y)
    return mcnemar_from_counts(int(np.sum(cand_ok & ~base_ok)), int(np.sum(~cand_ok & base_ok)))


def decide_on(y, cand, base, labels, min_accuracy, min_improvement, significance_level, require_significance):
    return decide(model_metrics(y, cand, labels), model_metrics(y, base, labels), mcnemar(y, cand, base), labels,
                  Thresholds(min_accuracy, min_improvement, significance_level, require_significance))


def _random_predictions(seed, n=300, accuracy=0.7):
    rng = np.random.RandomState(seed)
    y = rng.randint(0, 3, n)
    pred = np.where(rng.rand(n) < accuracy, y, rng.randint(0, 3, n))
    return y, pred


def test_model_metrics_match_scikit_learn():
    y, pred = _random_predictions(0)
    m = model_metrics(y, pred, LABELS)
    assert m.accuracy == pytest.approx(skm.accuracy_score(y, pred))
    assert m.macro_f1 == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m.confusion_matrix == skm.confusion_matrix(y, pred, labels=[0, 1, 2]).tolist()
    precision, recall, f1, support = skm.precision_recall_fscore_support(y, pred, labels=[0, 1, 2])
    for i, label in enumerate(LABELS):
        assert m.per_category[label]["precision"] == pytest.approx(precision[i])
        assert m.per_category[label]["recall"] == pytest.approx(recall[i])
        assert m.per_category[label]["accuracy"] == pytest.approx(recall[i])
        assert m.per_category[label]["f1"] == pytest.approx(f1[i])
        assert m.per_category[label]["support"] == support[i]


def test_metrics_refuse_a_matrix_of_the_wrong_shape_or_without_examples():
    with pytest.raises(ValueError, match=r"a 3 x 3 confusion matrix with examples is needed, got shape \[2, 2\]"):
        metrics_from_confusion([[1, 0], [0, 1]], LABELS)
    with pytest.raises(ValueError, match="with 0 examples"):
        metrics_from_confusion([[0] * 3] * 3, LABELS)


@pytest.mark.parametrize("b, c", [(0, 0), (3, 9), (10, 2), (30, 12), (40, 45)])
def test_mcnemar_matches_scipy(b, c):
    # Build outcomes with b candidate-only and c baseline-only correct examples, plus agreements.
    y = np.zeros(b + c + 20, int)
    cand = np.array([0] * b + [1] * c + [0] * 10 + [1] * 10)
    base = np.array([1] * b + [0] * c + [0] * 10 + [1] * 10)
    result = mcnemar(y, cand, base)
    assert (result.candidate_only_correct, result.baseline_only_correct) == (b, c)
    if b + c == 0:
        assert result.p_value == 1.0
    elif b + c < 25:
        assert result.p_value == pytest.approx(stats.binomtest(min(b, c), b + c, 0.5).pvalue)
    else:
        expected = stats.chi2.sf((abs(b - c) - 1) ** 2 / (b + c), df=1)
        assert result.p_value == pytest.approx(expected)


def _decide(cand_acc, base_acc, **kwargs):
    y, cand = _random_predictions(1, accuracy=cand_acc)
    base = np.where(np.random.RandomState(3).rand(len(y)) < base_acc, y, (y + 1) % 3)
    args = dict(min_accuracy=0.5, min_improvement=0.01, significance_level=0.05, require_significance=False)
    args.update(kwargs)
    return decide_on(y, cand, base, LABELS, **args)


def test_better_candidate_is_blessed():
    d = _decide(0.9, 0.6)
    assert d.blessed and not d.failed_checks()
    assert d.candidate.accuracy > d.baseline.accuracy + 0.2
    assert d.mcnemar.p_value < 1e-6


def test_worse_candidate_is_refused_naming_the_threshold():
    d = _decide(0.55, 0.8)
    assert not d.blessed
    assert [c.name for c in d.failed_checks()] == ["improvement_over_baseline"]
    assert "(evaluation.min_improvement)" in d.failed_checks()[0].explanation


def test_accuracy_floor():
    d = _decide(0.4, 0.2, min_accuracy=0.6)
    assert [c.name for c in d.failed_checks()] == ["accuracy_floor"]
    assert "mcnemar_significance" not in [c.name for c in d.checks]  # reported, not gated by default
    assert 0.0 <= d.mcnemar.p_value <= 1.0


def test_required_significance_refuses_a_small_gain():
    # 100 examples; the models disagree on 5: candidate right on 4 of them, baseline on 1.
    y = np.zeros(100, int)
    cand = np.array([0] * 80 + [0] * 4 + [1] * 1 + [1] * 15)
    base = np.array([0] * 80 + [1] * 4 + [0] * 1 + [1] * 15)
    common = dict(min_accuracy=0.5, min_improvement=0.01, significance_level=0.05)
    plain = decide_on(y, cand, base, LABELS[:2], require_significance=False, **common)
    assert plain.blessed  # +3 points of accuracy
    strict = decide_on(y, cand, base, LABELS[:2], require_significance=True, **common)
    assert not strict.blessed
    assert [c.name for c in strict.failed_checks()] == ["mcnemar_significance"]
    assert strict.mcnemar.p_value == pytest.approx(stats.binomtest(1, 5, 0.5).pvalue)  # 0.375


def test_mcnemar_refuses_negative_counts():
    with pytest.raises(ValueError, match="must be >= 0"):
        mcnemar_from_counts(-1, 2)


def test_gate_refuses_tfma_results_that_disagree_with_each_other():
    from placedemarche.components.model_gate.executor import check_consistency
    from placedemarche.components.model_gate.decision import metrics_from_confusion

    labels = ["a", "b"]
    cand = metrics_from_confusion([[3, 1], [0, 4]], labels)  # 7 of 8 right
    base = metrics_from_confusion([[2, 2], [1, 3]], labels)  # 5 of 8 right
    results = {"candidate": {"accuracy": 7 / 8, "examples": 8}, "baseline": {"accuracy": 5 / 8, "examples": 8},
               "paired": {"candidate_only_correct": 3, "baseline_only_correct": 1, "both_correct": 4, "both_wrong": 0}}
    check_consistency(results, cand, base, "here")  # consistent: no error
    results["paired"]["both_wrong"] = 1  # 9 examples paired, 8 in the matrices
    with pytest.raises(RuntimeError, match="paired outcomes .* do not add up"):
        check_consistency(results, cand, base, "here")
    results["paired"]["both_wrong"] = 0
    results["baseline"]["accuracy"] = 0.5
    with pytest.raises(RuntimeError, match="baseline accuracy 0.5 vs 0.625"):
        check_consistency(results, cand, base, "here")
