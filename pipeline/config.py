"""The one configuration object of the product.

Everything a user may change lives here, with the proof of concept's recipe as the defaults:
EfficientNet-B7 candidate at 224 x 224 with a frozen backbone and a Dense + Dropout head trained with
RMSprop on categorical cross-entropy, early stopping on validation loss with the best epoch restored,
against a VGG19 baseline with in-model augmentation; the label is the first level of
``product_category_tree`` and the metric is accuracy.

A configuration is built from the defaults, then a YAML file, then ``--set section.key=value``
overrides, in that order, and validated as a whole. Any unknown key or bad value raises
:class:`ConfigError` naming the key, where it came from, the value and what is allowed.

Nothing here reads the environment: the runners decide paths, this module only describes them.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

# Names of the backbones the training module knows how to build (see issue 4's registry); the config
# refuses anything else up front, before a long run starts.
BACKBONES: Tuple[str, ...] = tuple(
    [f"efficientnet_b{i}" for i in range(8)]
    + [
        "vgg16",
        "vgg19",
        "resnet50",
        "mobilenet_v3_small",
        "mobilenet_v3_large",
        "convnext_tiny",
        "convnext_small",
        "convnext_base",
    ]
)
OPTIMIZERS: Tuple[str, ...] = ("rmsprop", "adam", "sgd")
LOSSES: Tuple[str, ...] = ("categorical_crossentropy",)
METRICS: Tuple[str, ...] = ("accuracy",)
TUNING_ALGORITHMS: Tuple[str, ...] = ("random", "bayesian", "hyperband")
COMPUTE_DTYPES: Tuple[str, ...] = ("float32", "bfloat16", "auto")
MASKERS: Tuple[str, ...] = ("inpaint_telea", "inpaint_ns", "blur", "mean")
_PIPELINE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")  # Kubeflow V2 refuses anything else
_SERVING_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class ConfigError(ValueError):
    """A configuration key or value was refused; the message says which, where from and why."""


def _field(default: Any, help: str, **constraints: Any) -> Any:
    """A dataclass field with its help text and constraints (min, max, max_exclusive, choices, pattern)."""
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples for defaults: the config is immutable")
    return field(default=default, metadata={"help": help, **constraints})


@dataclass(frozen=True)
class DataConfig:
    """Where the catalogue is and how its rows become labelled examples."""

    data_dir: Optional[str] = _field(
        None, "Catalogue folder (CSV + images folder); unset: the generated sample catalogue"
    )
    csv_file: Optional[str] = _field(
        None, "CSV file inside data_dir; unset: the only *.csv file in data_dir"
    )
    images_dir: str = _field("Images", "Images folder, relative to data_dir")
    id_column: str = _field("uniq_id", "CSV column with the product's unique id")
    image_column: str = _field("image", "CSV column with the image file name")
    category_column: str = _field(
        "product_category_tree", "CSV column with the category tree string"
    )
    label_depth: int = _field(
        1, "Category tree level used as the label (1: 7 top-level categories)", min=1, max=8
    )
    max_image_side: int = _field(
        600, "Longest image side kept in the TFRecords (pixels)", min=32, max=8192
    )
    min_image_side: int = _field(
        32, "Images with a shorter side than this are quarantined (pixels)", min=1, max=8192
    )
    max_image_pixels: int = _field(
        60_000_000,
        "Pictures declaring more pixels are refused as decompression bombs (JPEGs are decoded "
        "downscaled first)",
        min=1,
    )
    max_image_bytes: int = _field(
        50 * 1024 * 1024, "Picture files larger than this are quarantined without being read (bytes)", min=1)
    jpeg_quality: int = _field(90, "JPEG quality of re-encoded pictures", min=1, max=100)
    schema_file: Optional[str] = _field(
        None, "Curated TFDV schema (pbtxt); unset: the one shipped in pipeline/schema/"
    )
    test_fraction: float = _field(
        0.2, "Share of each category held out as the test split", min=0.0, max_exclusive=1.0
    )
    eval_fraction: float = _field(
        0.25,
        "Share of the remaining (non-test) products used for validation",
        min=0.0,
        max_exclusive=1.0,
    )
    split_salt: str = _field(
        "placedemarche", "Salt of the uniq_id hash that assigns splits; change it to reshuffle"
    )
    max_quarantine_fraction: float = _field(
        0.05, "The run fails when more than this share of rows is quarantined", min=0.0, max=1.0
    )
    window_batches: int = _field(
        0, "A catalogue of batch folders (DATA/<batch>/ with its CSV and images folder, ordered by name): train on "
        "the newest this many batches (0: all of them)", min=0)
    accept_drift: bool = _field(
        False, "true: a run whose newest batch drifted from the previous one past the thresholds goes on (the "
        "decision is recorded in the metadata store and shown by review)")
    drift_linf: float = _field(
        0.1, "Drift gate: largest L-infinity distance between the newest and the previous batch of a categorical "
        "feature's distribution (label, picture format)", min=0.0, max=1.0)
    drift_jsd: float = _field(
        0.2, "Drift gate: largest Jensen-Shannon divergence between the newest and the previous batch of a numeric "
        "feature's distribution (prices, picture width and height, text lengths)", min=0.0, max=1.0)
    reviews: Tuple[str, ...] = _field(
        (), "Filled review queues (review_queue.csv of 'placedemarche categorize') whose reviewed_category "
        "becomes the label: a review overrides the seller's category (--reviews FILE)")


@dataclass(frozen=True)
class ModelConfig:
    """One image classifier: a backbone with the proof of concept's Dense + Dropout head."""

    backbone: str = _field("efficientnet_b7", "Backbone architecture", choices=BACKBONES)
    weights: str = _field(
        "imagenet",
        "'imagenet' (Keras cache or download), 'none' (random), or a local weights file path",
    )
    image_size: int = _field(224, "Square input size fed to the backbone (pixels)", min=32, max=1024)
    dense_units: int = _field(256, "Units of the Dense layer of the head", min=1, max=8192)
    dropout: float = _field(0.3, "Dropout rate of the head", min=0.0, max_exclusive=1.0)
    augmentation: bool = _field(
        False, "In-model random flip / rotation / zoom while training"
    )
    epochs: Optional[int] = _field(
        None,
        "Overrides training.epochs for this model only (0: the untrained head, a known-weak model "
        "for checking the gate); unset: training.epochs",
        min=0,
    )
    augmented_views: int = _field(
        2,
        "With augmentation: views per training image whose features are cached (the first is the "
        "plain picture; each view costs one backbone pass per image)",
        min=1,
        max=64,
    )


