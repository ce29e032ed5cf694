"""Compiling for Kubeflow Pipelines v2, offline: tasks and order, image, GPUs, runtime parameters."""

from __future__ import annotations

import pytest
import yaml

from placedemarche.pipeline import kubeflow, pipeline as pipeline_lib
from placedemarche.pipeline.cli import main
from placedemarche.pipeline.config import ConfigError, load_config

CONFIG = load_config()
FEATURES = list(pipeline_lib.feature_groups(CONFIG))  # the backbone steps: they get the GPUs
TRAINERS = [pipeline_lib.trainer_id(c.name) for c in CONFIG.enabled_candidates] + [pipeline_lib.BASELINE_TRAINER]

ARGS = ["--set", "runner.pipeline_root=gs://bucket/placedemarche", "--set", "runner.image=europe-docker.pkg.dev/p/r/placedemarche:1.0",
        "--set", "runner.node_selector=cloud.google.com/gke-accelerator=nvidia-l4",
        "--set", "runner.beam_args=--runner=DataflowRunner --project=p --region=europe-west1"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("kfp") / "pipeline.yaml"
    assert main(["-q", "compile", "--target", "kubeflow", "--output", str(out), *ARGS]) == 0
    documents = list(yaml.safe_load_all(out.read_text()))
    assert len(documents) == 2
    return documents


def _upstream(spec, task):
    return set(spec["root"]["dag"]["tasks"][task].get("dependentTasks", []))


def test_every_component_is_a_task_in_dependency_order(compiled):
    spec, _ = compiled
    assert set(spec["root"]["dag"]["tasks"]) == set(pipeline_lib.node_ids(CONFIG))
    assert FEATURES == ["Features_efficientnet_b7", "Features_vgg19_2views"]  # one per backbone, shared
    assert _upstream(spec, pipeline_lib.STATISTICS_GEN) == {pipeline_lib.EXAMPLE_GEN}
    # The backbone steps wait for the data gate although they do not consume its output.
    for step in FEATURES + TRAINERS:
        assert pipeline_lib.DATA_GATE in _upstream(spec, step)
    assert "Features_efficientnet_b7" in _upstream(spec, "Trainer_b7_image")
    assert "Features_efficientnet_b7" in _upstream(spec, "Trainer_b7_text")
    assert "Features_vgg19_2views" in _upstream(spec, pipeline_lib.BASELINE_TRAINER)
    assert set(TRAINERS) <= _upstream(spec, pipeline_lib.EVALUATOR)
    for name in ("b7_image", "b7_text"):
        assert pipeline_lib.EVALUATOR in _upstream(spec, pipeline_lib.gate_id(name))
        assert {pipeline_lib.gate_id(name), pipeline_lib.infra_id(name)} <= _upstream(spec, pipeline_lib.PUSHER)
        assert pipeline_lib.trainer_id(name) in _upstream(spec, pipeline_lib.EXPLAINER)
    assert pipeline_lib.PUSHER in _upstream(spec, pipeline_lib.EXPLAINER)


def test_every_step_runs_the_project_image(compiled):
    spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == len(pipeline_lib.node_ids(CONFIG))
    images = {e["container"]["image"] for e in executors.values() if "container" in e}
    assert images == {"europe-docker.pkg.dev/p/r/placedemarche:1.0"}
    args = " ".join(executors["Trainer_b7_text_executor"]["container"]["args"])
    assert "placedemarche.components.trainer.executor.Executor" in args  # installed in the image, not uploaded
    gen_args = " ".join(executors["CatalogueExampleGen_executor"]["container"]["args"])
    assert "--runner=DataflowRunner" in gen_args


def test_backbone_steps_request_a_gpu_with_node_selector_and_toleration(compiled):
    spec, platform = compiled
    executors = spec["deploymentSpec"]["executors"]
    for step in FEATURES:
        resources = executors[f"{step}_executor"]["container"]["resources"]
        assert resources["accelerator"] == {"type": "nvidia.com/gpu", "count": "1"}
        assert resources["cpuLimit"] == 8.0 and resources["memoryLimit"] == 32.0
        k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"][f"{step}_executor"]
        assert k8s["nodeSelector"] == {"labels": {"cloud.google.com/gke-accelerator": "nvidia-l4"}}
        assert k8s["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    for step in TRAINERS + [pipeline_lib.EVALUATOR]:  # heads train in seconds on the features
        assert "resources" not in executors[f"{step}_executor"]["container"]
    assert set(platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]) == {f"{s}_executor" for s in FEATURES}


def test_catalogue_and_serving_root_are_runtime_parameters(compiled):
    spec, _ = compiled
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["data_dir"]["parameterType"] == "STRING"
    assert parameters["serving_root"]["defaultValue"] == "gs://bucket/placedemarche/serving"
    gen_inputs = spec["root"]["dag"]["tasks"][pipeline_lib.EXAMPLE_GEN]["inputs"]["parameters"]
    assert gen_inputs["data_dir"] == {"componentInputParameter": "data_dir"}


def test_the_champion_is_resolved_from_the_runtime_serving_root_on_every_run(compiled):
    spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    champion = tasks[pipeline_lib.CHAMPION]
    assert champion["inputs"]["parameters"]["serving_root"] == {"componentInputParameter": "serving_root"}
    # What is served and what the catalogue holds are read at run time, never a cached answer.
    for task in (pipeline_lib.CHAMPION, pipeline_lib.EXAMPLE_GEN, pipeline_lib.DRIFT_GATE):
        assert tasks[task]["cachingOptions"] == {"enableCache": False}, task
    assert tasks[pipeline_lib.STATISTICS_GEN]["cachingOptions"] == {"enableCache": True}
    assert pipeline_lib.CHAMPION in _upstream(spec, pipeline_lib.EVALUATOR)
    for name in ("b7_image", "b7_text"):
        assert pipeline_lib.CHAMPION in _upstream(spec, pipeline_lib.gate_id(name))
    # The drift gate runs on the data stages' side: nothing trains before it passed.
    assert pipeline_lib.DRIFT_GATE in _upstream(spec, pipeline_lib.DATA_GATE)


def test_compile_without_pipeline_root_says_what_to_set(tmp_path, capsys):
    assert main(["-q", "compile", "--output", str(tmp_path / "p.yaml")]) == 2
    assert "runner.pipeline_root is unset" in capsys.readouterr().err


def test_cpu_only_backbone_steps_get_no_accelerator_or_tolerations(tmp_path):
    cfg = load_config(None, ["runner.pipeline_root=gs://b/p", "runner.trainer_gpus=0"])
    result = kubeflow.compile_pipeline(cfg, str(tmp_path / "p.yaml"))
    resources = result["pipeline_spec"]["deploymentSpec"]["executors"]["Features_efficientnet_b7_executor"]["container"]["resources"]
    assert "accelerator" not in resources
    assert result["platform_spec"] == {}


@pytest.mark.parametrize("key,value,message", [
    ("runner.node_selector", "gpu", "must look like key=value"),
    ("runner.tolerations", "gpu=yes:Sometimes", "must look like key[=value]:NoSchedule"),
])
def test_bad_scheduling_settings_are_refused(key, value, message, tmp_path):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        kubeflow.compile_pipeline(load_config(None, ["runner.pipeline_root=gs://b/p", f"{key}={value}"]),
                                  str(tmp_path / "p.yaml"))


def test_dockerfile_installs_the_locked_set_and_the_project_on_the_same_python():
    """The image cannot be built here (no Docker engine); check it matches the tested install."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    dockerfile = (root / "Dockerfile").read_text()
    python = (root / ".python-version").read_text().strip()
    assert f"ARG PYTHON_IMAGE=python:{python}-slim" in dockerfile
    assert "pip install -r requirements-lock.txt" in dockerfile
    assert "pip install --no-deps ." in dockerfile
    assert "placedemarche fetch-weights $BAKE_WEIGHTS" in dockerfile
    for package in ("pipeline/", "components/", "serving/"):
        assert f"COPY {package} {package}" in dockerfile
    assert "USER 1000:1000" in dockerfile
