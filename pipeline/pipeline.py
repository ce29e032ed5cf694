"""The pipeline graph: ``create_pipeline(config, ...) -> tfx.dsl.Pipeline`` and nothing else.

Runners (``local_runner``; Kubeflow later) choose the pipeline root, the metadata store and the Beam
arguments; everything else comes from the :class:`~pipeline.config.PipelineConfig`.

Stages built so far: CatalogueExampleGen → StatisticsGen → ImportSchemaGen (curated schema) →
ExampleValidator → DataValidationGate → CandidateTrainer (EfficientNet-B7) and BaselineTrainer
(VGG19) → Evaluator (TFMA, both models on the test split, thresholds) → ModelGate (McNemar, the
blessing) and InfraValidator (the candidate loaded and queried as TF Serving would) →
ServingPusher (TF Serving layout, blessed and infra-validated models only); ShapExplainer explains
the candidate on a few test pictures per category (whether blessed or not: the review needs both).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from importlib import resources
from typing import Any, Dict, List, Optional, Sequence

from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.dsl.components.base import base_node

from placedemarche.components.catalogue_example_gen.component import CatalogueExampleGen, fingerprint
from placedemarche.components.data_gate.component import DataValidationGate
from placedemarche.components.infra_validator.component import LocalInfraValidator
from placedemarche.components.model_gate import tfma_eval
from placedemarche.components.model_gate.component import ModelGate
from placedemarche.components.serving_pusher.component import ServingPusher
from placedemarche.components.shap_explainer.component import ShapExplainer
from placedemarche.pipeline.config import PipelineConfig

# Node ids, used by the runners and the summaries to find each stage's outputs.
EXAMPLE_GEN = "CatalogueExampleGen"
STATISTICS_GEN = "StatisticsGen"
SCHEMA_GEN = "ImportSchemaGen"
EXAMPLE_VALIDATOR = "ExampleValidator"
DATA_GATE = "DataValidationGate"
DATA_STAGES = (EXAMPLE_GEN, STATISTICS_GEN, SCHEMA_GEN, EXAMPLE_VALIDATOR, DATA_GATE)
CANDIDATE_TRAINER = "CandidateTrainer"
BASELINE_TRAINER = "BaselineTrainer"
TRAINERS = (CANDIDATE_TRAINER, BASELINE_TRAINER)
EVALUATOR = "Evaluator"
MODEL_GATE = "ModelGate"
INFRA_VALIDATOR = "InfraValidator"
PUSHER = "ServingPusher"
EXPLAINER = "ShapExplainer"
ALL_NODES = DATA_STAGES + TRAINERS + (EVALUATOR, MODEL_GATE, INFRA_VALIDATOR, PUSHER, EXPLAINER)
# The TF Serving release matching the TF the models are exported with (TFX InfraValidator option).
TF_SERVING_TAG = "2.16.1"
# The Trainer entry point is named, not uploaded: the project is installed in the pipeline image.
TRAINER_RUN_FN = "placedemarche.pipeline.trainer.run_fn.run_fn"


def default_schema_file() -> str:
    """The curated schema shipped with the package (``pipeline/schema/schema.pbtxt``)."""
    return str(resources.files("placedemarche.pipeline") / "schema" / "schema.pbtxt")


def create_pipeline(
    config: PipelineConfig,
    pipeline_root: str,
    metadata_connection_config: Optional[metadata_store_pb2.ConnectionConfig] = None,
    beam_pipeline_args: Sequence[str] = (),
    enable_cache: bool = True,
    runtime_parameters: Optional[Dict[str, Any]] = None,
) -> tfx.dsl.Pipeline:
    """Builds the pipeline for ``config``: data stages, both Trainers, gate, push, explanations.

    Args:
      config: the run's configuration; ``config.data.data_dir`` must be set (the local runner puts
        the generated sample there when the user gave no catalogue).
      pipeline_root: where artifacts are written.
      metadata_connection_config: the ML Metadata store; None lets the orchestrator decide.
      beam_pipeline_args: Beam options of every Beam-based component.
      enable_cache: reuse outputs of executions with the same inputs and parameters.
      runtime_parameters: TFX ``RuntimeParameter``s that replace ``data_dir`` and / or
        ``serving_root`` (a compiled Kubeflow pipeline takes them when the run is submitted).

    Raises:
      ValueError: ``config.data.data_dir`` or ``config.serving.serving_root`` is unset.
    """
    runtime = runtime_parameters or {}
    stages = _data_stages(config, runtime.get("data_dir"))
    example_gen, _, schema_gen, _, data_gate = stages
    trainers = [
        _trainer(config, role, node_id, example_gen, schema_gen, data_gate)
        for role, node_id in (("candidate", CANDIDATE_TRAINER), ("baseline", BASELINE_TRAINER))
    ]
    evaluation = config.evaluation
    examples = example_gen.outputs["examples"]
    candidate, baseline = (t.outputs["model"] for t in trainers)
    evaluator = tfx.components.Evaluator(
        examples=examples,
        model=candidate,
        baseline_model=baseline,
        example_splits=["test"],
        eval_config=tfma_eval.eval_config(evaluation.min_accuracy, evaluation.min_improvement),
    ).with_id(EVALUATOR)
    model_gate = ModelGate(
        examples=examples,
        candidate=candidate,
        baseline=baseline,
        evaluation=evaluator.outputs["evaluation"],
        evaluator_blessing=evaluator.outputs["blessing"],
        min_accuracy=evaluation.min_accuracy,
        min_improvement=evaluation.min_improvement,
        significance_level=evaluation.significance_level,
        require_significance=evaluation.require_significance,
    ).with_id(MODEL_GATE)
    infra_validator = _infra_validator(config, candidate, examples)
    if not config.serving.serving_root and "serving_root" not in runtime:
        raise ValueError("config.serving.serving_root is unset: the runner must name the push destination")
    pusher = ServingPusher(
        model=candidate,
        blessing=model_gate.outputs["blessing"],
        infra_blessing=infra_validator.outputs["blessing"],
        serving_root=runtime.get("serving_root", config.serving.serving_root),
        model_name=config.serving.model_name,
    ).with_id(PUSHER)
    explain = config.explain
    explainer = ShapExplainer(
        model=candidate, examples=examples, images_per_class=explain.images_per_class, masker=explain.masker,
        max_evals=explain.max_evals, batch_size=explain.batch_size, top_k=explain.top_k,
    ).with_id(EXPLAINER)
    return _pipeline(config.name, pipeline_root,
                     stages + trainers + [evaluator, model_gate, infra_validator, pusher, explainer],
                     metadata_connection_config, beam_pipeline_args, enable_cache)


def _infra_validator(config: PipelineConfig, model, examples) -> base_node.BaseNode:
    """The local probe, or TFX's InfraValidator with the TF Serving image where Docker or a cluster is."""
    evaluation = config.evaluation
    if evaluation.infra_validator == "local":
        return LocalInfraValidator(
            model=model, examples=examples, model_name=config.serving.model_name,
            latency_budget_ms=evaluation.latency_budget_ms, num_examples=evaluation.infra_examples,
            timeout_seconds=evaluation.infra_timeout_seconds,
        ).with_id(INFRA_VALIDATOR)
    platform = (
        {"local_docker": tfx.proto.LocalDockerConfig()} if evaluation.infra_validator == "docker"
        else {"kubernetes": tfx.proto.KubernetesConfig()}
    )
    return tfx.components.InfraValidator(
        model=model,
        examples=examples,
        serving_spec=tfx.proto.ServingSpec(
            tensorflow_serving=tfx.proto.TensorFlowServing(tags=[TF_SERVING_TAG]),
            model_name=config.serving.model_name,
            **platform,
        ),
        # TFX builds the requests from serialized examples: the tf.Example signature.
        request_spec=tfx.proto.RequestSpec(
            tensorflow_serving=tfx.proto.TensorFlowServingRequestSpec(signature_names=[tfma_eval.SIGNATURE]),
            split_name="test",
            num_examples=evaluation.infra_examples,
            make_warmup=True,
        ),
        validation_spec=tfx.proto.ValidationSpec(
            max_loading_time_seconds=evaluation.infra_timeout_seconds, num_tries=3
        ),
    ).with_id(INFRA_VALIDATOR)


