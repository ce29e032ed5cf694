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

from placedemarche.components.infra_validator import constants, warmup
from placedemarche.components.infra_validator.constants import (  # noqa: F401 (re-exported)
    BLESSING_KEY,
    EXAMPLES_KEY,
    HAS_MODEL,
    MODEL_BLESSING_KEY,
    MODEL_KEY,
    RESULT_FILE,
    SKIPPED_REASON,
)
from placedemarche.components.model_gate import predict
from placedemarche.serving import model_contract

logger = logging.getLogger(__name__)


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
           exec_properties: Dict[str, Any]) -> None:
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
        blessing = artifact_utils.get_single_instance(output_dict[BLESSING_KEY])
        blessing.set_string_custom_property("candidate", model.get_string_custom_property("candidate"))
        blessing.set_int_custom_property("model_id", model.id)
        gate = input_dict.get(MODEL_BLESSING_KEY)
        if gate and not artifact_utils.get_single_instance(gate).get_int_custom_property("blessed"):
            # Nothing will push it: loading it in a new process would only cost time.
            skip_unblessed(blessing)
            return
        split = exec_properties["split"]
        records = warmup.read_examples(
            [os.path.join(examples.uri, f"Split-{split}", "*.gz")], int(exec_properties["num_examples"])
        )
        # The copy that is validated is the copy that is pushed: same files plus the warm-up requests.
        staged = path_utils.stamped_model_path(blessing.uri)
        shutil.copytree(predict.serving_dir(model.uri), staged)
        metadata = model_contract.read_metadata(staged)
        large = warmup.large_jpeg() if model_contract.reads_images(metadata) else b""
        logs = warmup.build_requests(records, exec_properties["model_name"], metadata.get("text_columns") or (), large,
                                     reads_images=model_contract.reads_images(metadata))
        warmup.write(path_utils.warmup_file_path(staged), logs)
        result_path = os.path.join(blessing.uri, RESULT_FILE)
        result = run_probe(staged, float(exec_properties["latency_budget_ms"]), result_path,
                           int(exec_properties["timeout_seconds"]))
        passed = result.get("passed", False)
        blessing.set_int_custom_property("blessed", int(passed))
        if result.get("latency_ms"):
            blessing.set_float_custom_property(constants.LATENCY_P50, float(result["latency_ms"]["p50"]))
        blessing.set_int_custom_property(HAS_MODEL, int(passed))
        open(os.path.join(blessing.uri, constants.BLESSED_FILE if passed else constants.NOT_BLESSED_FILE), "w").close()
        if passed:
            logger.info("infra validation passed: %d requests, load %.1f s, p95 %.0f ms",
                        len(logs), result["load_seconds"], result["latency_ms"]["p95"])
        else:
            shutil.rmtree(staged)  # nothing half-validated is left to push
            logger.warning("infra validation FAILED: %s", "; ".join(result["problems"]))




def skip_unblessed(blessing) -> None:
    """Records that the model was not probed because the gate did not bless it."""
    blessing.set_int_custom_property("blessed", 0)
    blessing.set_int_custom_property(HAS_MODEL, 0)
    blessing.set_int_custom_property(constants.SKIPPED, 1)
    with open(os.path.join(blessing.uri, RESULT_FILE), "w", encoding="utf-8") as f:
        json.dump({"passed": False, "skipped": True, "problems": [SKIPPED_REASON]}, f, indent=2)
    open(os.path.join(blessing.uri, constants.NOT_BLESSED_FILE), "w").close()
    logger.info("infra validation %s", SKIPPED_REASON)


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
