"""`placedemarche run` through TFX: data stages then both Trainers, metadata, cache."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline import local_runner, outputs, pipeline as pipeline_lib, sample_data
from pipeline.cli import main

SMALL = [
    "--set", "candidate.backbone=efficientnet_b0", "--set", "candidate.image_size=48",
    "--set", "candidate.weights=none", "--set", "baseline.backbone=vgg16",
    "--set", "baseline.image_size=32", "--set", "baseline.weights=none",
    "--set", "training.epochs=3",
]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline_run")
    sample_data.make_sample(root / "data", per_class=12, seed=5, show_progress=False)
    return root


def _run(capsys, root):
    status = main(["-q", "run", "--data", str(root / "data"), "--output", str(root / "run"), "--json", *SMALL])
    return status, json.loads(capsys.readouterr().out)


def test_run_trains_both_models(small_run, capsys):
    status, report = _run(capsys, small_run)
    assert status == 0, report["failure"]
    assert [n["node"] for n in report["nodes"]] == list(pipeline_lib.DATA_STAGES + pipeline_lib.TRAINERS)
    assert all(n["state"] == "COMPLETE" for n in report["nodes"]), report["nodes"]
    assert report["models"]["candidate"]["backbone"] == "efficientnet_b0"
    assert report["models"]["baseline"]["backbone"] == "vgg16"
    for model in report["models"].values():
        assert model["epochs_run"] == 3 and 0.0 <= model["val_accuracy"] <= 1.0
        loaded = tf.saved_model.load(model["model"])
        picture = next((small_run / "data" / "Images").glob("*.jpg")).read_bytes()
        probabilities = loaded.signatures["serving_default"](images=tf.constant([picture]))["probabilities"]
        assert probabilities.shape == (1, 7)
        np.testing.assert_allclose(probabilities.numpy().sum(), 1.0, atol=1e-5)


def test_second_run_is_served_from_cache(small_run, capsys):
    status, report = _run(capsys, small_run)
    assert status == 0
    assert all(n["state"] == "CACHED" for n in report["nodes"]), report["nodes"]
    store = outputs.open_store(str(local_runner.metadata_path(small_run / "run")))
    for node in pipeline_lib.TRAINERS:
        assert outputs.count_executions(store, "placedemarche", node) == {"COMPLETE": 1, "CACHED": 1}


def test_missing_imagenet_weights_fail_the_trainer_with_the_file_name(small_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras-home"))

    def no_network(*args, **kwargs):
        raise Exception("URL fetch failure: no network (simulated)")

    # The Trainer runs in this process under the local runner: no download is even attempted.
    monkeypatch.setattr(keras.src.utils.file_utils, "get_file", no_network)
    # The small recipe, but the candidate asks for ImageNet weights, which cannot be downloaded.
    cleaned = [*SMALL, "--set", "candidate.weights=imagenet"]
    status = main(["-q", "run", "--data", str(small_run / "data"), "--output", str(tmp_path / "run"), "--json", *cleaned])
    report = json.loads(capsys.readouterr().out)
    assert status == 1
    assert "efficientnetb0_notop.h5" in report["failure"]
    states = {n["node"]: n["state"] for n in report["nodes"]}
    assert states[pipeline_lib.CANDIDATE_TRAINER] == "FAILED"
