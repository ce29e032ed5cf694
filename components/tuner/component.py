"""HeadTuner: searches a candidate's head settings on the cached backbone features (KerasTuner).

Inputs: ``examples`` (the ingested splits; the Tuner reads ``train`` and ``eval`` only), ``schema``
(the label domain), ``features`` (the ``BackboneFeatures`` of the candidate's backbone, the very
artifact its Trainer reads; absent for a text-only candidate). Parameters: ``spec`` (the candidate's
recipe as its Trainer gets it: its values are the defaults) and ``tuning`` (algorithm, trials, seed).
Outputs, with TFX's Tuner's keys and files so either reads the same way: ``best_hyperparameters``
(``HyperParameters``: ``best_hyperparameters.txt``, KerasTuner's config JSON; the Trainer's
``hyperparameters`` input) and ``tuner_results`` (``TunerResults``: ``tuner_results.json``, plus
``tuning.json``: defaults vs best values, eval accuracy of both, every trial).

Not TFX's Tuner: that one trains through a module's ``tuner_fn`` on examples (end to end per
trial) and has no input for the shared features artifact; here a trial trains the head only.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from placedemarche.components.backbone_features.component import BackboneFeaturesArtifact
from placedemarche.components.tuner import constants as c
from placedemarche.components.tuner import executor


class HeadTunerSpec(ComponentSpec):
    PARAMETERS = {
        c.SPEC: ExecutionParameter(type=str),
        c.TUNING: ExecutionParameter(type=str),
    }
    INPUTS = {
        c.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        c.SCHEMA_KEY: ChannelParameter(type=standard_artifacts.Schema, optional=True),
        c.FEATURES_KEY: ChannelParameter(type=BackboneFeaturesArtifact, optional=True),
    }
    OUTPUTS = {
        c.BEST_HYPERPARAMETERS_KEY: ChannelParameter(type=standard_artifacts.HyperParameters),
        c.TUNER_RESULTS_KEY: ChannelParameter(type=standard_artifacts.TunerResults),
    }


class HeadTuner(base_component.BaseComponent):
    SPEC_CLASS = HeadTunerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, examples: types.BaseChannel, spec: Dict[str, Any], tuning: Dict[str, Any],
                 schema: Optional[types.BaseChannel] = None, features: Optional[types.BaseChannel] = None):
        super().__init__(spec=HeadTunerSpec(
            examples=examples, schema=schema, features=features,
            spec=json.dumps(spec, sort_keys=True), tuning=json.dumps(tuning, sort_keys=True),
            best_hyperparameters=types.Channel(type=standard_artifacts.HyperParameters),
            tuner_results=types.Channel(type=standard_artifacts.TunerResults),
        ))
