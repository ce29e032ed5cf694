"""The pipeline graph: ``create_pipeline(config, ...) -> tfx.dsl.Pipeline`` and nothing else.

Runners (``local_runner``; Kubeflow later) choose the pipeline root, the metadata store and the Beam
arguments; everything else comes from the :class:`~pipeline.config.PipelineConfig`.

Stages built so far: CatalogueExampleGen → StatisticsGen → ImportSchemaGen (curated schema) →
ExampleValidator → DataValidationGate. The Trainers, Evaluator, Pusher and SHAP component are added by
their own work items.
"""

from __future__ import annotations

from importlib import resources
from typing import Optional, Sequence

from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from components.catalogue_example_gen.component import CatalogueExampleGen, fingerprint
from components.data_gate.component import DataValidationGate
from pipeline.config import PipelineConfig

# Node ids, used by the runners and the summaries to find each stage's outputs.
EXAMPLE_GEN = "CatalogueExampleGen"
STATISTICS_GEN = "StatisticsGen"
SCHEMA_GEN = "ImportSchemaGen"
EXAMPLE_VALIDATOR = "ExampleValidator"
DATA_GATE = "DataValidationGate"
DATA_STAGES = (EXAMPLE_GEN, STATISTICS_GEN, SCHEMA_GEN, EXAMPLE_VALIDATOR, DATA_GATE)


def default_schema_file() -> str:
    """The curated schema shipped with the package (``pipeline/schema/schema.pbtxt``)."""
    return str(resources.files("pipeline") / "schema" / "schema.pbtxt")


def create_pipeline(
    config: PipelineConfig,
    pipeline_root: str,
    metadata_connection_config: Optional[metadata_store_pb2.ConnectionConfig] = None,
    beam_pipeline_args: Sequence[str] = (),
    enable_cache: bool = True,
) -> tfx.dsl.Pipeline:
    """Builds the pipeline for ``config``.

    Args:
      config: the run's configuration; ``config.data.data_dir`` must be set (the local runner puts
        the generated sample there when the user gave no catalogue).
      pipeline_root: where artifacts are written.
      metadata_connection_config: the ML Metadata store; None lets the orchestrator decide.
      beam_pipeline_args: Beam options of every Beam-based component.
      enable_cache: reuse outputs of executions with the same inputs and parameters.

    Raises:
      ValueError: ``config.data.data_dir`` is unset.
    """
    example_gen, statistics_gen = _ingestion(config)
    data = config.data
    schema_gen = tfx.components.ImportSchemaGen(
        schema_file=data.schema_file or default_schema_file()
    ).with_id(SCHEMA_GEN)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    ).with_id(EXAMPLE_VALIDATOR)
    data_gate = DataValidationGate(anomalies=example_validator.outputs["anomalies"]).with_id(DATA_GATE)

    return tfx.dsl.Pipeline(
        pipeline_name=config.name,
        pipeline_root=pipeline_root,
        components=[example_gen, statistics_gen, schema_gen, example_validator, data_gate],
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args),
    )


def create_statistics_pipeline(
    config: PipelineConfig,
    pipeline_root: str,
    metadata_connection_config: Optional[metadata_store_pb2.ConnectionConfig] = None,
    beam_pipeline_args: Sequence[str] = (),
) -> tfx.dsl.Pipeline:
    """Ingestion and statistics only: what ``placedemarche schema`` infers a new schema from."""
    example_gen, statistics_gen = _ingestion(config)
    return tfx.dsl.Pipeline(
        pipeline_name=f"{config.name}-statistics",
        pipeline_root=pipeline_root,
        components=[example_gen, statistics_gen],
        enable_cache=True,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args),
    )


def _ingestion(config: PipelineConfig):
    data = config.data
    if not data.data_dir:
        raise ValueError("config.data.data_dir is unset: the runner must name the catalogue folder")
    example_gen = CatalogueExampleGen(
        data_dir=data.data_dir,
        csv_file=data.csv_file,
        images_dir=data.images_dir,
        id_column=data.id_column,
        image_column=data.image_column,
        category_column=data.category_column,
        label_depth=data.label_depth,
        max_image_side=data.max_image_side,
        min_image_side=data.min_image_side,
        max_image_pixels=data.max_image_pixels,
        jpeg_quality=data.jpeg_quality,
        test_fraction=data.test_fraction,
        eval_fraction=data.eval_fraction,
        split_salt=data.split_salt,
        max_quarantine_fraction=data.max_quarantine_fraction,
        input_fingerprint=fingerprint(data.data_dir, data.csv_file, data.images_dir),
    ).with_id(EXAMPLE_GEN)
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"]
    ).with_id(STATISTICS_GEN)
    return example_gen, statistics_gen
