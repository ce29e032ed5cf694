"""The pipeline graph: ``create_pipeline(config, ...) -> tfx.dsl.Pipeline`` and nothing else.

Runners (``local_runner``, ``kubeflow``) choose the pipeline root, the metadata store and the Beam
arguments; everything else comes from the :class:`~placedemarche.pipeline.config.PipelineConfig`.

CatalogueExampleGen → StatisticsGen → ImportSchemaGen (curated schema) → ExampleValidator →
DataValidationGate → BackboneFeatures (one node per distinct backbone setting: EfficientNet-B7 for
every B7 candidate, VGG19 with augmented views for the baseline) → with ``tuning.enabled``, a HeadTuner
per candidate (``Tuner_<name>``: KerasTuner on the same features, train and eval splits only) → a
HeadTrainer per candidate (with its Tuner's ``best_hyperparameters`` when tuned)
(``Trainer_<name>``) and the baseline's (``BaselineTrainer``) → Evaluator (TFMA: every candidate and
the VGG19 baseline on the test split, one pass) → per candidate: ModelGate (its thresholds against the
baseline, McNemar, the blessing) and InfraValidator (the candidate loaded and queried as TF Serving
would; skipped when not blessed) →
ServingPusher (the best blessed and infra-validated candidate) → ShapExplainer (the pushed
candidate, else the best one: pictures, and words for a candidate that reads text).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from importlib import resources
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.dsl.components.base import base_node

from placedemarche.components.backbone_features.component import BackboneFeatures
from placedemarche.components.candidate_evaluator.component import CandidateEvaluator
from placedemarche.components.catalogue_example_gen.component import CatalogueExampleGen, fingerprint
from placedemarche.components.categorizer import reviews as reviews_lib
from placedemarche.components.categorizer.component import BatchCategorizer
from placedemarche.components.champion import champion as champion_lib
from placedemarche.components.champion.component import ChampionResolver
from placedemarche.components.data_gate.component import DataValidationGate
from placedemarche.components.drift_gate.component import DriftGate
from placedemarche.components.infra_validator.component import LocalInfraValidator
from placedemarche.components.model_gate import tfma_eval
from placedemarche.components.model_gate.component import ModelGate
from placedemarche.components.serving_pusher.component import ServingPusher
from placedemarche.components.shap_explainer.component import ShapExplainer
from placedemarche.components.trainer.component import HeadTrainer
from placedemarche.components.trainer.trainer import TrainSpec
from placedemarche.components.tuner.component import HeadTuner
from placedemarche.pipeline.config import ModelConfig, PipelineConfig

# Node ids, used by the runners and the summaries to find each stage's outputs.
EXAMPLE_GEN = "CatalogueExampleGen"
STATISTICS_GEN = "StatisticsGen"
SCHEMA_GEN = "ImportSchemaGen"
EXAMPLE_VALIDATOR = "ExampleValidator"
DATA_GATE = "DataValidationGate"
DRIFT_GATE = "DriftGate"
DATA_STAGES = (EXAMPLE_GEN, STATISTICS_GEN, SCHEMA_GEN, EXAMPLE_VALIDATOR, DRIFT_GATE, DATA_GATE)
BASELINE_TRAINER = "BaselineTrainer"
CHAMPION = "ChampionResolver"
EVALUATOR = "Evaluator"
PUSHER = "ServingPusher"
EXPLAINER = "ShapExplainer"
CATEGORIZER = "BatchCategorizer"
FEATURES_PREFIX = "Features_"
# The TF Serving release matching the TF the models are exported with (TFX InfraValidator option).
TF_SERVING_TAG = "2.16.1"


def trainer_id(candidate: str) -> str:
    return f"Trainer_{candidate}"


def tuner_id(candidate: str) -> str:
    return f"Tuner_{candidate}"


def test_features_id(features_node: str) -> str:
    return f"Test{features_node}"


def tuned_candidates(config: PipelineConfig) -> List[str]:
    """The candidates a Tuner searches before their Trainer (all enabled ones when ``tuning.enabled``)."""
    return [c.name for c in config.enabled_candidates] if config.tuning.enabled else []


def test_feature_groups(config: PipelineConfig) -> List[str]:
    """The features nodes with a tuned user: each gets a ``TestFeatures`` node (:func:`test_features_id`)."""
    tuned = tuned_candidates(config)
    return [g for g, (_, users) in feature_groups(config).items() if any(u in tuned for u in users)]


def gate_id(candidate: str) -> str:
    return f"ModelGate_{candidate}"


def infra_id(candidate: str) -> str:
    return f"InfraValidator_{candidate}"


def candidate_nodes(candidate: str) -> Tuple[str, ...]:
    """A candidate's own nodes after the shared evaluation, in run order."""
    return (gate_id(candidate), infra_id(candidate))


