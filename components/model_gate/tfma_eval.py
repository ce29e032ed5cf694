"""TFMA for the blessing gate: the EvalConfig given to TFX's Evaluator, and reading its results.

Both models are evaluated on the held-out **test** split through their ``serving_examples``
signature. The label in the examples is a string; the models also output TF Serving's
classification names ``scores`` and ``classes`` (the label vocabulary), from which TFMA maps each
string label to its class id, so no label-index feature is needed.

Metrics, for both models: accuracy (``SparseCategoricalAccuracy``), example count, per-category
precision / recall / F1 (recall is the per-category accuracy: the share of a category's products
given their category), macro F1 and the multi-class confusion matrix. Thresholds (TFMA's blessing):
the candidate's accuracy is at least ``min_accuracy`` (value threshold) and beats the baseline's by at
least ``min_improvement`` (change threshold, absolute).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence

import tensorflow_model_analysis as tfma

CANDIDATE = "candidate"
BASELINE = "baseline"
SIGNATURE = "serving_examples"
LABEL_KEY = "label"
PREDICTION_KEY = "scores"
ACCURACY = "accuracy"
MACRO_F1 = "macro_f1"
# TFMA class name -> the metric name it writes
PER_CLASS = {"Precision": "precision", "Recall": "recall", "F1Score": "f1_score"}
CONFUSION_PLOT = "multi_class_confusion_matrix_plot"


def eval_config(num_classes: int, min_accuracy: float, min_improvement: float) -> tfma.EvalConfig:
    """The Evaluator's configuration for ``num_classes`` categories and the gate's thresholds."""
    if num_classes < 2:
        raise ValueError(f"the gate needs at least 2 categories, got {num_classes}")
    class_ids = list(range(num_classes))
    accuracy_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": min_accuracy}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": min_improvement}
        ),
    )
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(name=CANDIDATE, signature_name=SIGNATURE, label_key=LABEL_KEY,
                           prediction_key=PREDICTION_KEY),
            tfma.ModelSpec(name=BASELINE, signature_name=SIGNATURE, label_key=LABEL_KEY,
                           prediction_key=PREDICTION_KEY, is_baseline=True),
        ],
        metrics_specs=[
            tfma.MetricsSpec(metrics=[
                tfma.MetricConfig(class_name="ExampleCount"),
                tfma.MetricConfig(class_name="SparseCategoricalAccuracy", config=f'"name": "{ACCURACY}"',
                                  threshold=accuracy_threshold),
                tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot"),
            ]),
            tfma.MetricsSpec(
                binarize=tfma.BinarizationOptions(class_ids={"values": class_ids}),
                metrics=[tfma.MetricConfig(class_name=c) for c in PER_CLASS],
            ),
            tfma.MetricsSpec(
                aggregate=tfma.AggregationOptions(macro_average=True, class_weights={i: 1.0 for i in class_ids}),
                metrics=[tfma.MetricConfig(class_name="F1Score", config=f'"name": "{MACRO_F1}"')],
            ),
        ],
        slicing_specs=[tfma.SlicingSpec()],
    )


def read_results(evaluation_uri: str, labels: Sequence[str]) -> Dict[str, Any]:
    """The Evaluator's metrics for both models, by model name, plus TFMA's validation.

    Returns ``{"candidate": {...}, "baseline": {...}, "validation_ok": bool, "failures": [...]}``
    where each model has ``accuracy``, ``examples``, ``macro_f1``, ``per_category``
    (label → precision / recall / f1) and ``confusion_matrix`` (rows: true label, columns: predicted).
    """
    models: Dict[str, Dict[str, Any]] = {
        name: {"per_category": {l: {} for l in labels}, "confusion_matrix": _zeros(len(labels))}
        for name in (CANDIDATE, BASELINE)
    }
    for record in tfma.load_metrics(evaluation_uri):
        for kv in record.metric_keys_and_values:
            key = kv.key
            if key.is_diff or key.model_name not in models:
                continue
            value = kv.value.double_value.value
            model = models[key.model_name]
            if key.name in PER_CLASS.values() and key.sub_key.HasField("class_id"):
                model["per_category"][labels[key.sub_key.class_id.value]][_short(key.name)] = _finite(value)
            elif key.name == ACCURACY:
                model["accuracy"] = value
            elif key.name == "example_count":
                model["examples"] = int(value)
            elif key.name == MACRO_F1:
                model["macro_f1"] = _finite(value)
    for record in tfma.load_plots(evaluation_uri):
        for kv in record.plot_keys_and_values:
            if kv.key.name != CONFUSION_PLOT or kv.key.model_name not in models:
                continue
            matrix = models[kv.key.model_name]["confusion_matrix"]
            for entry in kv.value.multi_class_confusion_matrix_at_thresholds.matrices[0].entries:
                matrix[entry.actual_class_id][entry.predicted_class_id] += int(entry.num_weighted_examples)
    validation = tfma.load_validation_result(evaluation_uri)
    failures: List[str] = []
    for failure in validation.metric_validations_per_slice:
        for f in failure.failures:
            failures.append(f"{'change of ' if f.metric_key.is_diff else ''}{f.metric_key.name} = "
                            f"{f.metric_value.double_value.value:.4f}: {f.message}")
    return {**models, "validation_ok": bool(validation.validation_ok), "failures": failures}


def _short(name: str) -> str:
    return "f1" if name == "f1_score" else name


def _finite(value: float):
    """TFMA writes NaN where a ratio is undefined (e.g. precision of a category never predicted)."""
    return None if math.isnan(value) else value


def _zeros(n: int) -> List[List[int]]:
    return [[0] * n for _ in range(n)]
