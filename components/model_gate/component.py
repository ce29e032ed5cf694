"""ModelGate: blesses the candidate only if it beats the baseline on the held-out test split.

Inputs: ``examples`` (the ingested splits; lineage), ``candidate`` and ``baseline`` (Trainer models:
their label sets), and the ``CandidateEvaluator``'s ``evaluation`` (TFMA's metrics, paired outcomes
and thresholds of every candidate on the ``split`` it evaluated; this gate reads its candidate's).
Parameters: the evaluation section of the config. Outputs: ``blessing`` (a standard
``ModelBlessing``, so TFX's Pusher honours it) and ``comparison`` (``ModelComparison``:
``comparison.json`` with both models' metrics, confusion matrices, McNemar and every check).
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.artifact import Artifact
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from placedemarche.components.model_gate import constants, executor


class ModelComparison(Artifact):
    """Candidate vs baseline on the test split (``comparison.json``)."""

    TYPE_NAME = constants.COMPARISON_TYPE_NAME


class ModelGateSpec(ComponentSpec):
    PARAMETERS = {
        "split": ExecutionParameter(type=str),
        "min_accuracy": ExecutionParameter(type=float),
        "min_improvement": ExecutionParameter(type=float),
        "significance_level": ExecutionParameter(type=float),
        "require_significance": ExecutionParameter(type=int),
    }
    INPUTS = {
        executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        executor.CANDIDATE_KEY: ChannelParameter(type=standard_artifacts.Model),
        executor.BASELINE_KEY: ChannelParameter(type=standard_artifacts.Model),
        # TFX Evaluator's outputs: the gate reads TFMA's results and runs no model itself.
        executor.EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation),
    }
    OUTPUTS = {
        executor.BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
        executor.COMPARISON_KEY: ChannelParameter(type=ModelComparison),
    }


class ModelGate(base_component.BaseComponent):
    SPEC_CLASS = ModelGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        candidate: types.BaseChannel,
        baseline: types.BaseChannel,
        min_accuracy: float,
        min_improvement: float,
        significance_level: float,
        require_significance: bool,
        evaluation: types.BaseChannel,
        split: str = "test",
    ):
        super().__init__(spec=ModelGateSpec(
            examples=examples, candidate=candidate, baseline=baseline, split=split,
            evaluation=evaluation,
            min_accuracy=min_accuracy, min_improvement=min_improvement,
            significance_level=significance_level, require_significance=int(require_significance),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing),
            comparison=types.Channel(type=ModelComparison),
        ))