def feature_groups(config: PipelineConfig) -> Dict[str, Tuple[Tuple, List[str]]]:
    """Node id → (feature setting, the models that use it): one node per distinct backbone setting.

    Models using the same backbone, weights, input size and number of augmented views share one
    ``BackboneFeatures`` node (``b7_image`` and ``b7_text`` share EfficientNet-B7's).
    """
    settings: Dict[Tuple, List[str]] = {}
    for name, model in _models(config):
        if getattr(model, "backbone", None) == "none":
            continue
        key = (model.backbone, model.weights, model.image_size, model.augmented_views if model.augmentation else 1)
        settings.setdefault(key, []).append(name)
    groups: Dict[str, Tuple[Tuple, List[str]]] = {}
    for key, users in settings.items():
        backbone, _, size, views = key
        node = FEATURES_PREFIX + backbone + (f"_{views}views" if views > 1 else "")
        if node in groups or any(k[0] == backbone and k[3] == views and k != key for k in settings):
            node += f"_{size}px_{len(groups)}"
        groups[node] = (key, users)
    return groups


def node_ids(config: PipelineConfig) -> Tuple[str, ...]:
    """Every node of the full pipeline for ``config``, in run order."""
    names = [c.name for c in config.enabled_candidates]
    ids = list(DATA_STAGES) + list(feature_groups(config)) + [test_features_id(g) for g in test_feature_groups(config)]
    ids += [tuner_id(n) for n in tuned_candidates(config)]
    ids += [BASELINE_TRAINER] + [trainer_id(n) for n in names]
    ids += [CHAMPION, EVALUATOR]
    for name in names:
        ids += candidate_nodes(name)
    return tuple(ids + [PUSHER, CATEGORIZER, EXPLAINER])


def _models(config: PipelineConfig) -> List[Tuple[str, ModelConfig]]:
    return [(c.name, c) for c in config.enabled_candidates] + [("baseline", config.baseline)]


