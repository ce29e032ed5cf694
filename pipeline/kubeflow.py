"""Compiling the pipeline for Kubeflow Pipelines (KFP v2) with TFX's Kubeflow V2 runner, offline.

``compile_pipeline(config, output_file)`` writes a KFP v2 pipeline spec (YAML) that runs every
component in ``runner.image`` (the ``Dockerfile``: the project installed, so no module file is
uploaded and compiling needs no bucket access).

GPU nodes for the backbone work (the ``BackboneFeatures`` nodes): TFX 1.16 carries a component's ``platform_config``
(``PipelineContainerSpec.ResourceSpec``: CPU and memory limits, accelerator type and count) into
the spec, so each of them asks for ``runner.trainer_gpus`` x ``runner.gpu_resource``. Node selector
and tolerations are not expressible through TFX; they are added afterwards as KFP's Kubernetes
platform spec (the second YAML document that ``kfp-kubernetes`` writes and the KFP v2 backend
reads: ``platforms.kubernetes.deploymentSpec.executors.<executor>``).

Runtime parameters, set when a run is submitted: ``data_dir`` (the catalogue) and ``serving_root``
(TF Serving's model base folder).
"""

from __future__ import annotations

import os
import shlex
import tempfile
from typing import Any, Dict, List

import yaml

from placedemarche.pipeline import pipeline as pipeline_lib
from placedemarche.pipeline.config import ConfigError, PipelineConfig



def gpu_steps(config: PipelineConfig) -> List[str]:
    """The nodes that run a backbone over pictures: the BackboneFeatures nodes, and with tuning their
    test-split ones (the Tuners and Trainers fit heads on their output in seconds, on CPU)."""
    return list(pipeline_lib.feature_groups(config)) + [
        pipeline_lib.test_features_id(g) for g in pipeline_lib.test_feature_groups(config)]

DEFAULT_DATA_DIR = "gs://CHANGE-ME/catalogue"  # runtime parameter defaults when the config has none


def parse_node_selector(text: str) -> Dict[str, str]:
    """``'k=v,k2=v2'`` → ``{"k": "v", "k2": "v2"}``."""
    selector = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"runner.node_selector item '{item}' must look like key=value")
        selector[key] = value
    return selector


def parse_tolerations(text: str) -> List[Dict[str, str]]:
    """``'key[=value]:Effect,...'`` → Kubernetes tolerations (no value: operator Exists)."""
    tolerations = []
    for item in filter(None, (i.strip() for i in text.split(","))):
        pair, sep, effect = item.rpartition(":")
        if not sep or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute") or not pair:
            raise ConfigError(f"runner.tolerations item '{item}' must look like key[=value]:NoSchedule "
                              "(effects: NoSchedule, PreferNoSchedule, NoExecute)")
        key, has_value, value = pair.partition("=")
        toleration = {"key": key, "operator": "Equal" if has_value else "Exists", "effect": effect}
        if has_value:
            toleration["value"] = value
        tolerations.append(toleration)
    return tolerations


# Tasks whose answer depends on folders read at run time (the catalogue, the serving root).
UNCACHED_TASKS = (pipeline_lib.EXAMPLE_GEN, pipeline_lib.DRIFT_GATE, pipeline_lib.CHAMPION)


def build(config: PipelineConfig):
    """The TFX pipeline as Kubeflow runs it, and its runtime parameters by name.

    Runtime parameters replace ``data_dir`` and ``serving_root``; the BackboneFeatures nodes get GPU resources.
    """
    from tfx import v1 as tfx
    from kfp.pipeline_spec import pipeline_spec_pb2

    runner = config.runner
    if not runner.pipeline_root:
        raise ConfigError("runner.pipeline_root is unset: set it to a bucket path the cluster writes "
                          "artifacts to, e.g. --set runner.pipeline_root=gs://my-bucket/placedemarche")
    parameters = {
        "data_dir": tfx.dsl.experimental.RuntimeParameter(
            name="data_dir", ptype=str, default=config.data.data_dir or DEFAULT_DATA_DIR),
        "serving_root": tfx.dsl.experimental.RuntimeParameter(
            name="serving_root", ptype=str,
            default=config.serving.serving_root or os.path.join(runner.pipeline_root, "serving")),
    }
    pipe = pipeline_lib.create_pipeline(
        config,
        pipeline_root=runner.pipeline_root,
        beam_pipeline_args=shlex.split(runner.beam_args),
        runtime_parameters=parameters,
    )
    resources = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec(
        cpu_limit=runner.trainer_cpu, memory_limit=runner.trainer_memory_gb)
    if runner.trainer_gpus:
        resources.accelerator.type = runner.gpu_resource
        resources.accelerator.count = runner.trainer_gpus
    for component in pipe.components:
        if component.id in gpu_steps(config):
            component.with_platform_config(resources)
    return pipe, parameters


