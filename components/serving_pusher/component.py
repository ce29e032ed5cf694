"""ServingPusher: publishes the best blessed candidate as the next version under ``<serving_root>/<model_name>/``.

Inputs (each the union over every candidate): ``model`` (the candidates' Trainers'), ``blessing``
(their ModelGates') and, optionally, ``infra_blessing`` (their infra validators'; when given, a model
must have passed it, and its warmed-up copy is what gets pushed). Among the candidates that are
blessed and infra-validated, the one with the best test accuracy is pushed (ties: the cheaper to
serve; ``select``); ``selection.json`` in the output says what each candidate got and why. Parameters:
``serving_root``, ``model_name``. Output: ``pushed_model`` (standard ``PushedModel`` with the
``pushed``, ``pushed_version`` and ``pushed_destination`` properties TFX's Pusher also records).
The output also carries ``pushed_candidate`` and ``best_candidate`` (what the explainer explains).
Unlike TFX's Pusher it writes integer versions (TF Serving's layout) and renames a staged copy into
place (see ``push``).
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from placedemarche.components import candidate_inputs
from placedemarche.components.serving_pusher import executor


class ServingPusherSpec(ComponentSpec):
    """The fixed part; one ``model``, ``blessing`` and ``infra_blessing`` input per candidate is added
    by :class:`ServingPusher` (``components/candidate_inputs.py``)."""

    PARAMETERS = {
        "serving_root": ExecutionParameter(type=str),
        "model_name": ExecutionParameter(type=str),
    }
    INPUTS: Dict[str, ChannelParameter] = {}
    OUTPUTS = {executor.PUSHED_KEY: ChannelParameter(type=standard_artifacts.PushedModel)}
    PER_CANDIDATE = {
        executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        executor.BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
        executor.INFRA_BLESSING_KEY: ChannelParameter(type=standard_artifacts.InfraBlessing, optional=True),
    }


class ServingPusher(base_component.BaseComponent):
    SPEC_CLASS = ServingPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, models: Mapping[str, types.BaseChannel], blessings: Mapping[str, types.BaseChannel],
                 serving_root: str, model_name: str,
                 infra_blessings: Optional[Mapping[str, types.BaseChannel]] = None):
        """``models``, ``blessings`` and ``infra_blessings``: candidate name → that candidate's channel."""
        names = sorted(models)
        if set(blessings) != set(names) or (infra_blessings is not None and set(infra_blessings) != set(names)):
            raise ValueError(f"every candidate needs a model, a blessing and (if any) an infra blessing: {names}")
        spec = candidate_inputs.spec_class(ServingPusherSpec, ServingPusherSpec.PER_CANDIDATE, names)
        channels = {candidate_inputs.key(executor.MODEL_KEY, n): models[n] for n in names}
        channels.update({candidate_inputs.key(executor.BLESSING_KEY, n): blessings[n] for n in names})
        channels.update({candidate_inputs.key(executor.INFRA_BLESSING_KEY, n): (infra_blessings or {}).get(n)
                         for n in names})
        super().__init__(spec=spec(
            serving_root=serving_root, model_name=model_name,
            pushed_model=types.Channel(type=standard_artifacts.PushedModel), **channels,
        ))
