"""BackboneFeatures: the frozen backbone's features of the train (with augmented views) and eval pictures.

Input: ``examples`` (the ingested splits). Parameters: ``backbone``, ``weights``, ``image_size``,
``views`` (1: plain pictures; n: plus n - 1 augmented views of each training picture), ``seed``,
``allow_random_weights``, ``batch_size``, ``splits`` (optional; absent: train and eval; ``test``: the
test pictures only, a separate node that only tuned candidates' Trainers read, for their comparison
of the default and tuned recipes), ``compute_dtype`` (optional:
``bfloat16`` or ``auto``, resolved on the machine that runs it; see ``trainer/precision.py``). Output: ``features`` (``placedemarche.BackboneFeatures``:
``<split>.npy``, ``<split>.ids.json``, ``features.json``; see ``components/trainer/features.py``).

One node per distinct backbone setting, whatever the number of candidates using it; TFX's cache
reuses its output across runs while the examples and parameters do not change.
"""

from __future__ import annotations

from typing import Optional, Sequence

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.artifact import Artifact
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from placedemarche.components.backbone_features import constants as c
from placedemarche.components.backbone_features import executor


class BackboneFeaturesArtifact(Artifact):
    """A frozen backbone's features of the train and eval pictures."""

    TYPE_NAME = c.FEATURES_TYPE_NAME


class BackboneFeaturesSpec(ComponentSpec):
    PARAMETERS = {
        c.BACKBONE: ExecutionParameter(type=str),
        c.WEIGHTS: ExecutionParameter(type=str),
        c.IMAGE_SIZE: ExecutionParameter(type=int),
        c.VIEWS: ExecutionParameter(type=int),
        c.SEED: ExecutionParameter(type=int),
        c.ALLOW_RANDOM_WEIGHTS: ExecutionParameter(type=int),
        c.BATCH_SIZE: ExecutionParameter(type=int),
        # Optional, so the train / eval node keeps the very same parameters (and cache keys) as before.
        c.SPLITS_PARAM: ExecutionParameter(type=str, optional=True),
        c.COMPUTE_DTYPE: ExecutionParameter(type=str, optional=True),  # absent: float32
    }
    INPUTS = {c.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples)}
    OUTPUTS = {c.FEATURES_KEY: ChannelParameter(type=BackboneFeaturesArtifact)}


class BackboneFeatures(base_component.BaseComponent):
    SPEC_CLASS = BackboneFeaturesSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, examples: types.BaseChannel, backbone: str, weights: str, image_size: int, views: int,
                 seed: int, allow_random_weights: bool, batch_size: int = 32, splits: Optional[Sequence[str]] = None,
                 compute_dtype: str = "float32"):
        super().__init__(spec=BackboneFeaturesSpec(
            examples=examples, backbone=backbone, weights=weights, image_size=image_size, views=views, seed=seed,
            allow_random_weights=int(allow_random_weights), batch_size=batch_size,
            splits=",".join(splits) if splits else None,
            compute_dtype=None if compute_dtype == "float32" else compute_dtype,
            features=types.Channel(type=BackboneFeaturesArtifact),
        ))