TEXT_COLUMNS: Tuple[str, ...] = ("product_name", "description", "brand")  # text features ingestion writes
_CANDIDATE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
NO_BACKBONE = "none"


@dataclass(frozen=True)
class CandidateConfig(ModelConfig):
    """One named candidate: an image backbone (or none) and the listing's text columns it reads.

    The image part is :class:`ModelConfig` (the proof of concept's head on frozen features); with
    text columns, a text classifier (TF-IDF over word and character n-grams, learnt from the train
    split and exported inside the model) is fused with the image head (``components/trainer/fusion``).
    """

    name: str = _field("candidate", "The candidate's name (how --set, YAML and review address it)",
                       pattern=_CANDIDATE_NAME.pattern)
    backbone: str = _field("efficientnet_b7", "Backbone architecture ('none': text only)",
                           choices=BACKBONES + (NO_BACKBONE,))
    text_columns: Tuple[str, ...] = _field(
        (), "Text columns read with the picture (empty: image only), e.g. [product_name, description]",
        choices=TEXT_COLUMNS)
    text_word_ngrams: Tuple[int, ...] = _field((1, 2), "Word n-gram sizes (lo, hi); [0, 0]: none", min=0, max=5)
    text_char_ngrams: Tuple[int, ...] = _field((3, 5), "Character n-gram sizes (lo, hi) within words; [0, 0]: none",
                                               min=0, max=8)
    text_max_words: int = _field(20000, "Word n-grams kept (most frequent in the train split)", min=1, max=1_000_000)
    text_max_chars: int = _field(30000, "Character n-grams kept (most frequent in the train split)", min=0,
                                 max=1_000_000)
    text_min_df: int = _field(2, "A token must appear in at least this many train texts", min=1)
    text_dropout: float = _field(0.5, "Dropout on the text classifier's input while training", min=0.0,
                                 max_exclusive=1.0)
    text_refit: bool = _field(
        True, "true: once early stopping on the eval split has chosen the text classifier's epoch count (and the "
        "fusion weights are chosen), the exported text classifier is trained again on train + eval for that many "
        "epochs (vocabulary and IDF stay the train split's); false: the early-stopped train-only one is exported")
    enabled: bool = _field(True, "false: the run skips this candidate")

    @property
    def reads_text(self) -> bool:
        return bool(self.text_columns)

    @property
    def reads_images(self) -> bool:
        return self.backbone != NO_BACKBONE


DEFAULT_CANDIDATES: Tuple[CandidateConfig, ...] = (
    # The proof of concept's model exactly: frozen EfficientNet-B7, image only.
    CandidateConfig(name="b7_image"),
    # The same picture features plus the listing's name and description.
    CandidateConfig(name="b7_text", text_columns=("product_name", "description")),
)


