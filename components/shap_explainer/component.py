"""ShapExplainer: SHAP explanations of the pushed candidate on a few test pictures per category.

Inputs: ``model`` (the candidates' Trainers', a union), ``examples`` and, optionally,
``pushed_model`` (the Pusher's: which candidate was pushed, or the best one when none was; without
it, the only candidate). For a candidate that reads text, the listing's words are explained too. Parameters: ``images_per_class``,
``masker`` (``inpaint_telea``, ``inpaint_ns``, ``blur``, ``mean``), ``max_evals``, ``batch_size``,
``top_k``, ``split``. Output: ``explanation`` (its own artifact type, ``placedemarche.Explanation``,
so the metadata store shows it in the run's lineage) holding ``shap_values.npz``,
``overlays/*.png``, ``index.json`` (id, true label, predicted label, probability) and
``index.html``.
"""

from __future__ import annotations

from typing import Mapping, Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.artifact import Artifact
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from placedemarche.components import candidate_inputs
from placedemarche.components.shap_explainer import constants, executor


class Explanation(Artifact):
    """SHAP values, overlays, an index and an HTML page of explained pictures."""

    TYPE_NAME = constants.EXPLANATION_TYPE_NAME


class ShapExplainerSpec(ComponentSpec):
    PARAMETERS = {
        "images_per_class": ExecutionParameter(type=int),
        "masker": ExecutionParameter(type=str),
        "max_evals": ExecutionParameter(type=int),
        "batch_size": ExecutionParameter(type=int),
        "top_k": ExecutionParameter(type=int),
        "split": ExecutionParameter(type=str),
    }
    INPUTS = {
        executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        executor.PUSHED_KEY: ChannelParameter(type=standard_artifacts.PushedModel, optional=True),
    }
    OUTPUTS = {executor.EXPLANATION_KEY: ChannelParameter(type=Explanation)}
    # One ``model__<candidate>`` input per candidate (``components/candidate_inputs.py``).
    PER_CANDIDATE = {executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model)}


class ShapExplainer(base_component.BaseComponent):
    SPEC_CLASS = ShapExplainerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, models: Mapping[str, types.BaseChannel], examples: types.BaseChannel, images_per_class: int = 1,
                 masker: str = "inpaint_telea", max_evals: int = 300, batch_size: int = 50, top_k: int = 3,
                 split: str = "test", pushed_model: Optional[types.BaseChannel] = None):
        """``models``: candidate name → that candidate's Trainer model."""
        spec = candidate_inputs.spec_class(ShapExplainerSpec, ShapExplainerSpec.PER_CANDIDATE, sorted(models))
        super().__init__(spec=spec(
            examples=examples, pushed_model=pushed_model,
            **{candidate_inputs.key(executor.MODEL_KEY, n): c for n, c in models.items()}, images_per_class=images_per_class, masker=masker,
            max_evals=max_evals, batch_size=batch_size, top_k=top_k, split=split,
            explanation=types.Channel(type=Explanation),
        ))
