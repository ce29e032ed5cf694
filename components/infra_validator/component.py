"""LocalInfraValidator: is the candidate servable? Checked without Docker or a TF Serving binary.

Inputs: ``model`` (the candidate Trainer's), ``examples`` (real test examples become the
requests) and, optionally, ``model_blessing`` (the model gate's: a model it did not bless is not
probed, and the blessing says ``skipped``). Parameters: ``model_name``, ``latency_budget_ms``, ``num_examples``, ``timeout_seconds``,
``split``. Output: ``blessing`` (a standard ``InfraBlessing``, as TFX's InfraValidator writes it:
``blessed`` and ``has_model`` properties, ``INFRA_BLESSED`` / ``INFRA_NOT_BLESSED`` file, and on
success the model with ``assets.extra/tf_serving_warmup_requests`` under ``stamped_model/``, which
the Pusher publishes), plus ``infra_validation.json`` (every check, latencies, load time).

This is the closest check to TF Serving that runs without it: a fresh process loads the SavedModel
through its signatures and answers the warm-up requests TF Serving itself will replay. With a
Docker engine or a cluster, ``evaluation.infra_validator: docker|kubernetes`` uses TFX's
InfraValidator with the real TF Serving image instead (see ``pipeline.pipeline``).
"""

from __future__ import annotations

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from placedemarche.components.infra_validator import executor


class LocalInfraValidatorSpec(ComponentSpec):
    PARAMETERS = {
        "model_name": ExecutionParameter(type=str),
        "latency_budget_ms": ExecutionParameter(type=float),
        "num_examples": ExecutionParameter(type=int),
        "timeout_seconds": ExecutionParameter(type=int),
        "split": ExecutionParameter(type=str),
    }
    INPUTS = {
        executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        executor.MODEL_BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing, optional=True),
    }
    OUTPUTS = {executor.BLESSING_KEY: ChannelParameter(type=standard_artifacts.InfraBlessing)}


class LocalInfraValidator(base_component.BaseComponent):
    SPEC_CLASS = LocalInfraValidatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model: types.BaseChannel, examples: types.BaseChannel, model_name: str,
                 latency_budget_ms: float, num_examples: int = 8, timeout_seconds: int = 600,
                 split: str = "test", model_blessing: Optional[types.BaseChannel] = None):
        super().__init__(spec=LocalInfraValidatorSpec(
            model=model, examples=examples, model_blessing=model_blessing, model_name=model_name, latency_budget_ms=latency_budget_ms,
            num_examples=num_examples, timeout_seconds=timeout_seconds, split=split,
            blessing=types.Channel(type=standard_artifacts.InfraBlessing),
        ))