def create_data_pipeline(
    config: PipelineConfig,
    pipeline_root: str,
    metadata_connection_config: Optional[metadata_store_pb2.ConnectionConfig] = None,
    beam_pipeline_args: Sequence[str] = (),
) -> tfx.dsl.Pipeline:
    """The data stages only (``placedemarche ingest``). Same pipeline name and node ids as
    :func:`create_pipeline`, so a later full run reuses them from the cache."""
    return _pipeline(config.name, pipeline_root, _data_stages(config), metadata_connection_config,
                     beam_pipeline_args, True)


def create_statistics_pipeline(
    config: PipelineConfig,
    pipeline_root: str,
    metadata_connection_config: Optional[metadata_store_pb2.ConnectionConfig] = None,
    beam_pipeline_args: Sequence[str] = (),
) -> tfx.dsl.Pipeline:
    """Ingestion and statistics only: what ``placedemarche schema`` infers a new schema from."""
    return _pipeline(statistics_pipeline_name(config), pipeline_root, list(_ingestion(config)),
                     metadata_connection_config, beam_pipeline_args, True)


def statistics_pipeline_name(config: PipelineConfig) -> str:
    """The name :func:`create_statistics_pipeline` runs under (its metadata contexts use it)."""
    return f"{config.name}-statistics"


