"""ShapExplainer: SHAP explanations of the candidate on a few test pictures per category.

Inputs: ``model`` (the candidate Trainer's) and ``examples``. Parameters: ``images_per_class``,
``masker`` (``inpaint_telea``, ``inpaint_ns``, ``blur``, ``mean``), ``max_evals``, ``batch_size``,
``top_k``, ``split``. Output: ``explanation`` (its own artifact type, ``placedemarche.Explanation``,
so the metadata store shows it in the run's lineage) holding ``shap_values.npz``,
``overlays/*.png``, ``index.json`` (id, true label, predicted label, probability) and
``index.html``.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.artifact import Artifact
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from placedemarche.components.shap_explainer import executor


class Explanation(Artifact):
    """SHAP values, overlays, an index and an HTML page of explained pictures."""

    TYPE_NAME = "placedemarche.Explanation"


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
        executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {executor.EXPLANATION_KEY: ChannelParameter(type=Explanation)}


class ShapExplainer(base_component.BaseComponent):
    SPEC_CLASS = ShapExplainerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model: types.BaseChannel, examples: types.BaseChannel, images_per_class: int = 1,
                 masker: str = "inpaint_telea", max_evals: int = 300, batch_size: int = 50, top_k: int = 3,
                 split: str = "test"):
        super().__init__(spec=ShapExplainerSpec(
            model=model, examples=examples, images_per_class=images_per_class, masker=masker,
            max_evals=max_evals, batch_size=batch_size, top_k=top_k, split=split,
            explanation=types.Channel(type=Explanation),
        ))