def compile_pipeline(config: PipelineConfig, output_file: str) -> Dict[str, Any]:
    """Writes the KFP v2 spec (YAML: pipeline spec, then the Kubernetes platform spec); returns both."""
    from tfx import v1 as tfx

    if not output_file.endswith((".yaml", ".yml")):
        raise ConfigError(f"--output '{output_file}' must end in .yaml (KFP v2 pipeline spec)")
    pipe, parameters = build(config)
    defaults = {name: parameter.default for name, parameter in parameters.items()}
    # Schema 2.1 (typed parameters): what the KFP 2.x backend reads, and what TFX needs to write YAML.
    runner_config = tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
        default_image=config.runner.image, use_pipeline_spec_2_1=True)
    with tempfile.TemporaryDirectory() as tmp:
        tfx.orchestration.experimental.KubeflowV2DagRunner(
            config=runner_config, output_dir=tmp, output_filename="pipeline.yaml"
        ).run(pipe, write_out=True)
        with open(os.path.join(tmp, "pipeline.yaml"), encoding="utf-8") as f:
            text = f.read()
    spec = yaml.safe_load(text)
    # TFX keeps runtime parameter defaults in the PipelineJob's runtimeConfig, which a YAML spec
    # does not carry: put them on the root inputs, where KFP's UI and client take defaults from.
    for name, parameter in spec["root"].get("inputDefinitions", {}).get("parameters", {}).items():
        parameter["defaultValue"] = defaults[name]
        parameter["isOptional"] = True
    # What the catalogue holds (a new batch under the same data_dir) and what the serving root serves
    # are read when the run starts, never a cached answer: the local runner keys these nodes' cache on
    # fingerprints of the folders, which a bucket given as a runtime parameter cannot be when compiling.
    # So on Kubeflow every run ingests again, and what follows re-runs with the new artifacts.
    for task in UNCACHED_TASKS:
        spec["root"]["dag"]["tasks"][task]["cachingOptions"] = {"enableCache": False}
    text = yaml.safe_dump(spec, sort_keys=True)
    platform = _platform_spec(config, spec)
    os.makedirs(os.path.dirname(os.path.abspath(output_file)), exist_ok=True)
    with open(output_file, "w", encoding="utf-8") as f:
        f.write(text.rstrip("\n") + "\n")
        if platform:
            f.write("---\n")
            yaml.safe_dump(platform, f, sort_keys=True)
    return {"pipeline_spec": spec, "platform_spec": platform}


def _platform_spec(config: PipelineConfig, spec: Dict[str, Any]) -> Dict[str, Any]:
    selector = parse_node_selector(config.runner.node_selector)
    tolerations = parse_tolerations(config.runner.tolerations) if config.runner.trainer_gpus else []
    if not selector and not tolerations:
        return {}
    executors = {}
    for step in gpu_steps(config):
        executor = spec["root"]["dag"]["tasks"][step]["componentRef"]["name"]
        executor_label = spec["components"][executor]["executorLabel"]
        entry: Dict[str, Any] = {}
        if selector:
            entry["nodeSelector"] = {"labels": selector}
        if tolerations:
            entry["tolerations"] = tolerations
        executors[executor_label] = entry
    return {"platforms": {"kubernetes": {"deploymentSpec": {"executors": executors}}}}
