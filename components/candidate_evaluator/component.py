"""CandidateEvaluator: TFMA on the test split for every candidate against the baseline, in one pass.

Inputs: ``examples``, ``baseline_model`` (the VGG19 baseline Trainer's), one ``model__<candidate>``
per candidate (``components/candidate_inputs.py``) and, optionally, ``champion_model`` (the
``ChampionResolver``'s: when a version is served and knows the same categories, it is evaluated in
the same pass as ``champion``, with every candidate's paired outcomes against it; the evaluation's
properties ``champion_compared``, ``champion_version`` and ``champion_reason`` say what was done). Parameters: ``eval_config`` (a ``tfma.EvalConfig``
naming each candidate and the baseline, with the gate's thresholds: ``model_gate/tfma_eval.py``) and
``split``. Output: ``evaluation`` (a standard ``ModelEvaluation``: TFMA's metrics, plots and
validation result for every model, read by each candidate's ``ModelGate``).

Why not TFX's Evaluator: it takes one candidate and one baseline, so several candidates cost one
Evaluator each, every one of them running the baseline over the test split again.
"""

from __future__ import annotations

from typing import Mapping, Optional

import tensorflow_model_analysis as tfma
from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter
from tfx.utils import proto_utils

from placedemarche.components import candidate_inputs
from placedemarche.components.candidate_evaluator import constants as c
from placedemarche.components.candidate_evaluator import executor


class CandidateEvaluatorSpec(ComponentSpec):
    PARAMETERS = {
        c.EVAL_CONFIG: ExecutionParameter(type=str),
        c.SPLIT: ExecutionParameter(type=str),
    }
    INPUTS = {
        c.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        c.BASELINE_KEY: ChannelParameter(type=standard_artifacts.Model),
        c.CHAMPION_KEY: ChannelParameter(type=standard_artifacts.Model, optional=True),
    }
    OUTPUTS = {c.EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation)}
    PER_CANDIDATE = {c.MODEL_KIND: ChannelParameter(type=standard_artifacts.Model)}


class CandidateEvaluator(base_beam_component.BaseBeamComponent):
    SPEC_CLASS = CandidateEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, examples: types.BaseChannel, models: Mapping[str, types.BaseChannel],
                 baseline_model: types.BaseChannel, eval_config: tfma.EvalConfig, split: str = "test",
                 champion_model: Optional[types.BaseChannel] = None):
        spec = candidate_inputs.spec_class(CandidateEvaluatorSpec, CandidateEvaluatorSpec.PER_CANDIDATE, sorted(models))
        super().__init__(spec=spec(
            examples=examples, baseline_model=baseline_model, champion_model=champion_model, split=split,
            eval_config=proto_utils.proto_to_json(eval_config),
            evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
            **{candidate_inputs.key(c.MODEL_KIND, name): channel for name, channel in models.items()},
        ))