def train_spec(config: PipelineConfig, model: ModelConfig, name: str) -> Dict[str, Any]:
    """The HeadTrainer's ``spec`` parameter: the model's section merged with the training section."""
    return asdict(TrainSpec.from_dicts({**asdict(model), "name": name, "max_image_pixels": config.data.max_image_pixels,
                                        "serving_dtype": config.serving.compute_dtype}, asdict(config.training)))


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
    """Builds the pipeline for ``config``: data stages, features, Trainers, per-candidate gates, push, explanations.

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
    if not config.serving.serving_root and "serving_root" not in runtime:
        raise ValueError("config.serving.serving_root is unset: the runner must name the push destination")
    stages = _data_stages(config, runtime.get("data_dir"))
    example_gen, _, schema_gen, _, _, data_gate = stages
    examples = example_gen.outputs["examples"]
    nodes: List[base_node.BaseNode] = list(stages)

    features_of: Dict[str, Any] = {}
    test_features_of: Dict[str, Any] = {}
    tuned = tuned_candidates(config)
    with_test = test_feature_groups(config)

    def features_node(key: Tuple, node_id: str, splits: Optional[List[str]] = None) -> BackboneFeatures:
        backbone, weights, size, views = key
        node = BackboneFeatures(
            examples=examples, backbone=backbone, weights=weights, image_size=size, views=views,
            seed=config.training.seed, allow_random_weights=config.training.allow_random_weights,
            batch_size=config.training.batch_size, splits=splits, compute_dtype=config.training.compute_dtype,
        ).with_id(node_id)
        node.add_upstream_node(data_gate)  # compute features only of data that passed validation
        return node

    for node_id, (key, users) in feature_groups(config).items():
        node = features_node(key, node_id)
        nodes.append(node)
        for user in users:
            features_of[user] = node.outputs["features"]
        if node_id in with_test:
            # The test pictures' features, apart: only tuned candidates' Trainers read them (their report
            # compares the default and the tuned recipe on test), and the train / eval node keeps its cache.
            test_node = features_node(key, test_features_id(node_id), ["test"])
            nodes.append(test_node)
            for user in users:
                test_features_of[user] = test_node.outputs["features"]

    tuners: Dict[str, HeadTuner] = {}
    for c in config.enabled_candidates:
        if c.name in tuned:
            tuners[c.name] = HeadTuner(
                examples=examples, schema=schema_gen.outputs["schema"], features=features_of.get(c.name),
                spec=train_spec(config, c, c.name),
                tuning={k: v for k, v in asdict(config.tuning).items() if k != "enabled"},
            ).with_id(tuner_id(c.name))
            tuners[c.name].add_upstream_node(data_gate)
    nodes += tuners.values()

    def trainer(name: str, model: ModelConfig, node_id: str, role: str) -> HeadTrainer:
        tuner = tuners.get(name) if role == "candidate" else None
        node = HeadTrainer(examples=examples, schema=schema_gen.outputs["schema"], features=features_of.get(name),
                           spec=train_spec(config, model, name), role=role,
                           hyperparameters=tuner.outputs["best_hyperparameters"] if tuner else None,
                           test_features=test_features_of.get(name) if tuner else None).with_id(node_id)
        node.add_upstream_node(data_gate)
        return node

    baseline = trainer("baseline", config.baseline, BASELINE_TRAINER, "baseline")
    nodes.append(baseline)
    evaluation = config.evaluation
    candidates = config.enabled_candidates
    trainers = {c.name: trainer(c.name, c, trainer_id(c.name), "candidate") for c in candidates}
    models = {name: t.outputs["model"] for name, t in trainers.items()}
    serving_root = runtime.get("serving_root", config.serving.serving_root)
    champion = ChampionResolver(
        serving_root=serving_root, model_name=config.serving.model_name, stable_version=config.serving.stable_version,
        # What is served now (local or gs://), so a push / rollback since the last run re-resolves the
        # champion. A runtime parameter (Kubeflow) is not known at build time: that task runs uncached.
        serving_state=(champion_lib.serving_state(serving_root, config.serving.model_name, config.serving.stable_version)
                       if isinstance(serving_root, str) else ""),
    ).with_id(CHAMPION)
    evaluator = CandidateEvaluator(
        examples=examples, models=models, baseline_model=baseline.outputs["model"],
        champion_model=champion.outputs["champion"],
        eval_config=tfma_eval.eval_config(evaluation.min_accuracy, evaluation.min_improvement, sorted(models)),
    ).with_id(EVALUATOR)
    nodes += [*trainers.values(), champion, evaluator]
    blessings, infra_blessings = {}, {}
    for name, model in models.items():
        model_gate = ModelGate(
            examples=examples, candidate=model, baseline=baseline.outputs["model"],
            evaluation=evaluator.outputs["evaluation"], champion=champion.outputs["champion"],
            champion_tolerance=evaluation.champion_tolerance, min_accuracy=evaluation.min_accuracy, min_improvement=evaluation.min_improvement,
            significance_level=evaluation.significance_level, require_significance=evaluation.require_significance,
        ).with_id(gate_id(name))
        infra_validator = _infra_validator(config, name, model, examples, model_gate.outputs["blessing"])
        nodes += [model_gate, infra_validator]
        blessings[name] = model_gate.outputs["blessing"]
        infra_blessings[name] = infra_validator.outputs["blessing"]
    pusher = ServingPusher(
        models=models, blessings=blessings, infra_blessings=infra_blessings,
        serving_root=serving_root, model_name=config.serving.model_name,
    ).with_id(PUSHER)
    explain = config.explain
    explainer = ShapExplainer(
        models=models, examples=examples, pushed_model=pusher.outputs["pushed_model"],
        images_per_class=explain.images_per_class, masker=explain.masker, max_evals=explain.max_evals,
        batch_size=explain.batch_size, top_k=explain.top_k,
    ).with_id(EXPLAINER)
    categorize = config.categorize
    categorizer = BatchCategorizer(
        unlabelled=example_gen.outputs["unlabelled"], pushed_model=pusher.outputs["pushed_model"],
        flag_threshold=categorize.flag_threshold, review_threshold=categorize.review_threshold,
        batch_size=categorize.batch_size,
    ).with_id(CATEGORIZER)
    return _pipeline(config.name, pipeline_root, nodes + [pusher, categorizer, explainer], metadata_connection_config,
                     beam_pipeline_args, enable_cache)


def _infra_validator(config: PipelineConfig, name: str, model, examples, model_blessing) -> base_node.BaseNode:
    """The local probe, or TFX's InfraValidator with the TF Serving image where Docker or a cluster is."""
    evaluation = config.evaluation
    if evaluation.infra_validator == "local":
        return LocalInfraValidator(
            model=model, examples=examples, model_name=config.serving.model_name,
            latency_budget_ms=evaluation.latency_budget_ms, num_examples=evaluation.infra_examples,
            timeout_seconds=evaluation.infra_timeout_seconds, model_blessing=model_blessing,
        ).with_id(infra_id(name))
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
    ).with_id(infra_id(name))


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
    data = _data(config, data_dir_parameter)
    drift_gate = DriftGate(
        examples=example_gen.outputs["examples"], data_dir=data.data_dir, csv_file=data.csv_file or "",
        images_dir=data.images_dir, id_column=data.id_column, image_column=data.image_column,
        category_column=data.category_column, label_depth=data.label_depth, max_image_bytes=data.max_image_bytes,
        drift_linf=data.drift_linf, drift_jsd=data.drift_jsd, accept_drift=data.accept_drift,
        input_fingerprint=example_gen.exec_properties["input_fingerprint"],
    ).with_id(DRIFT_GATE)
    data_gate = DataValidationGate(anomalies=example_validator.outputs["anomalies"]).with_id(DATA_GATE)
    # Nothing downstream of the data gate starts unless the newest batch passed the drift gate too.
    data_gate.add_upstream_node(drift_gate)
    return [example_gen, statistics_gen, schema_gen, example_validator, drift_gate, data_gate]


