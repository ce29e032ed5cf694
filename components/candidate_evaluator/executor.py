"""Executor of CandidateEvaluator: TFMA over every candidate and the baseline in one Beam pipeline.

TFX's Evaluator takes one candidate and one baseline. With several candidates that means one
Evaluator per candidate, each running the baseline (VGG19) over the test split again and each paying
for its own Beam pipeline. TFMA itself evaluates any number of models against one baseline in one
pass; this executor is TFX's Evaluator executor's read-evaluate-write path with every model given.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Tuple

import apache_beam as beam
import tensorflow_model_analysis as tfma
from tfx.components.util import tfxio_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils, proto_utils

from placedemarche.components import candidate_inputs
from placedemarche.components.candidate_evaluator import constants as c
from placedemarche.components.champion import champion as champion_lib
from placedemarche.components.champion import constants as champion_constants
from placedemarche.components.champion import executor as champion_executor
from placedemarche.components.model_gate import tfma_eval
from placedemarche.serving import model_contract

logger = logging.getLogger(__name__)
_TELEMETRY = ["placedemarche", "CandidateEvaluator"]


class Executor(base_beam_executor.BaseBeamExecutor):
    @staticmethod
    def _champion(input_dict, paths: Dict[str, str], candidates) -> Tuple[str, int, str]:
        """(the champion's version folder, or "" when it is not evaluated; its version; why)."""
        artifacts = input_dict.get(c.CHAMPION_KEY) or []
        if not artifacts:
            return "", 0, "no champion input: candidates are compared with the baseline only"
        champion = champion_executor.read(artifacts[0])
        if not champion["served"]:
            return "", 0, champion["reason"]
        labels = model_contract.read_labels(next(iter(paths.values())))
        why_not = champion_lib.not_comparable(champion["path"], labels)
        if why_not:
            logger.warning("the served champion (version %s) is not compared: %s", champion["version"], why_not)
            return "", int(champion["version"]), f"version {champion['version']} is served but not compared: {why_not}"
        return champion["path"], int(champion["version"]), champion["reason"]

    def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
           exec_properties: Dict[str, Any]) -> None:
        eval_config = tfma.EvalConfig()
        proto_utils.json_to_proto(exec_properties[c.EVAL_CONFIG], eval_config)
        candidates = candidate_inputs.gather(input_dict, c.MODEL_KIND)
        baseline = artifact_utils.get_single_instance(input_dict[c.BASELINE_KEY])
        paths = {name: model_contract.serving_dir(model.uri) for name, model in candidates.items()}
        for spec in eval_config.model_specs:
            if spec.is_baseline:
                paths[spec.name] = model_contract.serving_dir(baseline.uri)
        compared, version, reason = self._champion(input_dict, paths, candidates)
        if compared:
            eval_config = tfma_eval.with_champion(eval_config, champion_constants.MODEL_SPEC_NAME,
                                                  champion_constants.PAIRED_METRIC)
            paths[champion_constants.MODEL_SPEC_NAME] = compared
        missing = [s.name for s in eval_config.model_specs if s.name not in paths]
        if missing:
            raise ValueError(f"the evaluation config names models {missing} that are not inputs ({sorted(paths)})")
        eval_config = tfma.utils.update_eval_config_with_defaults(eval_config, has_baseline=True, rubber_stamp=True)
        tfma.utils.verify_eval_config(eval_config)
        models = [tfma.default_eval_shared_model(eval_saved_model_path=paths[s.name], model_name=s.name,
                                                 eval_config=eval_config) for s in eval_config.model_specs]
        output_uri = artifact_utils.get_single_uri(output_dict[c.EVALUATION_KEY])
        split = exec_properties[c.SPLIT]
        examples = input_dict[c.EXAMPLES_KEY]
        pattern = io_utils.all_files_pattern(artifact_utils.get_split_uri(examples, split))
        logger.info("evaluating %s on the %s split in one pass", ", ".join(sorted(paths)), split)
        with self._make_beam_pipeline() as pipeline:
            if tfma.is_batched_input(models, eval_config):
                tfxio = tfxio_utils.get_tfxio_factory_from_artifact(
                    examples=examples, telemetry_descriptors=_TELEMETRY,
                    raw_record_column_name=tfma.constants.ARROW_INPUT_COLUMN)(pattern)
                data = pipeline | "ReadExamples" >> tfxio.BeamSource()
            else:
                data = pipeline | "ReadExamples" >> beam.io.ReadFromTFRecord(file_pattern=pattern)
            _ = data | "ExtractEvaluateAndWriteResults" >> tfma.ExtractEvaluateAndWriteResults(
                eval_shared_model=models, eval_config=eval_config, output_path=output_uri)
        validation = tfma.load_validation_result(output_uri)
        # The thresholds are the candidates': TFMA also applies them to the champion (a MetricsSpec
        # names no model), which must not count here; each gate reads its own candidate's failures.
        failed_models = {f.metric_key.model_name for s in validation.metric_validations_per_slice for f in s.failures}
        candidates_ok = not (failed_models - {champion_constants.MODEL_SPEC_NAME})
        evaluation = artifact_utils.get_single_instance(output_dict[c.EVALUATION_KEY])
        evaluation.set_int_custom_property("validation_ok", int(candidates_ok))
        evaluation.set_string_custom_property("models", ",".join(s.name for s in eval_config.model_specs))
        evaluation.set_int_custom_property(c.CHAMPION_COMPARED, int(bool(compared)))
        evaluation.set_int_custom_property(c.CHAMPION_VERSION, version)
        evaluation.set_string_custom_property(c.CHAMPION_REASON, reason)
        logger.info("evaluation written to %s (TFMA thresholds %s)", os.path.basename(output_uri),
                    "all passed" if candidates_ok else "not all passed")
