"""Executor of ModelGate: TFX Evaluator's results, McNemar's test, the decision, a ModelBlessing.

The CandidateEvaluator (TFMA) has already run every candidate and the baseline on the test split, in one pass: accuracy, the
confusion matrices and the paired outcomes per example (``tfma_paired``). This executor runs no
model. It derives the per-category metrics from TFMA's confusion matrices, McNemar's test from the
paired counts, checks that TFMA's numbers agree with each other (accuracy vs confusion matrix vs
paired counts: a disagreement means they did not describe the same evaluation, and fails the run),
and blesses only when TFMA blessed and every check here passes. A model that is not blessed is a
normal outcome (the run succeeds, nothing is pushed); errors are for what makes the comparison
impossible (different label sets, no examples).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Dict, List

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from placedemarche.components.champion import constants as champion_constants
from placedemarche.components.model_gate import constants, predict, tfma_eval
from placedemarche.components.model_gate import decision as decision_lib
from placedemarche.components.model_gate.constants import (  # noqa: F401 (re-exported)
    BASELINE_KEY,
    BLESSING_KEY,
    CANDIDATE_KEY,
    CHAMPION_KEY,
    COMPARISON_FILE,
    COMPARISON_KEY,
    EVALUATION_KEY,
    EXAMPLES_KEY,
)

logger = logging.getLogger(__name__)



def _metrics(results: Dict[str, Any], role: str, labels: List[str]) -> decision_lib.ModelMetrics:
    return decision_lib.metrics_from_confusion(results[role]["confusion_matrix"], labels)


def check_consistency(results: Dict[str, Any], candidate: decision_lib.ModelMetrics,
                      baseline: decision_lib.ModelMetrics, where: str) -> None:
    """TFMA's accuracy, confusion matrices and paired counts must describe the same examples."""
    problems = []
    for role, metrics in (("candidate", candidate), ("baseline", baseline)):
        tfma_accuracy = results[role].get("accuracy")
        if tfma_accuracy is None or abs(tfma_accuracy - metrics.accuracy) > 1e-6:
            problems.append(f"{role} accuracy {tfma_accuracy} vs {metrics.accuracy} from its confusion matrix")
        if results[role].get("examples") != metrics.examples:
            problems.append(f"{role}: {results[role].get('examples')} examples counted vs {metrics.examples} in its matrix")
    p = results.get("paired") or {}
    if set(p) != {"candidate_only_correct", "baseline_only_correct", "both_correct", "both_wrong"}:
        problems.append(f"paired outcomes missing from the evaluation (got {sorted(p)})")
    else:
        n = sum(p.values())
        cand_right = round(candidate.accuracy * candidate.examples)
        base_right = round(baseline.accuracy * baseline.examples)
        if n != candidate.examples or p["both_correct"] + p["candidate_only_correct"] != cand_right \
                or p["both_correct"] + p["baseline_only_correct"] != base_right:
            problems.append(f"paired outcomes {p} do not add up to {cand_right} and {base_right} right of {candidate.examples}")
    if problems:
        raise RuntimeError(f"TFMA's results disagree with each other ({where}): " + "; ".join(problems))


def check_champion_consistency(results: Dict[str, Any], candidate: decision_lib.ModelMetrics,
                               champion: decision_lib.ModelMetrics, where: str) -> None:
    """The champion's TFMA accuracy, confusion matrix and paired counts against the candidate agree."""
    problems = []
    if results["champion"].get("accuracy") is None or abs(results["champion"]["accuracy"] - champion.accuracy) > 1e-6:
        problems.append(f"champion accuracy {results['champion'].get('accuracy')} vs {champion.accuracy} from its "
                        "confusion matrix")
    if champion.examples != candidate.examples:
        problems.append(f"champion evaluated on {champion.examples} examples, candidate on {candidate.examples}")
    p = results.get("champion_paired") or {}
    if set(p) != {"candidate_only_correct", "baseline_only_correct", "both_correct", "both_wrong"}:
        problems.append(f"paired outcomes against the champion missing from the evaluation (got {sorted(p)})")
    elif (p["both_correct"] + p["candidate_only_correct"] != round(candidate.accuracy * candidate.examples)
          or p["both_correct"] + p["baseline_only_correct"] != round(champion.accuracy * champion.examples)):
        problems.append(f"paired outcomes against the champion {p} do not add up")
    if problems:
        raise RuntimeError(f"TFMA's results about the champion disagree with each other ({where}): " + "; ".join(problems))