@dataclass(frozen=True)
class TrainingConfig:
    """How both models are trained (the same recipe so the comparison is fair)."""

    epochs: int = _field(30, "Maximum number of epochs (early stopping may end sooner)", min=0)
    batch_size: int = _field(32, "Training batch size", min=1, max=4096)
    optimizer: str = _field("rmsprop", "Optimizer of the head", choices=OPTIMIZERS)
    learning_rate: float = _field(1e-3, "Learning rate", min=0.0, max=10.0)
    loss: str = _field("categorical_crossentropy", "Training loss", choices=LOSSES)
    early_stopping_patience: int = _field(
        5, "Epochs without validation-loss improvement before stopping", min=1
    )
    allow_random_weights: bool = _field(
        False, "Train on random backbone weights when ImageNet weights cannot be had (demos, tests)"
    )
    mixed_precision: bool = _field(False, "mixed_float16 on GPUs")
    compute_dtype: str = _field(
        "float32", "The backbone's compute when making the features the heads train on: float32, bfloat16, or "
        "auto (bfloat16 only where the CPU / GPU / TPU has it natively; detected and logged)",
        choices=COMPUTE_DTYPES)
    seed: int = _field(42, "Random seed of the head initialisation and shuffling", min=0)


@dataclass(frozen=True)
class EvaluationConfig:
    """The blessing gate: the candidate must pass these to be pushed."""

    metric: str = _field("accuracy", "Metric the gate compares", choices=METRICS)
    min_accuracy: float = _field(
        0.6, "Absolute floor of the candidate's test accuracy", min=0.0, max=1.0
    )
    min_improvement: float = _field(
        0.01,
        "The candidate's test accuracy must beat the baseline's by at least this",
        min=-1.0,
        max=1.0,
    )
    significance_level: float = _field(
        0.05, "McNemar test level (always reported)", min=0.0, max=1.0
    )
    require_significance: bool = _field(
        False, "Also require McNemar p-value below significance_level to bless"
    )
    champion_tolerance: float = _field(
        0.0, "A candidate is blessed only if its test accuracy is at most this much below the served champion's "
        "(the 'stable' label's version, else the highest version served), on the same test split", min=0.0, max=1.0)
    latency_budget_ms: float = _field(
        2000.0,
        "Infra validation: the largest allowed latency of one warm-up request (batches of up to 8)",
        min=0.0,
    )
    infra_validator: str = _field(
        "local",
        "Infra validation: 'local' (a separate process loads the model as TF Serving does; no Docker "
        "needed), or TFX's InfraValidator with the real TF Serving image on 'docker' or 'kubernetes'",
        choices=("local", "docker", "kubernetes"),
    )
    infra_examples: int = _field(
        8, "Infra validation: test examples turned into warm-up requests", min=1, max=500
    )
    infra_timeout_seconds: int = _field(
        600, "Infra validation: time allowed to load the model and answer every request", min=1
    )


@dataclass(frozen=True)
class ServingConfig:
    """What TensorFlow Serving serves."""

    model_name: str = _field(
        "product_category", "Model name in TF Serving", pattern=_SERVING_NAME.pattern
    )
    serving_root: Optional[str] = _field(
        None, "Pusher destination (TF Serving base folder); unset: <run dir>/serving"
    )
    grpc_port: int = _field(8500, "gRPC port", min=1, max=65535)
    rest_port: int = _field(8501, "REST port", min=1, max=65535)
    base_path: str = _field(
        "/models/product_category",
        "Where TF Serving finds the model's versions in its container (kubernetes/serving mounts the "
        "model volume at /models)",
    )
    stable_version: Optional[int] = _field(None, "Version labelled 'stable' in models.config (unset: latest only)", min=1)
    canary_version: Optional[int] = _field(None, "Version labelled 'canary' in models.config", min=1)
    max_batch_size: int = _field(32, "Batching: largest merged batch", min=1, max=1024)
    batch_timeout_ms: float = _field(2.0, "Batching: longest wait for a batch to fill (ms)", min=0.0)
    num_batch_threads: int = _field(4, "Batching: batches run in parallel (TF Serving)", min=1)
    max_enqueued_batches: int = _field(100, "Batching: queue length before requests are refused (TF Serving)", min=1)
    max_request_mb: int = _field(64, "Largest request accepted (MiB)", min=1, max=2047)
    request_log_dir: Optional[str] = _field(
        None, "The local server logs a sample of its requests here as tf.Examples (inputs, model version, answer, "
        "time) for comparing served traffic with training; unset: no log. TF Serving itself cannot: use a gateway")
    request_log_rate: float = _field(0.1, "Share of requests logged", min=0.0, max=1.0)
    request_log_max_mb: int = _field(100, "Cap of the request log file (MiB): past it logging stops", min=1,
                                     max=1_000_000)
    skew_linf: float = _field(0.2, "skew: largest L-infinity distance of a categorical feature (picture format, "
                              "label) between logged requests and training", min=0.0, max=1.0)
    skew_jsd: float = _field(0.2, "skew: largest Jensen-Shannon divergence of a numeric feature (picture width, "
                             "height, text length) between logged requests and training", min=0.0, max=1.0)
    compute_dtype: str = _field(
        "float32", "The backbone's compute inside the exported model (what the gate evaluates and TF Serving "
        "runs): float32, bfloat16, or auto (decided on the machine that trains). float32 by default: serving "
        "nodes may lack native bfloat16, where it is emulated and slower", choices=COMPUTE_DTYPES)


