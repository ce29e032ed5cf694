"""The TF Serving manifests: valid against the Kubernetes schemas, and agreeing with the pipeline."""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest
import tensorflow as tf
import yaml

from placedemarche.pipeline.config import load_config
from placedemarche.serving import tfs_config

ROOT = Path(__file__).resolve().parents[1] / "kubernetes" / "serving"
K8S_VERSION = "1.30.0"
CONFIG = load_config()


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _base() -> dict:
    kustomization = _load(ROOT / "base" / "kustomization.yaml")
    return {(d["kind"], d["metadata"]["name"]): d for d in (_load(ROOT / "base" / f) for f in kustomization["resources"])}


def _merge(base, patch):
    """Kubernetes strategic merge as far as these manifests need: maps merge, containers by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else value
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(x, dict) and "name" in x for x in base + patch):
        out = [copy.deepcopy(x) for x in base]
        for item in patch:
            match = next((i for i, x in enumerate(out) if x["name"] == item["name"]), None)
            if match is None:
                out.append(item)
            else:
                out[match] = _merge(out[match], item)
        return out
    return patch


def _gpu_deployment() -> dict:
    overlay = _load(ROOT / "overlays" / "gpu" / "kustomization.yaml")
    assert overlay["resources"] == ["../../base"]
    deployment = _base()[("Deployment", "product-category-serving")]
    for patch in overlay["patches"]:
        deployment = _merge(deployment, _load(ROOT / "overlays" / "gpu" / patch["path"]))
    return deployment


def test_every_manifest_is_valid_against_the_kubernetes_schemas():
    documents = list(_base().values()) + [_gpu_deployment()]
    assert {kind for kind, _ in _base()} == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler",
                                             "PodDisruptionBudget", "PersistentVolumeClaim"}
    for document in documents:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_the_validator_catches_a_broken_manifest():
    deployment = copy.deepcopy(_base()[("Deployment", "product-category-serving")])
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8500"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def _container(deployment):
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_ports_model_name_and_base_path_agree_with_the_pipeline():
    base = _base()
    deployment = base[("Deployment", "product-category-serving")]
    container = _container(deployment)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": CONFIG.serving.grpc_port, "http": CONFIG.serving.rest_port}
    service = base[("Service", "product-category-serving")]
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == ports
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert container["args"] == tfs_config.tfserving_args(CONFIG)
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": f"/v1/models/{CONFIG.serving.model_name}", "port": "http"}
    # The model volume is mounted where models.config says the versions are.
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert CONFIG.serving.base_path.startswith(mounts["models"]["mountPath"] + "/") and mounts["models"]["readOnly"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    claim = volumes["models"]["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in base
    assert volumes["config"]["configMap"]["name"] == tfs_config.CONFIGMAP_NAME
    assert mounts["config"]["mountPath"] == tfs_config.CONFIG_DIR


def test_configmap_is_what_the_pipeline_config_generates():
    assert (ROOT / "base" / "configmap.yaml").read_text() == tfs_config.configmap_yaml(CONFIG)
    data = _base()[("ConfigMap", tfs_config.CONFIGMAP_NAME)]["data"]
    assert f'name: "{CONFIG.serving.model_name}"' in data["models.config"]
    assert f'base_path: "{CONFIG.serving.base_path}"' in data["models.config"]


def test_image_matches_the_tensorflow_release_and_runs_unprivileged():
    deployment = _base()[("Deployment", "product-category-serving")]
    major_minor = ".".join(tf.__version__.split(".")[:2])
    assert _container(deployment)["image"].startswith(f"tensorflow/serving:{major_minor}.")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert _container(deployment)["securityContext"]["allowPrivilegeEscalation"] is False
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget"):
        target = _base()[(kind, "product-category-serving")]["spec"]
        selector = target.get("scaleTargetRef", {}).get("name") or target["selector"]["matchLabels"]["app.kubernetes.io/name"]
        assert selector == "product-category-serving"


def test_gpu_overlay_asks_for_a_gpu_with_the_gpu_image():
    container = _container(_gpu_deployment())
    assert container["image"].endswith("-gpu") and container["image"].split(":")[1].startswith(
        _container(_base()[("Deployment", "product-category-serving")])["image"].split(":")[1])
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["args"] == tfs_config.tfserving_args(CONFIG)  # the patch keeps everything else
    assert _gpu_deployment()["spec"]["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
