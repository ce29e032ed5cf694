"""TFMA for the blessing gate: the EvalConfig given to TFX's Evaluator, and reading its results.

Every candidate and the baseline are evaluated on the held-out **test** split, in one pass
(``CandidateEvaluator``), through their ``serving_examples`` signature. The label in the examples is a string; the models also output TF Serving's
classification names ``scores`` and ``classes`` (the label vocabulary), from which TFMA maps each
string label to its class id, so no label-index feature is needed.

Metrics, for both models: accuracy (``SparseCategoricalAccuracy``), example count and the
multi-class confusion matrix (arg-max prediction); across both, the paired outcomes per example
(``tfma_paired``) for McNemar's test. Per-category precision / recall / F1 (recall is
the per-category accuracy: the share of a category's products given their category) and macro F1
are derived from TFMA's confusion matrix. TFMA's own binarized ``Precision`` / ``Recall`` with
``top_k=1`` were tried and rejected: with TFMA 0.47.1 they counted a category as predicted for every
example where its probability had underflowed to exactly 0 (precision 0.125 for a category the
model never predicted), so they are not used. Thresholds (TFMA's blessing):
the candidate's accuracy is at least ``min_accuracy`` (value threshold) and beats the baseline's by at
least ``min_improvement`` (change threshold, absolute).
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import tensorflow_model_analysis as tfma

from placedemarche.components.champion import constants as champion_constants
from placedemarche.components.model_gate import decision as decision_lib
from placedemarche.components.model_gate import tfma_paired

CANDIDATE = "candidate"
BASELINE = "baseline"
CHAMPION = champion_constants.MODEL_SPEC_NAME
SIGNATURE = "serving_examples"
LABEL_KEY = "label"
PREDICTION_KEY = "scores"
ACCURACY = "accuracy"
CONFUSION_PLOT = "multi_class_confusion_matrix_plot"


def eval_config(min_accuracy: float, min_improvement: float, candidates: Sequence[str] = (CANDIDATE,)) -> tfma.EvalConfig:
    """The evaluation's configuration: every candidate (named as in the pipeline) and the baseline, with
    the gate's thresholds on each candidate (the classes come from the models).

    Raises:
      ValueError: a candidate is named like the baseline (``baseline``), or two alike.
    """
    if {BASELINE, CHAMPION} & set(candidates) or len(set(candidates)) != len(list(candidates)):
        raise ValueError(f"candidate names must be distinct and neither '{BASELINE}' nor '{CHAMPION}' (the "
                         f"baseline's and the served champion's names in the evaluation); got {list(candidates)}")
    accuracy_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": min_accuracy}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": min_improvement}
        ),
    )
    return tfma.EvalConfig(
        model_specs=[
            *(tfma.ModelSpec(name=name, signature_name=SIGNATURE, label_key=LABEL_KEY, prediction_key=PREDICTION_KEY)
              for name in candidates),
            tfma.ModelSpec(name=BASELINE, signature_name=SIGNATURE, label_key=LABEL_KEY,
                           prediction_key=PREDICTION_KEY, is_baseline=True),
        ],
        metrics_specs=[
            tfma.MetricsSpec(metrics=[
                tfma.MetricConfig(class_name="ExampleCount"),
                tfma.MetricConfig(class_name="SparseCategoricalAccuracy", config=f'"name": "{ACCURACY}"',
                                  threshold=accuracy_threshold),
                tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot"),
                # Both models' outcomes per example, for McNemar's test (one inference pass in all).
                tfma.MetricConfig(class_name="PairedOutcomes", module=tfma_paired.__name__),
            ]),
        ],
        slicing_specs=[tfma.SlicingSpec()],
    )


def with_champion(config: tfma.EvalConfig, champion: str, paired_metric: str) -> tfma.EvalConfig:
    """``config`` with the served champion as one more model (name ``champion``, through
    ``serving_examples`` like the others, so a champion of another input contract, image only or image
    + text, reads the same tf.Examples) and every candidate's paired outcomes against it (metric
    ``paired_metric``) for McNemar's test. TFMA applies the accuracy thresholds to the champion too
    (the MetricsSpec names no model); its failures are not read (``read_results`` keeps the
    candidate's, the evaluator's ``validation_ok`` ignores the champion's)."""
    if champion in [s.name for s in config.model_specs]:
        raise ValueError(f"a model of the evaluation is already named '{champion}' (the served champion's name)")
    out = tfma.EvalConfig()
    out.CopyFrom(config)
    out.model_specs.insert(len(out.model_specs) - 1, tfma.ModelSpec(
        name=champion, signature_name=SIGNATURE, label_key=LABEL_KEY, prediction_key=PREDICTION_KEY))
    out.metrics_specs.append(tfma.MetricsSpec(metrics=[tfma.MetricConfig(
        class_name="PairedOutcomes", module=tfma_paired.__name__,
        config=f'"name": "{paired_metric}", "against": "{champion}"')]))
    return out


def read_results(evaluation_uri: str, labels: Sequence[str], candidate: str = CANDIDATE,
                 champion: str = "", champion_paired: str = "") -> Dict[str, Any]:
    """One candidate's and the baseline's metrics from a TFMA evaluation of several models, plus TFMA's
    validation of that candidate.

    Returns ``{"candidate": {...}, "baseline": {...}, "paired": {...}, "validation_ok": bool,
    "failures": [...]}`` (``paired``: the PairedOutcomes counts of ``candidate`` vs the baseline, e.g.
    ``candidate_only_correct``) where each model has ``accuracy`` (TFMA's), ``examples``,
    ``confusion_matrix`` (TFMA's; rows: true label, columns: predicted) and, derived from it,
    ``macro_f1`` and ``per_category`` (label → accuracy, precision, recall, f1, support).

    With ``champion`` (its model name in the evaluation) the result also has ``champion`` (the same
    metrics) and ``champion_paired`` (``candidate`` vs the champion; "baseline" in the outcomes' names
    is the champion), read from the metric named ``champion_paired``.

    Raises:
      ValueError: the evaluation holds no metrics of ``candidate`` (or of the ``champion`` asked for).
    """
    names = {candidate: "candidate", BASELINE: "baseline"}
    if champion:
        names[champion] = "champion"
    raw: Dict[str, Dict[str, Any]] = {role: {"confusion_matrix": _zeros(len(labels))} for role in names.values()}
    paired: Dict[str, int] = {}
    against: Dict[str, int] = {}
    champion_prefix = f"{champion_paired}_"
    for record in tfma.load_metrics(evaluation_uri):
        for kv in record.metric_keys_and_values:
            key = kv.key
            if key.is_diff and key.model_name == candidate and key.name.startswith(tfma_paired.PREFIX):
                paired[key.name[len(tfma_paired.PREFIX):]] = int(kv.value.double_value.value)
            if champion and key.is_diff and key.model_name == candidate and key.name.startswith(champion_prefix):
                against[key.name[len(champion_prefix):]] = int(kv.value.double_value.value)
            if key.is_diff or key.model_name not in names:
                continue
            role = names[key.model_name]
            if key.name == ACCURACY:
                raw[role]["accuracy"] = kv.value.double_value.value
            elif key.name == "example_count":
                raw[role]["examples"] = int(kv.value.double_value.value)
    for role, name in (("candidate", candidate), ("champion", champion)):
        if role in raw and "accuracy" not in raw[role]:
            raise ValueError(f"the evaluation in {evaluation_uri} holds no metrics of {role} '{name}'")
    for record in tfma.load_plots(evaluation_uri):
        for kv in record.plot_keys_and_values:
            if kv.key.name != CONFUSION_PLOT or kv.key.model_name not in names:
                continue
            matrix = raw[names[kv.key.model_name]]["confusion_matrix"]
            for entry in kv.value.multi_class_confusion_matrix_at_thresholds.matrices[0].entries:
                matrix[entry.actual_class_id][entry.predicted_class_id] += int(entry.num_weighted_examples)
    models = {}
    for role, values in raw.items():
        derived = decision_lib.metrics_from_confusion(values["confusion_matrix"], labels)
        models[role] = {
            "accuracy": values.get("accuracy"), "examples": values.get("examples"),
            "confusion_matrix": derived.confusion_matrix, "macro_f1": derived.macro_f1,
            "per_category": derived.per_category,
        }
    validation = tfma.load_validation_result(evaluation_uri)
    failures: List[str] = []
    for per_slice in validation.metric_validations_per_slice:
        for f in per_slice.failures:
            if f.metric_key.model_name == candidate:  # the other candidates' thresholds are theirs
                failures.append(_describe(f))
    result = {**models, "paired": paired, "validation_ok": not failures, "failures": failures}
    if champion:
        result["champion_paired"] = against
    return result


def _describe(failure) -> str:
    """One failed TFMA threshold in words, e.g. 'accuracy 0.1250 must be >= 0.6000'."""
    key, threshold = failure.metric_key, failure.metric_threshold
    value = failure.metric_value.double_value.value
    if key.is_diff:
        bound = threshold.change_threshold.absolute.value
        text = f"accuracy change vs baseline {value:+.4f} must be >= {bound:+.4f}"
    else:
        bound = threshold.value_threshold.lower_bound.value
        text = f"{key.name} {value:.4f} must be >= {bound:.4f}"
    return text + (f" ({failure.message})" if failure.message else "")


def _zeros(n: int) -> List[List[int]]:
    return [[0] * n for _ in range(n)]