@dataclass(frozen=True)
class ExplainConfig:
    """SHAP explanations of the candidate."""

    images_per_class: int = _field(1, "Test images explained per category", min=0)
    masker: str = _field("inpaint_telea", "SHAP image masker", choices=MASKERS)
    max_evals: int = _field(300, "Model evaluations per explained image", min=10)
    batch_size: int = _field(50, "Masked images per model call", min=1)
    top_k: int = _field(3, "Classes explained per image", min=1)


@dataclass(frozen=True)
class TuningConfig:
    """Tuning each candidate's head on the cached backbone features (a ``Tuner_<candidate>`` node each)."""

    enabled: bool = _field(
        False, "true: a Tuner searches each candidate's head (Dense units, dropout, learning rate, optimizer; "
        "vocabulary size and n-gram ranges for text) on the train split, scored on the eval split, and its "
        "Trainer trains the best values")
    max_trials: int = _field(20, "Trials per candidate (the default recipe is scored too, beside them)", min=1,
                             max=1000)
    algorithm: str = _field("random", "Search algorithm (KerasTuner oracle)", choices=TUNING_ALGORITHMS)
    seed: int = _field(42, "Seed of the search (the same seed and data give the same best values)", min=0)


@dataclass(frozen=True)
class CategorizeConfig:
    """Categorising a catalogue with a pushed model (``placedemarche categorize``)."""

    flag_threshold: float = _field(
        0.9, "A seller category is flagged seller_category_suspect when the model gives another category at "
        "least this probability", min=0.0, max=1.0)
    review_threshold: float = _field(
        0.6, "Listings whose top probability is below this go to the review queue (suspects always do)",
        min=0.0, max=1.0)
    batch_size: int = _field(32, "Listings per model call", min=1, max=4096)
    workers: int = _field(2, "Threads reading and preparing pictures ahead of the model", min=1, max=64)


