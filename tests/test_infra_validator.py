"""Infra validation without Docker: warm-up requests, the separate-process probe, idempotent push."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import keras
import pytest
import tensorflow as tf

from placedemarche.components.infra_validator import executor as infra_executor
from placedemarche.components.infra_validator import warmup
from placedemarche.components.serving_pusher import push as push_lib
from placedemarche.components.trainer import export as export_lib
from placedemarche.components.trainer import model as model_lib

LABELS = ["a", "b", "c"]


def _examples(sample_examples: Path, n: int):
    return warmup.read_examples([str(sample_examples / "Split-test" / "*.gz")], n)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A real exported classifier (both signatures, labels.txt) over a trivial feature extractor."""
    extractor = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.GlobalAveragePooling2D()])
    head = model_lib.build_head(3, len(LABELS), 4, 0.0, 0)
    out = tmp_path_factory.mktemp("tiny") / "model"
    export_lib.export(export_lib.ImageClassifier(extractor, head, LABELS, 16), str(out), {"backbone": "tiny"})
    return out


def _with_warmup(model: Path, examples, dest: Path) -> Path:
    shutil.copytree(model, dest)
    warmup.write(str(dest / "assets.extra" / warmup.WARMUP_FILE), warmup.build_requests(examples, "m"))
    return dest


def test_warmup_requests_use_both_signatures_and_survive_a_round_trip(sample_examples, tmp_path):
    examples = _examples(sample_examples, 3)
    logs = warmup.build_requests(examples, "product_category")
    signatures = [l.predict_log.request.model_spec.signature_name for l in logs]
    assert signatures == ["serving_default", "serving_examples", "serving_default",
                          "serving_default", "serving_examples"]
    batches = [next(iter(l.predict_log.request.inputs.values())).tensor_shape.dim[0].size for l in logs]
    assert batches == [1, 1, 1, 3, 3]
    # serving_default gets the picture bytes a client would send, not the serialized example.
    image = tf.train.Example.FromString(examples[0]).features.feature["image_bytes"].bytes_list.value[0]
    assert tf.make_ndarray(logs[0].predict_log.request.inputs["images"])[0] == image
    path = str(tmp_path / warmup.WARMUP_FILE)
    warmup.write(path, logs)
    assert list(warmup.read(path)) == logs


def test_the_warmup_file_is_the_same_bytes_in_every_process(tmp_path):
    """Re-validating the same model must give the same copy (same digest: nothing pushed again).
    A request's inputs are a protobuf map whose plain serialization follows the process's hash seed."""
    import subprocess
    import sys

    code = ("import sys; from placedemarche.components.infra_validator import warmup; "
            "warmup.write(sys.argv[1], [warmup._predict_log('product_category', 'serving_default', "
            "{'images': [b'picture'], 'text': [b'a watch'], 'brand': [b'x']})])")
    files = []
    for seed in range(4):
        files.append(tmp_path / f"warmup-{seed}")
        subprocess.run([sys.executable, "-c", code, str(files[-1])], check=True, capture_output=True,
                       env={**os.environ, "PYTHONHASHSEED": str(seed)})
    assert len({f.read_bytes() for f in files}) == 1


def test_probe_passes_a_servable_model_in_a_separate_process(tiny_model, sample_examples, tmp_path):
    staged = _with_warmup(tiny_model, _examples(sample_examples, 4), tmp_path / "staged")
    result = infra_executor.run_probe(str(staged), 10_000, str(tmp_path / "result.json"), 300)
    assert result["passed"], result["problems"]
    assert len(result["requests"]) == 6  # 4 single requests + one batch per signature, timed
    assert result["load_seconds"] > 0 and result["latency_ms"]["p95"] > 0
    assert json.loads((tmp_path / "result.json").read_text()) == result


def test_probe_names_the_latency_budget_it_exceeds(tiny_model, sample_examples, tmp_path):
    staged = _with_warmup(tiny_model, _examples(sample_examples, 2), tmp_path / "staged")
    result = infra_executor.run_probe(str(staged), 0.0001, str(tmp_path / "result.json"), 300)
    assert not result["passed"]
    assert "over the 0.0001 ms budget (evaluation.latency_budget_ms)" in result["problems"][0]


class _Broken(tf.Module):
    """Answers serving_default with scores that do not sum to 1 and has no serving_examples."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve(self, images):
        return {"probabilities": tf.fill([tf.shape(images)[0], len(LABELS)], 0.5)}


def test_probe_rejects_a_model_that_answers_wrongly(tiny_model, sample_examples, tmp_path):
    broken = tmp_path / "broken"
    module = _Broken()
    tf.saved_model.save(module, str(broken), signatures={"serving_default": module.serve})
    shutil.copytree(tiny_model / "assets.extra", broken / "assets.extra")
    warmup.write(str(broken / "assets.extra" / warmup.WARMUP_FILE),
                 warmup.build_requests(_examples(sample_examples, 2), "m"))
    result = infra_executor.run_probe(str(broken), 10_000, str(tmp_path / "result.json"), 300)
    assert not result["passed"]
    problems = "\n".join(result["problems"])
    assert "probabilities do not sum to 1" in problems
    assert "the model has no signature 'serving_examples'" in problems


def test_probe_reports_a_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "m" / "assets.extra").mkdir(parents=True)
    result = infra_executor.run_probe(str(tmp_path / "m"), 1000, str(tmp_path / "r.json"), 300)
    assert not result["passed"]
    assert any(p.startswith("missing ") and p.endswith(warmup.WARMUP_FILE) for p in result["problems"])


def test_push_of_the_served_model_is_a_no_op_unless_forced(tiny_model, tmp_path):
    first, new = push_lib.push(str(tiny_model), str(tmp_path), "m")
    assert (Path(first).name, new) == ("1", True)
    again, new = push_lib.push(str(tiny_model), str(tmp_path), "m")
    assert (Path(again).name, new) == ("1", False)
    forced, new = push_lib.push(str(tiny_model), str(tmp_path), "m", force=True)
    assert (Path(forced).name, new) == ("2", True)
    assert push_lib.content_digest(forced) == push_lib.content_digest(str(tiny_model))
    # No staging left; the reservations of versions 1 and 2 stay (a number is never handed out twice).
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [".version-1", ".version-2", "1", "2"]
