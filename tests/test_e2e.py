"""The whole pipeline end to end on a small generated sample (run alone with ``pytest -m e2e``).

Small backbones and image sizes so it fits CI; the baseline is made weaker on purpose (trained zero
epochs) so the candidate must be blessed under the real improvement threshold.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from placedemarche.pipeline import local_runner, outputs, pipeline as pipeline_lib, sample_data
from placedemarche.pipeline.cli import main

pytestmark = pytest.mark.e2e

ARGS = [
    "--set", "candidate.backbone=efficientnet_b0", "--set", "candidate.image_size=48",
    "--set", "candidate.weights=none", "--set", "baseline.backbone=vgg16", "--set", "baseline.image_size=32",
    "--set", "baseline.weights=none", "--set", "baseline.epochs=0", "--set", "training.epochs=3",
    "--set", "evaluation.min_accuracy=0.2", "--set", "explain.max_evals=100",
]


def _run(root: Path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["-q", "run", "--data", str(root / "data"), "--output", str(root / "run"), "--json", *ARGS])
    return status, json.loads(out.getvalue())


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    sample_data.make_sample(root / "data", per_class=12, seed=5, show_progress=False)
    first = _run(root)
    second = _run(root)
    return root, first, second


def test_every_component_runs_and_is_recorded(e2e):
    root, (status, report), _ = e2e
    assert status == 0, report["failure"]
    assert [(n["node"], n["state"]) for n in report["nodes"]] == [(n, "COMPLETE") for n in pipeline_lib.ALL_NODES]
    store = outputs.open_store(str(local_runner.metadata_path(root / "run")))
    for node in pipeline_lib.ALL_NODES:
        assert outputs.latest_node_run(store, "placedemarche", node) is not None, node
    types = {t.name for t in store.get_artifact_types()}
    assert {"placedemarche.Explanation", "ModelEvaluation", "InfraBlessing", "PushedModel"} <= types


def test_candidate_is_blessed_over_the_weaker_baseline_and_pushed(e2e):
    root, (_, report), _ = e2e
    gate = report["gate"]
    assert gate["blessed"] and gate["candidate_accuracy"] >= gate["baseline_accuracy"] + 0.01
    assert report["pushed"]["version"] == 1
    served = tf.saved_model.load(report["pushed"]["destination"])
    picture = next((root / "data" / "Images").glob("*.jpg")).read_bytes()
    answer = served.signatures["serving_default"](images=tf.constant([picture]))
    assert answer["probabilities"].shape == (1, 7)
    assert answer["label"].numpy()[0].decode() in (root / "run" / "serving" / "product_category" / "1" /
                                                    "assets.extra" / "labels.txt").read_text().splitlines()


def test_explanations_hold_one_picture_per_test_category(e2e):
    root, (_, report), _ = e2e
    explanations = Path(report["explanations"]["folder"])
    index = json.loads((explanations / "index.json").read_text())
    examples = sorted((root / "run" / "pipeline" / "CatalogueExampleGen").glob("examples/*/Split-test/*.gz"))
    labels = {tf.train.Example.FromString(r.numpy()).features.feature["label"].bytes_list.value[0].decode()
              for r in tf.data.TFRecordDataset([str(e) for e in examples], compression_type="GZIP")}
    assert sorted(i["true_label"] for i in index["images"]) == sorted(labels)
    assert all((explanations / i["overlay"]).stat().st_size > 0 for i in index["images"])
    values = np.load(explanations / "shap_values.npz")
    assert values["values"].shape == (len(labels), 48, 48, 3, 3)
    assert max(i["efficiency_gap"] for i in index["images"]) < 1e-4


def test_second_run_is_served_from_the_cache(e2e):
    root, _, (status, report) = e2e
    assert status == 0
    assert all(n["state"] == "CACHED" for n in report["nodes"]), report["nodes"]
    store = outputs.open_store(str(local_runner.metadata_path(root / "run")))
    for node in pipeline_lib.ALL_NODES:
        assert outputs.count_executions(store, "placedemarche", node) == {"COMPLETE": 1, "CACHED": 1}, node
