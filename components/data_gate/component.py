"""DataValidationGate: a component between ExampleValidator and the Trainers.

Input: ExampleValidator's ``anomalies``. Output: ``result`` (a ``DataValidation`` artifact with
``result.json`` and the custom property ``passed``). The Trainers take ``result`` as an input, so a
run with any anomaly stops here, with an error that names each feature and anomaly.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.artifact import Artifact
from tfx.types.component_spec import ChannelParameter, ComponentSpec

from placedemarche.components.data_gate import constants, executor


class DataValidation(Artifact):
    """The gate's verdict on a run's data (``result.json``: passed, anomalies)."""

    TYPE_NAME = constants.RESULT_TYPE_NAME


class DataValidationGateSpec(ComponentSpec):
    PARAMETERS = {}
    INPUTS = {executor.ANOMALIES_KEY: ChannelParameter(type=standard_artifacts.ExampleAnomalies)}
    OUTPUTS = {executor.RESULT_KEY: ChannelParameter(type=DataValidation)}


class DataValidationGate(base_component.BaseComponent):
    """Fails the run when ``anomalies`` holds any anomaly; else emits a passed ``result``."""

    SPEC_CLASS = DataValidationGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, anomalies: types.BaseChannel):
        super().__init__(
            spec=DataValidationGateSpec(anomalies=anomalies, result=types.Channel(type=DataValidation))
        )
