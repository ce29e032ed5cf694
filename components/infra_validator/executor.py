"""Executor of LocalInfraValidator: stage the model with its warm-up file, probe it in a new process."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from typing import Any, Dict, List

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from placedemarche.components.infra_validator import warmup
from placedemarche.components.model_gate import predict

logger = logging.getLogger(__name__)

MODEL_KEY = "model"
EXAMPLES_KEY = "examples"
BLESSING_KEY = "blessing"
RESULT_FILE = "infra_validation.json"
# The custom property TFX's Pusher reads to push the warmed-up copy (TFX's own InfraValidator sets it).
HAS_MODEL = "has_model"


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
           exec_properties: Dict[str, Any]) -> None:
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
        blessing = artifact_utils.get_single_instance(output_dict[BLESSING_KEY])
        split = exec_properties["split"]
        records = warmup.read_examples(
            [os.path.join(examples.uri, f"Split-{split}", "*.gz")], int(exec_properties["num_examples"])
        )
        # The copy that is validated is the copy that is pushed: same files plus the warm-up requests.
        staged = path_utils.stamped_model_path(blessing.uri)
        shutil.copytree(predict.serving_dir(model.uri), staged)
        logs = warmup.build_requests(records, exec_properties["model_name"])
        warmup.write(path_utils.warmup_file_path(staged), logs)
        result_path = os.path.join(blessing.uri, RESULT_FILE)
        result = run_probe(staged, float(exec_properties["latency_budget_ms"]), result_path,
                           int(exec_properties["timeout_seconds"]))
        passed = result.get("passed", False)
        blessing.set_int_custom_property("blessed", int(passed))
        blessing.set_int_custom_property(HAS_MODEL, int(passed))
        open(os.path.join(blessing.uri, "INFRA_BLESSED" if passed else "INFRA_NOT_BLESSED"), "w").close()
        if passed:
            logger.info("infra validation passed: %d requests, load %.1f s, p95 %.0f ms",
                        len(logs), result["load_seconds"], result["latency_ms"]["p95"])
        else:
            shutil.rmtree(staged)  # nothing half-validated is left to push
            logger.warning("infra validation FAILED: %s", "; ".join(result["problems"]))


def run_probe(model_dir: str, budget_ms: float, result_path: str, timeout_seconds: int) -> Dict[str, Any]:
    """Runs ``probe`` in a new interpreter; returns its result (a failure result if it crashed)."""
    command = [sys.executable, "-m", "placedemarche.components.infra_validator.probe", model_dir,
               "--budget-ms", str(budget_ms), "--out", result_path]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        result = {"passed": False, "problems": [
            f"the model did not load and answer within {timeout_seconds} s (evaluation.infra_timeout_seconds)"]}
    else:
        if os.path.exists(result_path):
            with open(result_path, encoding="utf-8") as f:
                return json.load(f)
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        result = {"passed": False, "problems": [f"the probe process exited with {done.returncode}: {tail}"]}
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return result