@dataclass(frozen=True)
class RunnerConfig:
    """Where and how the pipeline runs: Beam, and Kubeflow Pipelines when compiled for a cluster."""

    beam_args: str = _field(
        "",
        "Beam pipeline arguments of the Beam-based components, space-separated; unset locally: "
        "'--direct_num_workers=1'. E.g. '--direct_num_workers=2 --direct_running_mode=multi_processing' "
        "for both cores, or '--runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp' "
        "(Flink / Spark runners likewise)",
    )
    image: str = _field(
        "placedemarche-pipeline:latest",
        "Kubeflow: the container image with the project installed (see Dockerfile)",
    )
    pipeline_root: Optional[str] = _field(
        None, "Kubeflow: where artifacts go, e.g. gs://bucket/placedemarche (required to compile)"
    )
    trainer_gpus: int = _field(
        1, "Kubeflow: GPUs requested by each backbone step (BackboneFeatures: the backbone passes; the Trainers "
        "fit heads on their output in seconds, on CPU) (0: CPU only)", min=0, max=16)
    gpu_resource: str = _field("nvidia.com/gpu", "Kubeflow: the GPU resource name of the cluster")
    trainer_cpu: float = _field(8.0, "Kubeflow: CPU limit of each backbone step", min=0.0)
    trainer_memory_gb: float = _field(32.0, "Kubeflow: memory limit of each backbone step (GiB)", min=0.0)
    node_selector: str = _field(
        "",
        "Kubeflow: node labels the backbone steps must run on, 'key=value,key2=value2', e.g. "
        "'cloud.google.com/gke-accelerator=nvidia-tesla-t4'",
    )
    tolerations: str = _field(
        "nvidia.com/gpu:NoSchedule",
        "Kubeflow: taints the backbone steps tolerate, 'key[=value]:Effect,...' (key alone: any value)",
    )


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a user may change, in one immutable object."""

    name: str = _field(
        "placedemarche", "Pipeline name ([a-z0-9][a-z0-9-]*)", pattern=_PIPELINE_NAME.pattern
    )
    data: DataConfig = field(default_factory=DataConfig)
    # Every candidate goes through the gate against the baseline; the best blessed one is pushed.
    candidates: Tuple[CandidateConfig, ...] = DEFAULT_CANDIDATES
    baseline: ModelConfig = field(
        default_factory=lambda: ModelConfig(backbone="vgg19", augmentation=True)
    )
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    categorize: CategorizeConfig = field(default_factory=CategorizeConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)

    def candidate(self, name: str) -> CandidateConfig:
        """The candidate called ``name`` (enabled or not).

        Raises:
          KeyError: no such candidate; the message lists the names.
        """
        for c in self.candidates:
            if c.name == name:
                return c
        raise KeyError(f"no candidate '{name}' (candidates: {', '.join(c.name for c in self.candidates)})")

    @property
    def enabled_candidates(self) -> Tuple[CandidateConfig, ...]:
        return tuple(c for c in self.candidates if c.enabled)

    def replace(self, **overrides: Any) -> "PipelineConfig":
        """Returns a validated copy with overrides applied, e.g. ``replace(**{"training.epochs": 3})``."""
        data, sources = to_dict(self), {}
        for key, value in overrides.items():
            _set_path(data, key, value, "replace()", sources)
        return _finish(data, sources)


# ----------------------------------------------------------------------------------------------
# Building and validating


def to_dict(config: Any) -> Dict[str, Any]:
    """The config as plain nested dicts and lists (what YAML files hold; ``candidates`` is a list)."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    out = plain(dataclasses.asdict(config))
    if isinstance(out, dict) and CANDIDATES in out:  # each candidate's name first, as people write them
        out[CANDIDATES] = [{"name": c["name"], **{k: v for k, v in c.items() if k != "name"}} for c in out[CANDIDATES]]
    return out


def dump_yaml(config: PipelineConfig) -> str:
    """The config as YAML text that :func:`load_config` reads back to an equal object."""
    return yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=False)


def describe_keys() -> Dict[str, Tuple[Any, str]]:
    """Every settable key with its default and help, e.g. ``{"training.epochs": (30, "...")}``."""
    keys: Dict[str, Tuple[Any, str]] = {}

    def walk(node: Mapping[str, Any], prefix: str, cls: type) -> None:
        helps = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}
        for name, value in node.items():
            if name == CANDIDATES:
                for candidate in value:  # candidates.<name>.<key>
                    walk({k: v for k, v in candidate.items() if k != "name"},
                         f"{CANDIDATES}.{candidate['name']}.", CandidateConfig)
            elif isinstance(value, dict):
                walk(value, f"{prefix}{name}.", _field_types(cls)[name])
            else:
                keys[prefix + name] = (value, helps[name])

    walk(to_dict(PipelineConfig()), "", PipelineConfig)
    return keys


def load_config(
    path: Optional[str | Path] = None, overrides: Sequence[str] = ()
) -> PipelineConfig:
    """Builds the configuration: defaults, then the YAML file at ``path``, then ``overrides``.

    Args:
      path: a YAML file holding any subset of the keys (nested sections), or None.
      overrides: ``"section.key=value"`` strings; the value is parsed as YAML (``3``, ``0.5``,
        ``true``, ``null``, ``vgg16``).

    Returns:
      The validated, immutable :class:`PipelineConfig`.

    Raises:
      ConfigError: the file cannot be read or parsed, a key is unknown or a value is refused.
    """
    data = to_dict(PipelineConfig())
    sources: Dict[str, str] = {}
    if path is not None:
        _merge(data, _read_yaml(Path(path)), "", f"config file '{path}'", sources)
    for item in overrides:
        key, value = parse_override(item)
        _set_path(data, key, value, "--set", sources)
    return _finish(data, sources)


