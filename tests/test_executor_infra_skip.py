"""LocalInfraValidator's executor, called directly: a model the gate did not bless is not probed; a
blessed one is loaded in a separate process with its warm-up requests (image-only and image + text)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from placedemarche.components.infra_validator import executor as infra_executor
from placedemarche.components.infra_validator import warmup
from placedemarche.components.trainer import export as export_lib
from placedemarche.components.trainer import model as model_lib
from placedemarche.components.trainer import text as text_lib
from placedemarche.components.trainer import train as train_lib
from placedemarche.serving import model_contract

LABELS = ["Baby Care", "Beauty and Personal Care", "Computers", "Home Decor & Festive Needs", "Home Furnishing",
          "Kitchen & Dining", "Watches"]
TEXT = ("product_name", "description")
MODEL_NAME = "product_category"


def _extractor():
    return keras.Sequential([keras.Input((16, 16, 3)), keras.layers.GlobalAveragePooling2D()])


@pytest.fixture(scope="module")
def trained_models(sample_examples, tmp_path_factory):
    """Trainer-like Model folders (SavedModel under Format-Serving): image only, and image + text."""
    root = tmp_path_factory.mktemp("infra_models")
    image = export_lib.ImageClassifier(_extractor(), model_lib.build_head(3, len(LABELS), 4, 0.0, 1), LABELS, 16)
    export_lib.export(image, str(root / "image" / model_contract.TRAINER_SERVING_SUBDIR), {"backbone": "tiny"})
    settings = text_lib.TextSettings(min_df=1)
    texts = train_lib.read_examples([str(sample_examples / "Split-train" / "*.gz")], TEXT).text(TEXT)
    vocabulary = text_lib.fit_vocabulary(texts, settings)
    both = export_lib.Classifier(
        LABELS, 16, extractor=_extractor(), image_head=model_lib.build_head(3, len(LABELS), 4, 0.0, 2),
        featurizer=text_lib.TextFeaturizer(vocabulary, settings),
        text_head=model_lib.build_text_head(len(vocabulary), len(LABELS), 0.0, 3), text_columns=TEXT)
    export_lib.export(both, str(root / "image_text" / model_contract.TRAINER_SERVING_SUBDIR), {"backbone": "tiny"})
    return {"image": root / "image", "image_text": root / "image_text"}


def _examples(uri: Path):
    examples = standard_artifacts.Examples()
    examples.uri = str(uri)
    return examples


def _model(uri: Path, name: str, artifact_id: int):
    model = standard_artifacts.Model()
    model.uri = str(uri)
    model.id = artifact_id
    model.set_string_custom_property("candidate", name)
    return model


def _gate_blessing(blessed: bool):
    """The ModelGate's ModelBlessing (only ``blessed`` matters here)."""
    blessing = standard_artifacts.ModelBlessing()
    blessing.set_int_custom_property("blessed", int(blessed))
    blessing.set_float_custom_property("accuracy", 0.9 if blessed else 0.1)
    return blessing


def _run(model, examples, out: Path, gate=None, budget_ms: float = 60_000, num_examples: int = 4):
    blessing = standard_artifacts.InfraBlessing()
    blessing.uri = str(out)
    os.makedirs(blessing.uri)
    inputs = {infra_executor.MODEL_KEY: [model], infra_executor.EXAMPLES_KEY: [examples]}
    if gate is not None:
        inputs[infra_executor.MODEL_BLESSING_KEY] = [gate]
    infra_executor.Executor().Do(
        inputs, {infra_executor.BLESSING_KEY: [blessing]},
        {"model_name": MODEL_NAME, "latency_budget_ms": budget_ms, "num_examples": num_examples,
         "timeout_seconds": 120, "split": "test"})
    result = json.loads((out / infra_executor.RESULT_FILE).read_text())
    return blessing, result


