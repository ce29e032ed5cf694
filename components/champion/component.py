"""ChampionResolver: which model is served now, for the evaluation to compare every candidate with.

No inputs. Parameters: ``serving_root``, ``model_name``, ``stable_version`` (0: no 'stable' label)
and ``serving_state`` (a fingerprint of the serving folder taken when the pipeline is built: a push,
rollback or override since the last run changes it, so TFX's cache resolves the champion again; on
Kubeflow, where the serving root is a runtime parameter, the compiled task's cache is turned off
instead: ``pipeline/kubeflow.py``). Output: ``champion`` (a standard ``Model`` artifact whose
``champion.json`` and properties ``served``, ``version``, ``how``, ``path``, ``reason`` say which
version is served, read from the serving folder: ``champion`` library).
"""

from __future__ import annotations

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from placedemarche.components.champion import constants as c
from placedemarche.components.champion import executor


class ChampionResolverSpec(ComponentSpec):
    PARAMETERS = {
        c.SERVING_ROOT: ExecutionParameter(type=str),
        c.MODEL_NAME: ExecutionParameter(type=str),
        c.STABLE_VERSION: ExecutionParameter(type=int),
        c.SERVING_STATE: ExecutionParameter(type=str),
    }
    INPUTS = {}
    OUTPUTS = {c.CHAMPION_KEY: ChannelParameter(type=standard_artifacts.Model)}


class ChampionResolver(base_component.BaseComponent):
    SPEC_CLASS = ChampionResolverSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, serving_root, model_name: str, stable_version: Optional[int] = None, serving_state: str = ""):
        super().__init__(spec=ChampionResolverSpec(
            serving_root=serving_root, model_name=model_name, stable_version=int(stable_version or 0),
            serving_state=serving_state, champion=types.Channel(type=standard_artifacts.Model),
        ))