def parse_override(item: str) -> Tuple[str, Any]:
    """Splits ``"section.key=value"``; the value is parsed as YAML (``3``, ``0.5``, ``true``, ``null``)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"override '{item}' must look like section.key=value, e.g. training.epochs=3"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # not YAML: keep the text, type validation judges it
    return key.strip(), value


def _read_yaml(path: Path) -> Dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read config file '{path}': {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"config file '{path}' is not valid YAML: {e}") from e
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"config file '{path}' must hold a mapping of sections, got {type(loaded).__name__}"
        )
    return loaded


def _finish(data: Dict[str, Any], sources: Dict[str, str]) -> PipelineConfig:
    config = _construct(PipelineConfig, data, prefix="", sources=sources)
    _check_consistency(config, sources)
    return config


def _allowed_message(cls: type, prefix: str, name: str) -> str:
    names = [f.name for f in dataclasses.fields(cls)]
    where = f"in section '{prefix.rstrip('.')}'" if prefix else "at the top level"
    message = f"allowed keys {where}: {', '.join(names)}"
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        message += f"; did you mean '{prefix}{close[0]}'?"
    return message


def _section_class(prefix: str) -> type:
    cls: type = PipelineConfig
    for part in [p for p in prefix.split(".") if p]:
        cls = _field_types(cls)[part]
    return cls


def _field_types(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def _merge(
    data: Dict[str, Any],
    update: Mapping[str, Any],
    prefix: str,
    source: str,
    sources: Dict[str, str],
) -> None:
    cls = _section_class(prefix)
    for name, value in update.items():
        key = f"{prefix}{name}"
        if not prefix and name == CANDIDATES:
            data[CANDIDATES] = _merge_candidates(data[CANDIDATES], value, source, sources)
            continue
        if not prefix and name == _OLD_CANDIDATE_SECTION:
            raise ConfigError(_old_candidate_message(name, source, data))
        if not isinstance(name, str) or name not in data:
            raise ConfigError(
                f"unknown config key '{key}' (from {source}); "
                + _allowed_message(cls, prefix, str(name))
            )
        if isinstance(data[name], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"config key '{key}' (from {source}) is a section: it must hold a mapping of "
                    f"keys, got {value!r}"
                )
            _merge(data[name], value, prefix=f"{key}.", source=source, sources=sources)
        else:
            data[name] = value
            sources[key] = source


def _set_path(
    data: Dict[str, Any], dotted: str, value: Any, source: str, sources: Dict[str, str]
) -> None:
    parts = dotted.split(".")
    if parts[0] == CANDIDATES:
        _set_candidate(data, parts, dotted, value, source, sources)
        return
    if parts[0] == _OLD_CANDIDATE_SECTION:
        raise ConfigError(_old_candidate_message(dotted, source, data))
    node = data
    for depth, part in enumerate(parts):
        prefix = ".".join(parts[:depth])
        prefix = f"{prefix}." if prefix else ""
        if part not in node:
            raise ConfigError(
                f"unknown config key '{dotted}' (from {source}); "
                + _allowed_message(_section_class(prefix), prefix, part)
            )
        if depth == len(parts) - 1:
            if isinstance(node[part], dict):
                keys = ", ".join(f"{dotted}.{k}" for k in node[part])
                raise ConfigError(
                    f"config key '{dotted}' (from {source}) is a section, not a value; set one of: "
                    f"{keys}"
                )
            node[part] = value
            sources[dotted] = source
        else:
            if not isinstance(node[part], dict):
                raise ConfigError(
                    f"unknown config key '{dotted}' (from {source}): '{prefix}{part}' is a value, "
                    "not a section"
                )
            node = node[part]


# --- candidates: a list of named sections, addressed as candidates.<name>.<key> ------------------

CANDIDATES = "candidates"
_OLD_CANDIDATE_SECTION = "candidate"  # before several candidates per run


def _candidate_names(data: Mapping[str, Any]) -> List[str]:
    return [c["name"] for c in data[CANDIDATES]]


def _old_candidate_message(key: str, source: str, data: Mapping[str, Any]) -> str:
    rest = key.split(".", 1)[1] if "." in key else "<key>"
    names = _candidate_names(data)
    return (f"unknown config key '{key}' (from {source}): the 'candidate' section became 'candidates', "
            f"one section per named candidate ({', '.join(names)}); e.g. "
            f"'candidates.{names[0] if names else 'NAME'}.{rest}', or 'candidates.*.{rest}' for all of them")


def _candidate_keys() -> List[str]:
    return [f.name for f in dataclasses.fields(CandidateConfig) if f.name != "name"]


def _unknown_candidate(name: str, dotted: str, source: str, names: Sequence[str]) -> ConfigError:
    message = (f"unknown candidate '{name}' in config key '{dotted}' (from {source}); candidates: "
               f"{', '.join(names) or 'none'} ('*': all of them)")
    close = difflib.get_close_matches(name, list(names), n=1)
    if close:
        message += f"; did you mean '{CANDIDATES}.{close[0]}'?"
    return ConfigError(message + "; a new candidate is added with a YAML list under 'candidates:'")


def _unknown_candidate_key(key: str, dotted: str, source: str) -> ConfigError:
    allowed = _candidate_keys()
    message = f"unknown config key '{dotted}' (from {source}); allowed keys of a candidate: {', '.join(allowed)}"
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        message += f"; did you mean '{dotted.rsplit('.', 1)[0]}.{close[0]}'?"
    return ConfigError(message)


def _set_candidate(data: Dict[str, Any], parts: List[str], dotted: str, value: Any, source: str,
                   sources: Dict[str, str]) -> None:
    names = _candidate_names(data)
    if len(parts) != 3:
        example = f"{CANDIDATES}.{names[0] if names else 'NAME'}.epochs"
        raise ConfigError(f"config key '{dotted}' (from {source}) must name a candidate and one of its keys, "
                          f"e.g. '{example}' (candidates: {', '.join(names)}; '*': all of them)")
    _, name, key = parts
    if name != "*" and name not in names:
        raise _unknown_candidate(name, dotted, source, names)
    if key not in _candidate_keys():
        raise _unknown_candidate_key(key, dotted, source)
    for candidate in data[CANDIDATES]:
        if name in ("*", candidate["name"]):
            candidate[key] = value
            sources[f"{CANDIDATES}.{candidate['name']}.{key}"] = source


def _merge_candidates(current: List[Dict[str, Any]], value: Any, source: str,
                      sources: Dict[str, str]) -> List[Dict[str, Any]]:
    """A YAML list defines the whole set (each item: ``name`` plus any keys; the rest default);
    a YAML mapping ``{name: {key: value}}`` changes existing candidates by name."""
    if isinstance(value, list):
        defaults = to_dict(CandidateConfig())
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
                raise ConfigError(f"config key '{CANDIDATES}' (from {source}): item {i + 1} must be a mapping with "
                                  f"a 'name', e.g. {{name: b7_text, text_columns: [product_name]}}; got {item!r}")
            candidate = dict(defaults)
            for key, v in item.items():
                if key != "name" and key not in defaults:
                    raise _unknown_candidate_key(str(key), f"{CANDIDATES}.{item['name']}.{key}", source)
                candidate[key] = v
                sources[f"{CANDIDATES}.{item['name']}.{key}"] = source
            out.append(candidate)
        return out
    if isinstance(value, Mapping):
        for name, keys in value.items():
            if not isinstance(keys, Mapping):
                raise ConfigError(f"config key '{CANDIDATES}.{name}' (from {source}) must hold a mapping of the "
                                  f"candidate's keys, got {keys!r}")
            for key, v in keys.items():
                _set_candidate({CANDIDATES: current}, [CANDIDATES, str(name), str(key)],
                               f"{CANDIDATES}.{name}.{key}", v, source, sources)
        return current
    raise ConfigError(f"config key '{CANDIDATES}' (from {source}) must be a list of candidates (the whole set) or a "
                      f"mapping of existing candidates' names to changes, got {value!r}")


def _construct_candidates(values: Any, sources: Dict[str, str]) -> Tuple[CandidateConfig, ...]:
    out = []
    for value in values:
        name = value.get("name")
        prefix = f"{CANDIDATES}.{name}."
        out.append(_construct(CandidateConfig, value, prefix=prefix, sources=sources))
    return tuple(out)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{_type_name(inner[0])} or null"
    if typing.get_origin(tp) is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0]).replace('an integer', 'integers').replace('a string', 'strings')}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, str(tp)
    )


def _coerce(tp: Any, value: Any) -> Tuple[bool, Any]:
    """Returns (ok, value) for ``value`` against the field type ``tp``; no lossy conversions."""
    if typing.get_origin(tp) is typing.Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return True, None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value)
    if typing.get_origin(tp) is tuple:
        if isinstance(value, str):  # --set k=a,b (or empty: none)
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            return False, value
        items = [_coerce(typing.get_args(tp)[0], v) for v in value]
        if items and typing.get_args(tp)[0] is int:
            items = [(ok and isinstance(v, int), v) for ok, v in items]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if tp is str:
        # YAML turns `--set serving.model_name=123` into an int; a name may well be digits.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, str(value)
        return isinstance(value, str), value
    raise TypeError(f"unsupported config field type {tp!r}")


def _construct(cls: type, data: Mapping[str, Any], prefix: str, sources: Dict[str, str]) -> Any:
    types = _field_types(cls)
    kwargs: Dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = types[f.name]
        value = data[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _construct(tp, value, prefix=f"{key}.", sources=sources)
            continue
        if cls is PipelineConfig and f.name == CANDIDATES:
            kwargs[f.name] = _construct_candidates(value, sources)
            continue
        where = f" (from {sources[key]})" if key in sources else ""
        ok, value = _coerce(tp, value)
        if not ok:
            raise ConfigError(
                f"config key '{key}'{where} must be {_type_name(tp)}, got {data[f.name]!r} "
                f"({type(data[f.name]).__name__})"
            )
        _check_constraints(key, where, value, f.metadata)
        kwargs[f.name] = value
    return cls(**kwargs)


def _check_constraints(key: str, where: str, value: Any, meta: Mapping[str, Any]) -> None:
    if value is None:
        return
    if isinstance(value, tuple):
        for item in value:
            _check_constraints(key, where, item, meta)
        return
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(
            f"config key '{key}'{where} must be one of: {', '.join(meta['choices'])}; got {value!r}"
        )
    if "min" in meta and value < meta["min"]:
        raise ConfigError(f"config key '{key}'{where} must be >= {meta['min']}, got {value!r}")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(f"config key '{key}'{where} must be <= {meta['max']}, got {value!r}")
    if "max_exclusive" in meta and value >= meta["max_exclusive"]:
        raise ConfigError(
            f"config key '{key}'{where} must be < {meta['max_exclusive']}, got {value!r}"
        )
    if "pattern" in meta and not re.fullmatch(meta["pattern"], value):
        raise ConfigError(
            f"config key '{key}'{where} must match {meta['pattern']}, got {value!r}"
        )


def _check_consistency(config: PipelineConfig, sources: Dict[str, str]) -> None:
    """Checks that involve several keys."""

    def where(key: str) -> str:
        return f" (from {sources[key]})" if key in sources else ""

    data = config.data
    if data.min_image_side > data.max_image_side:
        raise ConfigError(
            f"config key 'data.min_image_side'{where('data.min_image_side')} = "
            f"{data.min_image_side} must not exceed data.max_image_side = {data.max_image_side}"
        )
    models = [(f"{CANDIDATES}.{c.name}", c) for c in config.candidates] + [("baseline", config.baseline)]
    for section, model in models:
        key = f"{section}.weights"
        if not model.weights.strip():
            raise ConfigError(
                f"config key '{key}'{where(key)} must be 'imagenet', 'none' or a weights file "
                "path; got an empty string"
            )
    names = [c.name for c in config.candidates]
    for reserved, whose in (("baseline", "the VGG19 baseline's"), ("champion", "the served model's (champion)")):
        if reserved in names:
            raise ConfigError(f"config key '{CANDIDATES}'{where(CANDIDATES)}: '{reserved}' is {whose} name in the "
                              "evaluation; give the candidate another name")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(f"config key '{CANDIDATES}'{where(CANDIDATES)}: candidate names must be unique; "
                          f"{', '.join(duplicated)} appear more than once")
    if not config.enabled_candidates:
        raise ConfigError(f"every candidate is disabled ({', '.join(names) or 'none defined'}): enable at least one, "
                          f"e.g. --set {CANDIDATES}.{names[0] if names else 'NAME'}.enabled=true")
    for c in config.candidates:
        prefix = f"{CANDIDATES}.{c.name}."
        for key in ("text_word_ngrams", "text_char_ngrams"):
            lo_hi = getattr(c, key)
            if len(lo_hi) != 2 or (tuple(lo_hi) != (0, 0) and not 1 <= lo_hi[0] <= lo_hi[1]):
                raise ConfigError(f"config key '{prefix}{key}'{where(prefix + key)} must be [lo, hi] with "
                                  f"1 <= lo <= hi, or [0, 0] for none; got {list(lo_hi)}")
        if c.reads_text and tuple(c.text_word_ngrams) == (0, 0) and tuple(c.text_char_ngrams) == (0, 0):
            raise ConfigError(f"candidate '{c.name}' reads text but has neither word nor character n-grams: set "
                              f"{prefix}text_word_ngrams or {prefix}text_char_ngrams")
        if len(set(c.text_columns)) != len(c.text_columns):
            raise ConfigError(f"config key '{prefix}text_columns'{where(prefix + 'text_columns')} names a column "
                              f"twice: {list(c.text_columns)}")
        if not c.reads_images and not c.reads_text:
            raise ConfigError(f"candidate '{c.name}' reads neither pictures ({prefix}backbone=none) nor text "
                              f"({prefix}text_columns is empty): give it one or both")
    if config.serving.grpc_port == config.serving.rest_port:
        raise ConfigError(
            f"config keys 'serving.grpc_port' and 'serving.rest_port' must differ; both are "
            f"{config.serving.rest_port}"
        )