def test_a_model_the_gate_did_not_bless_is_not_probed(tmp_path, monkeypatch):
    def no_probe(*args, **kwargs):
        raise AssertionError("the probe must not run for a model the gate did not bless")

    monkeypatch.setattr(infra_executor, "run_probe", no_probe)
    model = _model(tmp_path / "no-such-model", "b0_image", 7)  # not even read
    start = time.perf_counter()
    blessing, result = _run(model, _examples(tmp_path / "no-such-examples"), tmp_path / "infra", gate=_gate_blessing(False))
    assert time.perf_counter() - start < 5

    assert result == {"passed": False, "skipped": True, "problems": [infra_executor.SKIPPED_REASON]}
    assert "did not bless" in result["problems"][0]
    assert blessing.get_int_custom_property("skipped") == 1
    assert blessing.get_int_custom_property("blessed") == 0
    assert blessing.get_int_custom_property(infra_executor.HAS_MODEL) == 0
    assert blessing.get_string_custom_property("candidate") == "b0_image"
    assert blessing.get_int_custom_property("model_id") == 7
    assert sorted(os.listdir(blessing.uri)) == ["INFRA_NOT_BLESSED", infra_executor.RESULT_FILE]  # no stamped model


def test_a_blessed_image_model_is_probed_and_its_warmed_up_copy_kept(trained_models, sample_examples, tmp_path):
    model = _model(trained_models["image"], "b0_image", 8)
    blessing, result = _run(model, _examples(sample_examples), tmp_path / "infra", gate=_gate_blessing(True))

    assert result["passed"] is True, result["problems"]
    assert result["problems"] == []
    assert blessing.get_int_custom_property("blessed") == 1
    assert blessing.get_int_custom_property(infra_executor.HAS_MODEL) == 1
    assert not blessing.has_custom_property("skipped") or blessing.get_int_custom_property("skipped") == 0
    assert blessing.get_float_custom_property("latency_p50_ms") == pytest.approx(result["latency_ms"]["p50"])
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["max"]
    assert os.path.exists(os.path.join(blessing.uri, "INFRA_BLESSED"))
    assert not os.path.exists(os.path.join(blessing.uri, "INFRA_NOT_BLESSED"))
    staged = Path(path_utils.stamped_model_path(blessing.uri))
    assert result["model"] == str(staged)
    source = Path(model_contract.serving_dir(model.uri))
    assert (staged / "saved_model.pb").read_bytes() == (source / "saved_model.pb").read_bytes()
    logs = list(warmup.read(str(staged / "assets.extra" / warmup.WARMUP_FILE)))
    shapes = [(l.predict_log.request.model_spec.signature_name, sorted(l.predict_log.request.inputs)) for l in logs]
    # 4 examples: two through each signature at batch 1, then one batch per signature; no text anywhere.
    assert shapes[:6] == [("serving_default", ["images"]), ("serving_examples", ["examples"])] * 3
    # Anything after them is another client request through serving_default (e.g. a full-size photo).
    assert all(shape == ("serving_default", ["images"]) for shape in shapes[6:])
    assert all(l.predict_log.request.model_spec.name == MODEL_NAME for l in logs)
    # Every request was answered and timed, at its batch size.
    assert [r["batch"] for r in result["requests"]][:6] == [1, 1, 1, 1, 4, 4]
    assert [r["request"] for r in result["requests"]] == list(range(len(logs)))


def test_a_failed_probe_is_not_blessed_and_leaves_nothing_to_push(trained_models, sample_examples, tmp_path,
                                                                    monkeypatch):
    """The executor's side of a failed probe (the probe's own checks are in test_infra_validator.py)."""
    probed = []

    def failing_probe(model_dir, budget_ms, result_path, timeout_seconds):
        probed.append((model_dir, budget_ms, timeout_seconds))
        assert os.path.isfile(os.path.join(model_dir, "assets.extra", warmup.WARMUP_FILE))  # staged with its requests
        result = {"passed": False, "problems": ["request 3 (serving_default, batch 1) took 900 ms, over the 250 ms budget"],
                  "latency_ms": {"p50": 700.0, "p95": 900.0, "max": 900.0}}
        with open(result_path, "w", encoding="utf-8") as f:
            json.dump(result, f)
        return result

    monkeypatch.setattr(infra_executor, "run_probe", failing_probe)
    blessing, result = _run(_model(trained_models["image"], "b0_image", 9), _examples(sample_examples),
                            tmp_path / "infra", gate=_gate_blessing(True), budget_ms=250, num_examples=2)
    assert probed == [(path_utils.stamped_model_path(blessing.uri), 250.0, 120)]
    assert result["passed"] is False and "over the 250 ms budget" in result["problems"][0]
    assert blessing.get_int_custom_property("blessed") == 0
    assert blessing.get_int_custom_property(infra_executor.HAS_MODEL) == 0
    assert blessing.get_float_custom_property("latency_p50_ms") == 700.0
    assert sorted(os.listdir(blessing.uri)) == ["INFRA_NOT_BLESSED", infra_executor.RESULT_FILE]  # copy removed


