"""ServingPusher: publishes a blessed model as the next version under ``<serving_root>/<model_name>/``.

Inputs: ``model`` (the candidate Trainer's), ``blessing`` (ModelGate's) and, optionally,
``infra_blessing`` (the infra validator's; when given, the model must have passed it, and its
warmed-up copy is what gets pushed). Parameters:
``serving_root``, ``model_name``. Output: ``pushed_model`` (standard ``PushedModel`` with the
``pushed``, ``pushed_version`` and ``pushed_destination`` properties TFX's Pusher also records).
Unlike TFX's Pusher it writes integer versions (TF Serving's layout) and renames a staged copy into
place (see ``push``).
"""

from __future__ import annotations

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from placedemarche.components.serving_pusher import executor


class ServingPusherSpec(ComponentSpec):
    PARAMETERS = {
        "serving_root": ExecutionParameter(type=str),
        "model_name": ExecutionParameter(type=str),
    }
    INPUTS = {
        executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        executor.BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
        executor.INFRA_BLESSING_KEY: ChannelParameter(type=standard_artifacts.InfraBlessing, optional=True),
    }
    OUTPUTS = {executor.PUSHED_KEY: ChannelParameter(type=standard_artifacts.PushedModel)}


class ServingPusher(base_component.BaseComponent):
    SPEC_CLASS = ServingPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model: types.BaseChannel, blessing: types.BaseChannel, serving_root: str, model_name: str,
                 infra_blessing: Optional[types.BaseChannel] = None):
        super().__init__(spec=ServingPusherSpec(
            model=model, blessing=blessing, infra_blessing=infra_blessing, serving_root=serving_root,
            model_name=model_name,
            pushed_model=types.Channel(type=standard_artifacts.PushedModel),
        ))
