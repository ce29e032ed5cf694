"""`placedemarche run` through TFX: data stages then both Trainers, metadata, cache."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from placedemarche.pipeline import local_runner, outputs, pipeline as pipeline_lib, sample_data
from placedemarche.pipeline.cli import main

SMALL = [
    "--set", "candidate.backbone=efficientnet_b0", "--set", "candidate.image_size=48",
    "--set", "candidate.weights=none", "--set", "baseline.backbone=vgg16",
    "--set", "baseline.image_size=32", "--set", "baseline.weights=none",
    "--set", "training.epochs=3",
    # Thresholds every candidate passes: these tests check the wiring, not the models' quality.
    "--set", "evaluation.min_accuracy=0", "--set", "evaluation.min_improvement=-1",
]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline_run")
    sample_data.make_sample(root / "data", per_class=12, seed=5, show_progress=False)
    return root


def _run(capsys, root, *extra):
    status = main(["-q", "run", "--data", str(root / "data"), "--output", str(root / "run"), "--json", *SMALL, *extra])
    return status, json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def first_run(small_run):
    """The first run's status and JSON report (later tests run the pipeline again)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        status = main(["-q", "run", "--data", str(small_run / "data"), "--output", str(small_run / "run"),
                       "--json", *SMALL])
    return status, json.loads(buffer.getvalue())


def test_run_trains_both_models(small_run, first_run):
    status, report = first_run
    assert status == 0, report["failure"]
    assert [n["node"] for n in report["nodes"]] == list(pipeline_lib.ALL_NODES)
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


def _test_outcomes(small_run, model_dir):
    """The model's probabilities and true class ids on the test split, computed here, independently
    of TFMA (through ``serving_examples``, as TF Serving and the Evaluator call it)."""
    from placedemarche.components.model_gate import predict

    files = sorted((small_run / "run" / "pipeline" / "CatalogueExampleGen").glob("examples/*/Split-test/*.gz"))
    assert files, "no test split was written"
    signature = tf.saved_model.load(str(model_dir)).signatures["serving_examples"]
    labels = predict.read_labels(str(model_dir))
    probabilities, truth = [], []
    for batch in tf.data.TFRecordDataset([str(f) for f in files], compression_type="GZIP").batch(32):
        probabilities.append(signature(examples=batch)["probabilities"].numpy())
        parsed = tf.io.parse_example(batch, {"label": tf.io.FixedLenFeature([], tf.string)})
        truth.extend(labels.index(v.decode("utf-8")) for v in parsed["label"].numpy())
    return np.concatenate(probabilities), np.array(truth)


def test_model_gate_compares_both_models_on_the_test_split(small_run, first_run):
    _, report = first_run
    gate = report["gate"]
    assert gate["blessed"] is True
    comparison = json.loads((Path(gate["comparison"]) / "comparison.json").read_text())
    outcomes = {}
    for role in ("candidate", "baseline"):
        probabilities, truth = _test_outcomes(small_run, report["models"][role]["model"])
        predicted = probabilities.argmax(axis=1)
        outcomes[role] = predicted == truth
        # What TFMA measured is what the exported model does on the test split.
        assert comparison[role]["accuracy"] == pytest.approx(float(outcomes[role].mean()))
        matrix = np.zeros((7, 7), int)
        np.add.at(matrix, (truth, predicted), 1)
        assert comparison[role]["confusion_matrix"] == matrix.tolist()
        assert comparison["tfma"][role]["accuracy"] == pytest.approx(comparison[role]["accuracy"], abs=1e-6)
    assert len(truth) == gate["test_examples"] > 0
    # McNemar's discordant counts from TFMA's paired metric, checked against the outcomes here.
    c, b = outcomes["candidate"], outcomes["baseline"]
    assert comparison["mcnemar"]["candidate_only_correct"] == int(np.sum(c & ~b))
    assert comparison["mcnemar"]["baseline_only_correct"] == int(np.sum(~c & b))
    assert [c["name"] for c in comparison["checks"]] == ["accuracy_floor", "improvement_over_baseline", "tfma_evaluator"]
    assert comparison["tfma"]["validation_ok"] and comparison["tfma"]["evaluator_blessed"]
    store = outputs.open_store(str(local_runner.metadata_path(small_run / "run")))
    blessing = outputs.latest_node_run(store, "placedemarche", pipeline_lib.MODEL_GATE).outputs["blessing"][0]
    assert (Path(blessing) / "BLESSED").exists()


def test_second_run_is_served_from_cache(small_run, first_run, capsys):
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


def test_unreachable_threshold_refuses_the_candidate_without_retraining(small_run, capsys):
    status, report = _run(capsys, small_run, "--set", "evaluation.min_improvement=1.0")
    assert status == 0  # not blessing is a normal outcome
    assert report["gate"]["blessed"] is False
    failed = [c for c in report["gate"]["checks"] if not c["passed"]]
    # The gate's own check and TFMA's change threshold both refuse it.
    assert [c["name"] for c in failed] == ["improvement_over_baseline", "tfma_evaluator"]
    assert "(evaluation.min_improvement)" in failed[0]["explanation"]
    assert "accuracy change vs baseline" in failed[1]["explanation"] and "+1.0000" in failed[1]["explanation"]
    states = {n["node"]: n["state"] for n in report["nodes"]}
    assert states[pipeline_lib.CANDIDATE_TRAINER] == states[pipeline_lib.BASELINE_TRAINER] == "CACHED"
    assert states[pipeline_lib.MODEL_GATE] == states[pipeline_lib.EVALUATOR] == "COMPLETE"
    assert report["pushed"] == {"reason": "the model gate did not bless the candidate"}
    versions = sorted(p.name for p in (small_run / "run" / "serving" / "product_category").iterdir())
    assert versions == ["1"]  # only the earlier, blessed push


def test_blessed_model_is_pushed_and_answers_as_the_gate_saw(small_run, first_run):
    _, report = first_run
    assert report["pushed"]["version"] == 1
    destination = Path(report["pushed"]["destination"])
    assert destination == small_run / "run" / "serving" / "product_category" / "1"
    assert sorted(p.name for p in destination.parent.iterdir()) == ["1"]  # no staging left behind
    # The pushed copy answers exactly as the model the Evaluator evaluated, and so gives its accuracy.
    served, truth = _test_outcomes(small_run, destination)
    evaluated, _ = _test_outcomes(small_run, report["models"]["candidate"]["model"])
    np.testing.assert_allclose(served, evaluated, atol=1e-5)
    assert float((served.argmax(axis=1) == truth).mean()) == pytest.approx(report["gate"]["candidate_accuracy"])
    # What was pushed is the infra-validated copy: it carries TF Serving's warm-up requests.
    assert (destination / "assets.extra" / "tf_serving_warmup_requests").stat().st_size > 0
