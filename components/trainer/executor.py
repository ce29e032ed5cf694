"""Executor of HeadTrainer: unpack the artifacts, call ``trainer.fit_and_export``."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from placedemarche.components.trainer import constants as c
from placedemarche.components.trainer.trainer import TrainSpec, fit_and_export
from placedemarche.serving import model_contract


def label_domain(schema_uri: Optional[str]) -> Optional[List[str]]:
    """The ``label`` feature's values in the curated schema (the model's classes), sorted; None without one."""
    if not schema_uri:
        return None
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tfx.utils import io_utils

    path = os.path.join(schema_uri, "schema.pbtxt")
    schema = io_utils.parse_pbtxt_file(path, schema_pb2.Schema())
    for domain in schema.string_domain:
        if domain.name == model_contract.LABEL_FEATURE:
            return sorted(domain.value)
    return None


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
           exec_properties: Dict[str, Any]) -> None:
        examples = artifact_utils.get_single_instance(input_dict[c.EXAMPLES_KEY])
        schema = input_dict.get(c.SCHEMA_KEY)
        features = input_dict.get(c.FEATURES_KEY)
        model = artifact_utils.get_single_instance(output_dict[c.MODEL_KEY])
        model_run = artifact_utils.get_single_instance(output_dict[c.MODEL_RUN_KEY])
        spec = TrainSpec.from_dicts(json.loads(exec_properties[c.SPEC]), {})
        hyperparameters = input_dict.get(c.HYPERPARAMETERS_KEY)
        test_features = input_dict.get(c.TEST_FEATURES_KEY)
        tuned = None
        if hyperparameters:
            from placedemarche.components.tuner.executor import read_best_values

            tuned = read_best_values(artifact_utils.get_single_uri(hyperparameters))
        metadata = fit_and_export(
            spec,
            train_files=[os.path.join(examples.uri, "Split-train", "*.gz")],
            eval_files=[os.path.join(examples.uri, "Split-eval", "*.gz")],
            serving_model_dir=os.path.join(model.uri, model_contract.TRAINER_SERVING_SUBDIR),
            model_run_dir=model_run.uri,
            vocabulary=label_domain(artifact_utils.get_single_uri(schema) if schema else None),
            features_dir=artifact_utils.get_single_uri(features) if features else None,
            tuned=tuned,
            test_features_dir=artifact_utils.get_single_uri(test_features) if test_features else None,
            # Read only with tuned values, after both recipes are trained: the comparison's test accuracy.
            test_files=[os.path.join(examples.uri, "Split-test", "*.gz")] if tuned is not None else (),
        )
        model.set_string_custom_property("candidate", spec.name)
        model.set_string_custom_property(c.ROLE, exec_properties[c.ROLE])
        model.set_string_custom_property("backbone", spec.backbone)
        model.set_string_custom_property("text_columns", ",".join(spec.text_columns))
        model.set_float_custom_property("val_accuracy", float(metadata["val_accuracy"]))
        if "tuning" in metadata:
            model.set_string_custom_property("tuned", ",".join(metadata["tuning"]["changed"]) or "(defaults kept)")