def _champion_block(evaluation, champion_artifacts) -> Dict[str, Any]:
    """What the evaluation did about the served champion (its properties) and which one it is."""
    from placedemarche.components.candidate_evaluator import constants as ev
    from placedemarche.components.champion import executor as champion_executor

    record = champion_executor.read(champion_artifacts[0]) if champion_artifacts else None
    compared = bool(evaluation.get_int_custom_property(ev.CHAMPION_COMPARED)) if champion_artifacts else False
    reason = evaluation.get_string_custom_property(ev.CHAMPION_REASON)
    if record and not record["served"]:
        reason = record["reason"]  # the first run: nothing served
    reason = reason or "no champion input: compared with the baseline only"
    version = evaluation.get_int_custom_property(ev.CHAMPION_VERSION) or (record or {}).get("version") or 0
    if record and record["served"] and record["version"] != version:
        raise RuntimeError(f"the evaluation compared champion version {version}, the champion input is version "
                           f"{record['version']}: they did not describe the same serving folder")
    return {"compared": compared, "version": version or None, "reason": reason,
            "how": (record or {}).get("how"), "path": (record or {}).get("path") or None}


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
           exec_properties: Dict[str, Any]) -> None:
        candidate = artifact_utils.get_single_instance(input_dict[CANDIDATE_KEY])
        baseline = artifact_utils.get_single_instance(input_dict[BASELINE_KEY])
        evaluation = artifact_utils.get_single_instance(input_dict[EVALUATION_KEY])
        blessing = artifact_utils.get_single_instance(output_dict[BLESSING_KEY])
        comparison = artifact_utils.get_single_instance(output_dict[COMPARISON_KEY])
        cand_dir, base_dir = predict.serving_dir(candidate.uri), predict.serving_dir(baseline.uri)
        labels, baseline_labels = predict.read_labels(cand_dir), predict.read_labels(base_dir)
        if baseline_labels != labels:
            raise ValueError(
                f"candidate and baseline have different label sets ({labels} vs {baseline_labels}): "
                "they were not trained on the same data"
            )
        name = candidate.get_string_custom_property("candidate") or exec_properties.get("candidate_name") or "candidate"
        champion = _champion_block(evaluation, input_dict.get(CHAMPION_KEY) or [])
        results = tfma_eval.read_results(
            evaluation.uri, labels, name, *((tfma_eval.CHAMPION, champion_constants.PAIRED_METRIC)
                                            if champion["compared"] else ()))
        cand, base = _metrics(results, "candidate", labels), _metrics(results, "baseline", labels)
        check_consistency(results, cand, base, evaluation.uri)
        paired = results["paired"]
        decision = decision_lib.decide(
            cand, base,
            decision_lib.mcnemar_from_counts(paired["candidate_only_correct"], paired["baseline_only_correct"]),
            labels,
            decision_lib.Thresholds(
                min_accuracy=float(exec_properties["min_accuracy"]),
                min_improvement=float(exec_properties["min_improvement"]),
                significance_level=float(exec_properties["significance_level"]),
                require_significance=bool(exec_properties["require_significance"]),
            ),
        )
        decision = decision_lib.with_check(decision, decision_lib.Check(
            "tfma_evaluator", float(results["validation_ok"]), 1.0, results["validation_ok"],
            "TFMA thresholds (Evaluator): " + (
                "all passed" if results["validation_ok"] else "; ".join(results["failures"])),
        ))
        tolerance = float(exec_properties.get("champion_tolerance") or 0.0)
        champ, champ_test = None, None
        if champion["compared"]:
            champ = _metrics(results, "champion", labels)
            check_champion_consistency(results, cand, champ, evaluation.uri)
            p = results["champion_paired"]
            champ_test = decision_lib.mcnemar_from_counts(p["candidate_only_correct"], p["baseline_only_correct"])
            champion.update(accuracy=champ.accuracy, macro_f1=champ.macro_f1, examples=champ.examples,
                            per_category=champ.per_category, confusion_matrix=champ.confusion_matrix,
                            mcnemar=dataclasses.asdict(champ_test), difference=cand.accuracy - champ.accuracy)
        about = f"served version {champion['version']}" if champion["compared"] else champion["reason"]
        check = decision_lib.champion_check(cand, champ, tolerance, about, champ_test)
        decision = decision_lib.with_check(decision, check)
        champion.update(tolerance=tolerance, checks=[dataclasses.asdict(check)])
        results["evaluation_uri"] = evaluation.uri
        report = {"split": exec_properties["split"], "candidate_name": name, "candidate_model": cand_dir,
                  "baseline_model": base_dir, **decision.to_dict(), "champion": champion, "tfma": results}
        with open(os.path.join(comparison.uri, COMPARISON_FILE), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)

        # What TFX's Pusher reads (the same properties TFX's Evaluator writes).
        blessing.set_int_custom_property("blessed", int(decision.blessed))
        blessing.set_string_custom_property("current_model", candidate.uri)
        blessing.set_int_custom_property("current_model_id", candidate.id)
        blessing.set_string_custom_property("baseline_model", baseline.uri)
        blessing.set_int_custom_property("baseline_model_id", baseline.id)
        # What the Pusher compares candidates by, and how it tells them apart.
        blessing.set_string_custom_property("candidate", name)
        blessing.set_float_custom_property("accuracy", decision.candidate.accuracy)
        # One entry per failed check, as JSON (an explanation may itself hold '; ').
        blessing.set_string_custom_property("reasons", json.dumps([c.explanation for c in decision.failed_checks()]))
        open(os.path.join(blessing.uri, constants.BLESSED_FILE if decision.blessed else constants.NOT_BLESSED_FILE), "w").close()
        logger.info(
            "candidate %s %.4f vs baseline %.4f on %d %s examples, McNemar p=%.4g: %s%s",
            name, decision.candidate.accuracy, decision.baseline.accuracy, decision.candidate.examples,
            exec_properties["split"], decision.mcnemar.p_value, "BLESSED" if decision.blessed else "NOT blessed",
            "" if decision.blessed else " (" + "; ".join(c.explanation for c in decision.failed_checks()) + ")",
        )