def _data(config: PipelineConfig, data_dir_parameter=None):
    data = config.data
    if data_dir_parameter is not None:
        return dataclasses.replace(data, data_dir=data_dir_parameter)
    if not data.data_dir:
        raise ValueError("config.data.data_dir is unset: the runner must name the catalogue folder")
    return data


def _fingerprint(data) -> str:
    # Local catalogues are fingerprinted so TFX's cache notices a changed catalogue (a new batch). A
    # remote one (gs://..., or a runtime parameter on Kubeflow) is not read when the pipeline is built:
    # the compiled Kubeflow spec runs ingestion uncached instead (kubeflow.UNCACHED_TASKS); a local run
    # over a gs:// catalogue keys its cache on the parameters only.
    if isinstance(data.data_dir, str) and "://" not in data.data_dir:
        return fingerprint(data.data_dir, data.csv_file, data.images_dir)
    return ""


def _ingestion(config: PipelineConfig, data_dir_parameter=None):
    data = _data(config, data_dir_parameter)
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
        max_image_bytes=data.max_image_bytes,
        jpeg_quality=data.jpeg_quality,
        test_fraction=data.test_fraction,
        eval_fraction=data.eval_fraction,
        split_salt=data.split_salt,
        max_quarantine_fraction=data.max_quarantine_fraction,
        window_batches=data.window_batches,
        input_fingerprint=_fingerprint(data),
        # Read now: the reviews themselves (and each file's digest) are recorded with the run.
        reviews=reviews_lib.to_property(reviews_lib.load(data.reviews)) if data.reviews else None,
    ).with_id(EXAMPLE_GEN)
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"]
    ).with_id(STATISTICS_GEN)
    return example_gen, statistics_gen
