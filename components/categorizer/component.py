"""BatchCategorizer: the pushed model categorises the catalogue's listings that have no category.

Inputs: ``unlabelled`` (CatalogueExampleGen's ``Examples`` of the rows without a category) and
``pushed_model`` (the ServingPusher's). Parameters: ``flag_threshold``, ``review_threshold``,
``batch_size`` (the config's ``categorize.*``). Output: ``categorized`` (its own artifact type,
``placedemarche.Categorization``) holding the same files as ``placedemarche categorize``:
``predictions.csv``, ``rejected.csv``, ``review_queue.csv`` and ``summary.json``. When nothing was
pushed in the run the step says so (``SKIPPED`` and ``summary.json`` with the Pusher's reason) and
categorises nothing.

Why not TFX's BulkInferrer: it takes a blessed ``Model`` (not what was pushed: the Pusher picks one
of several candidates), writes ``PredictionLog`` protos only, and would need a second step for the
top 3, the review queue and the CSV files people read; this component calls the pushed SavedModel's
``serving_default`` directly, in batches, through the same library as the CLI (``categorize.py``).
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.artifact import Artifact
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from placedemarche.components.categorizer import constants, executor


class Categorization(Artifact):
    """Predictions, rejected rows and a review queue for a batch of listings."""

    TYPE_NAME = constants.CATEGORIZATION_TYPE_NAME


class BatchCategorizerSpec(ComponentSpec):
    PARAMETERS = {
        "flag_threshold": ExecutionParameter(type=float),
        "review_threshold": ExecutionParameter(type=float),
        "batch_size": ExecutionParameter(type=int),
    }
    INPUTS = {
        constants.UNLABELLED_KEY: ChannelParameter(type=standard_artifacts.Examples),
        constants.PUSHED_KEY: ChannelParameter(type=standard_artifacts.PushedModel),
    }
    OUTPUTS = {constants.CATEGORIZED_KEY: ChannelParameter(type=Categorization)}


class BatchCategorizer(base_component.BaseComponent):
    SPEC_CLASS = BatchCategorizerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, unlabelled: types.BaseChannel, pushed_model: types.BaseChannel, flag_threshold: float = 0.9,
                 review_threshold: float = 0.6, batch_size: int = 32):
        super().__init__(spec=BatchCategorizerSpec(
            unlabelled=unlabelled, pushed_model=pushed_model, flag_threshold=flag_threshold,
            review_threshold=review_threshold, batch_size=batch_size,
            categorized=types.Channel(type=Categorization),
        ))
