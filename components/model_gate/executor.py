"""Executor of ModelGate: both models on the test split, the decision, a ModelBlessing.

TFX's Evaluator (TFMA) has already computed both models' metrics and checked the thresholds. This
executor runs both models once more on the same test examples to get the per-example outcomes that
McNemar's paired test needs, checks that its accuracies agree with TFMA's (a disagreement means the
two did not evaluate the same thing, and fails the run), and blesses only when TFMA blessed and
every check here passes. A model that is not blessed is a normal outcome (the run succeeds, nothing is pushed); errors are
for what makes the comparison impossible (different label sets, an unknown label, no examples).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.model_gate import decision as decision_lib
from components.model_gate import predict
from components.model_gate import tfma_eval

logger = logging.getLogger(__name__)

EXAMPLES_KEY = "examples"
CANDIDATE_KEY = "candidate"
BASELINE_KEY = "baseline"
EVALUATION_KEY = "evaluation"
EVALUATOR_BLESSING_KEY = "evaluator_blessing"
BLESSING_KEY = "blessing"
COMPARISON_KEY = "comparison"
COMPARISON_FILE = "comparison.json"
PREDICTIONS_FILE = "predictions.json"


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
           exec_properties: Dict[str, Any]) -> None:
        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
        candidate = artifact_utils.get_single_instance(input_dict[CANDIDATE_KEY])
        baseline = artifact_utils.get_single_instance(input_dict[BASELINE_KEY])
        blessing = artifact_utils.get_single_instance(output_dict[BLESSING_KEY])
        comparison = artifact_utils.get_single_instance(output_dict[COMPARISON_KEY])
        split = exec_properties["split"]
        files = [os.path.join(examples.uri, f"Split-{split}", "*.gz")]

        cand_dir, base_dir = predict.serving_dir(candidate.uri), predict.serving_dir(baseline.uri)
        labels, baseline_labels = predict.read_labels(cand_dir), predict.read_labels(base_dir)
        if baseline_labels != labels:
            raise ValueError(
                f"candidate and baseline have different label sets ({labels} vs {baseline_labels}): "
                "they were not trained on the same data"
            )
        cand_probs, truth, ids = predict.predict_examples(cand_dir, files)
        base_probs, _, _ = predict.predict_examples(base_dir, files)
        index = {label: i for i, label in enumerate(labels)}
        unknown = sorted(set(truth) - set(index))
        if unknown:
            raise ValueError(f"test labels {unknown} are not among the models' labels {labels}")
        y = [index[t] for t in truth]
        decision = decision_lib.decide(
            y, cand_probs.argmax(axis=1).tolist(), base_probs.argmax(axis=1).tolist(), labels,
            min_accuracy=float(exec_properties["min_accuracy"]),
            min_improvement=float(exec_properties["min_improvement"]),
            significance_level=float(exec_properties["significance_level"]),
            require_significance=bool(exec_properties["require_significance"]),
        )
        tfma_results = self._tfma_results(input_dict, labels, decision)
        if tfma_results is not None:
            decision = decision_lib.with_check(decision, decision_lib.Check(
                "tfma_evaluator", float(tfma_results["validation_ok"]), 1.0, tfma_results["validation_ok"],
                "TFX Evaluator (TFMA) thresholds: " + (
                    "all passed" if tfma_results["validation_ok"] else "; ".join(tfma_results["failures"])),
            ))
        report = {"split": split, "candidate_model": cand_dir, "baseline_model": base_dir, **decision.to_dict(),
                  "tfma": tfma_results}
        with open(os.path.join(comparison.uri, COMPARISON_FILE), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        with open(os.path.join(comparison.uri, PREDICTIONS_FILE), "w", encoding="utf-8") as f:
            json.dump({"labels": labels, "uniq_id": ids, "true": truth,
                       "candidate": cand_probs.round(6).tolist(), "baseline": base_probs.round(6).tolist()}, f)

        # What TFX's Pusher reads (the same properties TFX's Evaluator writes).
        blessing.set_int_custom_property("blessed", int(decision.blessed))
        blessing.set_string_custom_property("current_model", candidate.uri)
        blessing.set_int_custom_property("current_model_id", candidate.id)
        blessing.set_string_custom_property("baseline_model", baseline.uri)
        blessing.set_int_custom_property("baseline_model_id", baseline.id)
        open(os.path.join(blessing.uri, "BLESSED" if decision.blessed else "NOT_BLESSED"), "w").close()
        logger.info(
            "candidate %.4f vs baseline %.4f on %d %s examples, McNemar p=%.4g: %s%s",
            decision.candidate.accuracy, decision.baseline.accuracy, decision.candidate.examples, split,
            decision.mcnemar.p_value, "BLESSED" if decision.blessed else "NOT blessed",
            "" if decision.blessed else " (" + "; ".join(c.explanation for c in decision.failed_checks()) + ")",
        )

    @staticmethod
    def _tfma_results(input_dict, labels, decision):
        """The Evaluator's metrics and validation, checked against this gate's own accuracies."""
        if not input_dict.get(EVALUATION_KEY):
            return None
        evaluation = artifact_utils.get_single_instance(input_dict[EVALUATION_KEY])
        results = tfma_eval.read_results(evaluation.uri, labels)
        for role, mine in (("candidate", decision.candidate), ("baseline", decision.baseline)):
            theirs = results[role]
            if (theirs.get("examples") != mine.examples or theirs.get("accuracy") is None
                    or abs(theirs["accuracy"] - mine.accuracy) > 1e-6
                    or theirs["confusion_matrix"] != mine.confusion_matrix):
                raise RuntimeError(
                    f"TFMA and the gate disagree on the {role}: accuracy {theirs.get('accuracy')} on "
                    f"{theirs.get('examples')} examples vs {mine.accuracy} on {mine.examples} (confusion "
                    f"matrices {'equal' if theirs['confusion_matrix'] == mine.confusion_matrix else 'differ'}); "
                    f"they must evaluate the same model on the same split (Evaluator output: {evaluation.uri})"
                )
        if input_dict.get(EVALUATOR_BLESSING_KEY):
            blessing = artifact_utils.get_single_instance(input_dict[EVALUATOR_BLESSING_KEY])
            results["evaluator_blessed"] = bool(blessing.get_int_custom_property("blessed"))
        results["evaluation_uri"] = evaluation.uri
        return results
