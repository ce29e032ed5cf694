"""DriftGate: the newest catalogue batch against the previous one, before training.

Input: ``examples`` (CatalogueExampleGen's: the gate runs once ingestion has read the same catalogue).
Parameters: the catalogue's (``data_dir``, ``csv_file``, ``images_dir``, ``columns``,
``label_depth``, ``max_image_bytes``, ``input_fingerprint``), the thresholds ``drift_linf`` /
``drift_jsd`` and ``accept_drift``. Output: ``drift`` (a ``DriftReport``: ``drift.json`` with TFDV's
measurements, both batches' TFDV statistics; properties ``compared``, ``drifted``, ``accepted``,
``newest_batch``, ``previous_batch``). A catalogue of one batch passes (nothing to compare). When a
measurement passes its threshold the execution fails with a message naming the batches, features,
measures, values and thresholds, unless ``accept_drift``: then it passes, and the metadata store
records the decision (the parameter and the ``accepted`` property).
"""

from __future__ import annotations

import json

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.artifact import Artifact
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from placedemarche.components.catalogue_example_gen.component import CATALOGUE_PARAMETERS
from placedemarche.components.drift_gate import constants as c
from placedemarche.components.drift_gate import executor


class DriftReport(Artifact):
    """The newest batch vs the previous one (``drift.json``, both batches' TFDV statistics)."""

    TYPE_NAME = c.DRIFT_TYPE_NAME


class DriftGateSpec(ComponentSpec):
    PARAMETERS = {
        **CATALOGUE_PARAMETERS,
        c.LINF: ExecutionParameter(type=float),
        c.JSD: ExecutionParameter(type=float),
        c.ACCEPT: ExecutionParameter(type=int),
    }
    INPUTS = {c.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples)}
    OUTPUTS = {c.DRIFT_KEY: ChannelParameter(type=DriftReport)}


class DriftGate(base_component.BaseComponent):
    SPEC_CLASS = DriftGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, examples: types.BaseChannel, data_dir, images_dir: str = "Images",
                 csv_file: str = "", id_column: str = "uniq_id", image_column: str = "image",
                 category_column: str = "product_category_tree", label_depth: int = 1,
                 max_image_bytes: int = 50 * 1024 * 1024, drift_linf: float = 0.1, drift_jsd: float = 0.2,
                 accept_drift: bool = False, input_fingerprint: str = ""):
        """See ``pipeline.config.DataConfig`` for the meaning of each argument."""
        super().__init__(spec=DriftGateSpec(
            examples=examples, data_dir=data_dir, csv_file=csv_file or "", images_dir=images_dir,
            columns=json.dumps({"id": id_column, "image": image_column, "category": category_column}),
            label_depth=label_depth, max_image_bytes=max_image_bytes, input_fingerprint=input_fingerprint or "",
            drift_linf=drift_linf, drift_jsd=drift_jsd, accept_drift=int(accept_drift),
            drift=types.Channel(type=DriftReport),
        ))
