"""ModelGate: blesses the candidate only if it beats the baseline on the held-out test split.

Inputs: ``examples`` (the ingested splits; lineage), ``candidate`` and ``baseline`` (Trainer models:
their label sets), and the ``CandidateEvaluator``'s ``evaluation`` (TFMA's metrics, paired outcomes
and thresholds of every candidate on the ``split`` it evaluated; this gate reads its candidate's).
Parameters: the evaluation section of the config. Outputs: ``blessing`` (a standard
``ModelBlessing``, so TFX's Pusher honours it) and ``comparison`` (``ModelComparison``:
``comparison.json`` with both models' metrics, confusion matrices, McNemar and every check).
With ``champion`` (the ``ChampionResolver``'s output) the candidate must also not fall more than
``champion_tolerance`` below the served champion the evaluation compared it with (check
``not_worse_than_champion``; ``comparison.json``'s ``champion`` block: version, metrics, McNemar).
"""

from __future__ import annotations

from typing import Optional

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
        "champion_tolerance": ExecutionParameter(type=float, optional=True),
    }
    INPUTS = {
        executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        executor.CANDIDATE_KEY: ChannelParameter(type=standard_artifacts.Model),
        executor.BASELINE_KEY: ChannelParameter(type=standard_artifacts.Model),
        # TFX Evaluator's outputs: the gate reads TFMA's results and runs no model itself.
        executor.EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation),
        # The served champion (ChampionResolver): which version the evaluation compared the candidate with.
        executor.CHAMPION_KEY: ChannelParameter(type=standard_artifacts.Model, optional=True),
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
        champion: Optional[types.BaseChannel] = None,
        champion_tolerance: float = 0.0,
    ):
        super().__init__(spec=ModelGateSpec(
            examples=examples, candidate=candidate, baseline=baseline, split=split,
            evaluation=evaluation, champion=champion, champion_tolerance=champion_tolerance,
            min_accuracy=min_accuracy, min_improvement=min_improvement,
            significance_level=significance_level, require_significance=int(require_significance),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing),
            comparison=types.Channel(type=ModelComparison),
        ))
