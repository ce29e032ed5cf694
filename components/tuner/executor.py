"""Executor of HeadTuner: read the train and eval splits and features, call ``search.tune``, write its results."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

import tensorflow as tf
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from placedemarche.components.trainer import trainer as trainer_lib
from placedemarche.components.trainer.executor import label_domain
from placedemarche.components.tuner import constants as c
from placedemarche.components.tuner import search


def read_best_values(hyperparameters_uri: str) -> Dict[str, Any]:
    """The tuned values in a ``HyperParameters`` artifact (``best_hyperparameters.txt``'s ``values``).

    Raises:
      FileNotFoundError: the artifact holds no such file.
    """
    path = os.path.join(hyperparameters_uri, c.BEST_HYPERPARAMETERS_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"no {c.BEST_HYPERPARAMETERS_FILE} in {hyperparameters_uri}: was it written by a Tuner?")
    with tf.io.gfile.GFile(path) as f:
        return dict(json.loads(f.read())["values"])


def _write(uri: str, name: str, value: Any) -> None:
    with tf.io.gfile.GFile(os.path.join(uri, name), "w") as f:
        f.write(json.dumps(value, indent=2))


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
           exec_properties: Dict[str, Any]) -> None:
        examples = artifact_utils.get_single_instance(input_dict[c.EXAMPLES_KEY])
        schema = input_dict.get(c.SCHEMA_KEY)
        features = input_dict.get(c.FEATURES_KEY)
        spec = trainer_lib.TrainSpec.from_dicts(json.loads(exec_properties[c.SPEC]), {})
        settings = search.TuningSettings.from_dict(json.loads(exec_properties[c.TUNING]))
        train, evaluation = (os.path.join(examples.uri, f"Split-{split}", "*.gz") for split in c.SPLITS)
        data = trainer_lib.read_training_data(
            spec, [train], [evaluation], label_domain(artifact_utils.get_single_uri(schema) if schema else None))
        if spec.reads_images:
            if not features:
                raise ValueError(f"candidate '{spec.name}' reads pictures: its Tuner needs the BackboneFeatures "
                                 f"artifact of {spec.backbone} (input '{c.FEATURES_KEY}')")
            trainer_lib.load_features(spec, data, artifact_utils.get_single_uri(features))
        result = search.tune(spec, data, settings)
        best = artifact_utils.get_single_instance(output_dict[c.BEST_HYPERPARAMETERS_KEY])
        results = artifact_utils.get_single_instance(output_dict[c.TUNER_RESULTS_KEY])
        _write(best.uri, c.BEST_HYPERPARAMETERS_FILE, result.hyperparameters_config)
        _write(results.uri, c.TUNER_RESULTS_FILE, result.tuner_results())
        _write(results.uri, c.REPORT_FILE, result.report())
        best.set_string_custom_property("candidate", spec.name)
        best.set_string_custom_property("best_trial", result.best_trial)
        best.set_float_custom_property("best_val_accuracy", float(result.best.val_accuracy))
        best.set_float_custom_property("default_val_accuracy", float(result.default.val_accuracy))