def test_a_model_that_reads_text_is_warmed_up_with_text_and_without(trained_models, sample_examples, tmp_path):
    model = _model(trained_models["image_text"], "b0_text", 10)
    blessing, result = _run(model, _examples(sample_examples), tmp_path / "infra", gate=_gate_blessing(True))

    assert result["passed"] is True, result["problems"]
    assert blessing.get_int_custom_property("blessed") == 1 and blessing.get_int_custom_property("has_model") == 1
    staged = Path(path_utils.stamped_model_path(blessing.uri))
    # The signature's default lets a request leave the text out (TF Serving fills it in; so does the probe).
    defaults = model_contract.signature_defaults(str(staged))
    assert [v.decode() for v in defaults[model_contract.SERVING_DEFAULT][model_contract.TEXT].tolist()] == [""]
    logs = list(warmup.read(str(staged / "assets.extra" / warmup.WARMUP_FILE)))
    records = warmup.read_examples([str(sample_examples / "Split-test" / "*.gz")], 4)
    parsed = [tf.train.Example.FromString(r).features.feature for r in records]
    texts = [" ".join(f[c].bytes_list.value[0].decode() for c in TEXT).strip() for f in parsed]
    images = [f["image_bytes"].bytes_list.value[0] for f in parsed]
    shapes = [(l.predict_log.request.model_spec.signature_name, sorted(l.predict_log.request.inputs)) for l in logs]
    assert shapes[:7] == [("serving_default", ["images", "text"]), ("serving_examples", ["examples"])] * 3 + [
        ("serving_default", ["images"])]
    assert all(signature == "serving_default" for signature, _ in shapes[7:])
    single = logs[0].predict_log.request.inputs
    assert tf.make_ndarray(single["text"]).tolist() == [texts[0].encode()]
    assert tf.make_ndarray(single["images"]).tolist() == [images[0]]
    batch = logs[4].predict_log.request.inputs
    assert [t.decode() for t in tf.make_ndarray(batch["text"]).tolist()] == texts
    image_only = logs[6].predict_log.request.inputs
    assert tf.make_ndarray(image_only["images"]).tolist() == images[:2]
    assert all(texts)  # the catalogue's listings do have text: these requests really carry it
    # Every request answered, the image-only one included (with the default text).
    assert [(r["signature"], r["batch"]) for r in result["requests"]][:7] == [
        ("serving_default", 1), ("serving_examples", 1), ("serving_default", 1), ("serving_examples", 1),
        ("serving_default", 4), ("serving_examples", 4), ("serving_default", 2)]
    assert [r["request"] for r in result["requests"]] == list(range(len(logs)))
    # What the image-only request gets (the default text, as TF Serving and the probe fill it in) is the
    # image head's own answer: no text, no fusion.
    loaded = tf.saved_model.load(str(staged))
    default_text = tf.constant(defaults[model_contract.SERVING_DEFAULT][model_contract.TEXT])
    without = loaded.signatures[model_contract.SERVING_DEFAULT](
        images=tf.constant(images[:2]), text=default_text)["probabilities"].numpy()
    branch = loaded.signatures[model_contract.SERVING_IMAGE_BRANCH]
    pixels = model_lib.decode_batch(tf.constant(images[:2]), 16)
    np.testing.assert_allclose(without, branch(pixels=pixels)["probabilities"].numpy(), atol=1e-6)
