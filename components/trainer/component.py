"""HeadTrainer: trains one model's classifiers on cached backbone features (and its text) and exports it.

Inputs: ``examples`` (the ingested splits: labels, text), ``schema`` (the label domain: the model's
classes), ``features`` (the ``BackboneFeatures`` of the model's backbone; absent for a text-only
model) and, optionally, ``hyperparameters`` (a Tuner's best values) with ``test_features`` (the
test pictures' features, for the report comparing the default and the tuned recipe). Parameters: ``spec`` (the candidate's or baseline's
settings and the training recipe, JSON) and ``role`` (``candidate`` / ``baseline``). Outputs, as
TFX's Trainer writes them, so the Evaluator, the infra validator and the Pusher take them:
``model`` (``Model``: the SavedModel under ``Format-Serving``) and ``model_run`` (``ModelRun``:
``history.json``, ``history.png``, best-epoch checkpoints).

Not TFX's Trainer: that one has no input for a shared features artifact. The heads train in seconds
on the features, so this component needs no GPU; the ``BackboneFeatures`` nodes do the backbone work.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from placedemarche.components.backbone_features.component import BackboneFeaturesArtifact
from placedemarche.components.trainer import constants as c
from placedemarche.components.trainer import executor


class HeadTrainerSpec(ComponentSpec):
    PARAMETERS = {
        c.SPEC: ExecutionParameter(type=str),
        c.ROLE: ExecutionParameter(type=str),
    }
    INPUTS = {
        c.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        c.SCHEMA_KEY: ChannelParameter(type=standard_artifacts.Schema, optional=True),
        c.FEATURES_KEY: ChannelParameter(type=BackboneFeaturesArtifact, optional=True),
        c.HYPERPARAMETERS_KEY: ChannelParameter(type=standard_artifacts.HyperParameters, optional=True),
        c.TEST_FEATURES_KEY: ChannelParameter(type=BackboneFeaturesArtifact, optional=True),
    }
    OUTPUTS = {
        c.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        c.MODEL_RUN_KEY: ChannelParameter(type=standard_artifacts.ModelRun),
    }


class HeadTrainer(base_component.BaseComponent):
    SPEC_CLASS = HeadTrainerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, examples: types.BaseChannel, spec: Dict[str, Any], role: str,
                 schema: Optional[types.BaseChannel] = None, features: Optional[types.BaseChannel] = None,
                 hyperparameters: Optional[types.BaseChannel] = None,
                 test_features: Optional[types.BaseChannel] = None):
        super().__init__(spec=HeadTrainerSpec(
            examples=examples, schema=schema, features=features, hyperparameters=hyperparameters,
            test_features=test_features,
            spec=json.dumps(spec, sort_keys=True), role=role,
            model=types.Channel(type=standard_artifacts.Model),
            model_run=types.Channel(type=standard_artifacts.ModelRun),
        ))
