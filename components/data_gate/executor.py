"""Executor of DataValidationGate: passes only when ExampleValidator found no anomaly."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from placedemarche.components.data_gate import anomalies as anomalies_lib
from placedemarche.components.data_gate.constants import ANOMALIES_KEY, RESULT_FILE, RESULT_KEY  # noqa: F401 (re-exported)


class DataAnomaliesFound(RuntimeError):
    """The data does not match the schema; training must not start."""


class Executor(base_executor.BaseExecutor):
    """Reads every split's anomalies; writes ``result.json``; raises when there is any."""

    def Do(
        self,
        input_dict: Dict[str, List[Any]],
        output_dict: Dict[str, List[Any]],
        exec_properties: Dict[str, Any],
    ) -> None:
        anomalies = artifact_utils.get_single_instance(input_dict[ANOMALIES_KEY])
        result = artifact_utils.get_single_instance(output_dict[RESULT_KEY])
        splits = artifact_utils.decode_split_names(anomalies.split_names)
        findings = anomalies_lib.read_anomalies(anomalies.uri, splits)
        passed = not findings
        with open(os.path.join(result.uri, RESULT_FILE), "w", encoding="utf-8") as f:
            json.dump({"passed": passed, "anomalies": [x.to_dict() for x in findings]}, f, indent=2)
        result.set_int_custom_property("passed", int(passed))
        if not passed:
            listed = "; ".join(str(x) for x in findings[:10])
            more = f" (and {len(findings) - 10} more)" if len(findings) > 10 else ""
            raise DataAnomaliesFound(
                f"{len(findings)} data anomal{'y' if len(findings) == 1 else 'ies'} against the schema, "
                f"training stopped: {listed}{more}. Fix the data, or if the change is intended, "
                "regenerate the schema with 'placedemarche schema'."
            )