def _pipeline(name, root, components, connection, beam_args, enable_cache) -> tfx.dsl.Pipeline:
    return tfx.dsl.Pipeline(
        pipeline_name=name,
        pipeline_root=root,
        components=components,
        enable_cache=enable_cache,
        metadata_connection_config=connection,
        beam_pipeline_args=list(beam_args),
    )


def _data_stages(config: PipelineConfig, data_dir_parameter=None) -> List[base_node.BaseNode]:
    example_gen, statistics_gen = _ingestion(config, data_dir_parameter)
    schema_gen = tfx.components.ImportSchemaGen(
        schema_file=config.data.schema_file or default_schema_file()
    ).with_id(SCHEMA_GEN)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    ).with_id(EXAMPLE_VALIDATOR)
    data_gate = DataValidationGate(anomalies=example_validator.outputs["anomalies"]).with_id(DATA_GATE)
    return [example_gen, statistics_gen, schema_gen, example_validator, data_gate]


def _trainer(config, role, node_id, example_gen, schema_gen, data_gate) -> base_node.BaseNode:
    """A Trainer of the shared model module; ``role`` names the config section (candidate/baseline)."""
    trainer = tfx.components.Trainer(
        run_fn=TRAINER_RUN_FN,
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=["train"]),
        eval_args=tfx.proto.EvalArgs(splits=["eval"]),
        custom_config={"role": role, "model": asdict(getattr(config, role)), "training": asdict(config.training)},
    ).with_id(node_id)
    # Train only on data that passed validation (the gate's output is not a Trainer input).
    trainer.add_upstream_node(data_gate)
    return trainer


def _ingestion(config: PipelineConfig, data_dir_parameter=None):
    data = config.data
    if data_dir_parameter is not None:
        data = dataclasses.replace(data, data_dir=data_dir_parameter)
    elif not data.data_dir:
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
        # Local catalogues are fingerprinted so TFX's cache notices a changed catalogue. A remote one
        # (gs://..., or a runtime parameter on Kubeflow) cannot be read when the pipeline is compiled
        # offline; there Kubeflow's own cache keys on the parameters.
        input_fingerprint=(fingerprint(data.data_dir, data.csv_file, data.images_dir)
                           if isinstance(data.data_dir, str) and "://" not in data.data_dir else ""),
    ).with_id(EXAMPLE_GEN)
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"]
    ).with_id(STATISTICS_GEN)
    return example_gen, statistics_gen
