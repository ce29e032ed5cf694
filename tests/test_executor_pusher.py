"""ServingPusher's executor, called directly on fake upstream artifacts (as TFX's pusher/executor_test.py).

Each candidate gets a Trainer ``Model`` (a real tiny SavedModel under ``Format-Serving``), a ModelGate
``ModelBlessing`` and an infra validator ``InfraBlessing`` (with its stamped, warmed-up copy when it
passed), with the custom properties those components set. No pipeline runs here.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import keras
import pytest
import tensorflow as tf
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from placedemarche.components import candidate_inputs
from placedemarche.components.infra_validator import executor as infra_executor
from placedemarche.components.infra_validator import warmup
from placedemarche.components.serving_pusher import executor as pusher_executor
from placedemarche.components.serving_pusher import push as push_lib
from placedemarche.components.trainer import export as export_lib
from placedemarche.components.trainer import model as model_lib
from placedemarche.serving import model_contract

LABELS = ["a", "b", "c"]
MODEL_NAME = "product_category"
NOTHING_PUSHED = "no candidate is both blessed and infra-validated: nothing pushed"
FLOOR_REASON = "candidate test accuracy 0.2000 must be >= 0.6000 (evaluation.min_accuracy)"
GAIN_REASON = ("candidate 0.2000 - baseline 0.3000 = -0.1000 must be >= +0.0000 "
               "(evaluation.min_improvement)")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Dict[int, Path]:
    """Three real tiny SavedModels (different heads, so different files)."""
    root = tmp_path_factory.mktemp("pusher_models")
    out = {}
    for seed in (1, 2, 3):
        extractor = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.GlobalAveragePooling2D()])
        head = model_lib.build_head(3, len(LABELS), 4, 0.0, seed)
        export_lib.export(export_lib.ImageClassifier(extractor, head, LABELS, 16), str(root / f"seed{seed}"),
                          {"backbone": "tiny", "seed": seed})
        out[seed] = root / f"seed{seed}"
    return out


@pytest.fixture(scope="module")
def warmup_logs():
    """Warm-up requests as the infra validator builds them, from one tiny example."""
    png = tf.io.encode_png(tf.zeros([16, 16, 3], tf.uint8)).numpy()
    example = tf.train.Example(features=tf.train.Features(feature={
        "image_bytes": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
        "label": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"a"])),
    })).SerializeToString()
    return warmup.build_requests([example], MODEL_NAME)


class Candidates:
    """Builds the Pusher's ``input_dict`` one candidate at a time, as the upstream components write it."""

    def __init__(self, root: Path, warmup_logs):
        self.root, self.logs = root, warmup_logs
        self.input_dict: Dict[str, List] = {}
        self.artifacts: Dict[str, Dict[str, object]] = {}
        self._next_id = 10

    def add(self, name: str, source: Path, *, blessed: bool, accuracy: float, reasons: Sequence[str] = (),
            infra: Optional[str] = "passed", latency: Optional[float] = None, padding: int = 0) -> "Candidates":
        """``infra``: "passed", "failed", "skipped" (the gate did not bless it) or None (no infra input)."""
        folder = self.root / name
        self._next_id += 1
        # The Trainer's Model: the SavedModel under Format-Serving, ``candidate`` and ``role`` properties.
        model = standard_artifacts.Model()
        model.uri = str(folder / "model")
        model.id = self._next_id
        shutil.copytree(source, Path(model.uri) / model_contract.TRAINER_SERVING_SUBDIR)
        if padding:  # a bigger model (the size tie-break)
            (Path(model_contract.serving_dir(model.uri)) / "assets.extra" / "padding.bin").write_bytes(b"x" * padding)
        model.set_string_custom_property("candidate", name)
        model.set_string_custom_property("role", "candidate")
        # The ModelGate's ModelBlessing.
        blessing = standard_artifacts.ModelBlessing()
        blessing.uri = str(folder / "blessing")
        os.makedirs(blessing.uri)
        blessing.set_int_custom_property("blessed", int(blessed))
        blessing.set_float_custom_property("accuracy", accuracy)
        blessing.set_string_custom_property("candidate", name)
        blessing.set_string_custom_property("reasons", json.dumps(list(reasons)))  # as the ModelGate writes them
        blessing.set_string_custom_property("current_model", model.uri)
        blessing.set_int_custom_property("current_model_id", model.id)
        open(os.path.join(blessing.uri, "BLESSED" if blessed else "NOT_BLESSED"), "w").close()
        self.input_dict[candidate_inputs.key(pusher_executor.MODEL_KEY, name)] = [model]
        self.input_dict[candidate_inputs.key(pusher_executor.BLESSING_KEY, name)] = [blessing]
        entry: Dict[str, object] = {"model": model, "blessing": blessing}
        if infra is not None:
            entry["infra"] = self._infra(folder / "infra", name, model, infra, latency)
            self.input_dict[candidate_inputs.key(pusher_executor.INFRA_BLESSING_KEY, name)] = [entry["infra"]]
        self.artifacts[name] = entry
        return self

    def _infra(self, uri: Path, name: str, model, outcome: str, latency: Optional[float]):
        """The InfraBlessing as LocalInfraValidator writes it (stamped copy + warm-up file when passed)."""
        infra = standard_artifacts.InfraBlessing()
        infra.uri = str(uri)
        os.makedirs(infra.uri)
        infra.set_string_custom_property("candidate", name)
        infra.set_int_custom_property("model_id", model.id)
        if outcome == "skipped":
            infra_executor.skip_unblessed(infra)
            return infra
        passed = outcome == "passed"
        if passed:
            staged = path_utils.stamped_model_path(infra.uri)
            shutil.copytree(model_contract.serving_dir(model.uri), staged)
            warmup.write(path_utils.warmup_file_path(staged), self.logs)
        infra.set_int_custom_property("blessed", int(passed))
        infra.set_int_custom_property(infra_executor.HAS_MODEL, int(passed))
        if latency is not None:
            infra.set_float_custom_property("latency_p50_ms", latency)
        open(os.path.join(infra.uri, "INFRA_BLESSED" if passed else "INFRA_NOT_BLESSED"), "w").close()
        return infra

    def stamped(self, name: str) -> str:
        return path_utils.stamped_model_path(self.artifacts[name]["infra"].uri)


def _push(candidates: Candidates, serving_root: Path, out: Path):
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(out)
    os.makedirs(pushed.uri)
    pusher_executor.Executor().Do(candidates.input_dict, {pusher_executor.PUSHED_KEY: [pushed]},
                                  {"serving_root": str(serving_root), "model_name": MODEL_NAME})
    selection = json.loads((out / pusher_executor.SELECTION_FILE).read_text())
    return pushed, selection


def _listing(serving_root: Path) -> List[str]:
    base = serving_root / MODEL_NAME
    return sorted(os.listdir(base)) if base.exists() else []


def test_not_blessed_pushes_nothing_and_says_why(exported, warmup_logs, tmp_path):
    candidates = Candidates(tmp_path, warmup_logs).add(
        "b0_image", exported[1], blessed=False, accuracy=0.2, reasons=[FLOOR_REASON, GAIN_REASON],
        infra="skipped")
    pushed, selection = _push(candidates, tmp_path / "serving", tmp_path / "pushed")

    assert pushed.get_int_custom_property("pushed") == 0
    assert pushed.get_string_custom_property("reason") == NOTHING_PUSHED
    assert pushed.get_string_custom_property("best_candidate") == "b0_image"
    assert not pushed.has_custom_property("pushed_version")
    assert (tmp_path / "pushed" / pusher_executor.NOT_PUSHED_FILE).read_text() == NOTHING_PUSHED + "\n"
    assert not (tmp_path / "pushed" / pusher_executor.PUSHED_FILE).exists()
    assert selection["pushed_candidate"] is None and selection["reason"] == NOTHING_PUSHED
    (entry,) = selection["candidates"]
    assert entry["gate_reasons"] == [FLOOR_REASON, GAIN_REASON]
    assert entry["status"] == f"not blessed by the model gate: {FLOOR_REASON}; {GAIN_REASON}"
    assert (entry["blessed"], entry["infra_blessed"], entry["infra_skipped"], entry["pushed"]) == (False, False, True, False)
    assert not (tmp_path / "serving").exists()  # not even the model folder was created


def test_blessed_but_infra_failed_pushes_nothing(exported, warmup_logs, tmp_path):
    candidates = Candidates(tmp_path, warmup_logs).add("b0_image", exported[1], blessed=True, accuracy=0.9,
                                                       infra="failed", latency=12.0)
    pushed, selection = _push(candidates, tmp_path / "serving", tmp_path / "pushed")

    assert pushed.get_int_custom_property("pushed") == 0
    assert (tmp_path / "pushed" / pusher_executor.NOT_PUSHED_FILE).read_text() == NOTHING_PUSHED + "\n"
    (entry,) = selection["candidates"]
    assert entry["status"] == "blessed, but failed infra validation"
    assert (entry["blessed"], entry["infra_blessed"], entry["infra_skipped"]) == (True, False, False)
    assert entry["latency_ms"] == 12.0 and entry["accuracy"] == 0.9
    assert _listing(tmp_path / "serving") == []


def test_blessed_and_infra_validated_pushes_the_warmed_up_copy_as_version_1(exported, warmup_logs, tmp_path):
    candidates = Candidates(tmp_path, warmup_logs).add("b0_image", exported[1], blessed=True, accuracy=0.9,
                                                       latency=8.5)
    serving = tmp_path / "serving"
    pushed, selection = _push(candidates, serving, tmp_path / "pushed")

    destination = serving / MODEL_NAME / "1"
    stamped = candidates.stamped("b0_image")
    model = candidates.artifacts["b0_image"]["model"]
    assert pushed.get_int_custom_property("pushed") == 1
    assert pushed.get_int_custom_property("pushed_version") == 1
    assert pushed.get_int_custom_property("new_version") == 1
    assert pushed.get_string_custom_property("pushed_destination") == str(destination)
    assert pushed.get_string_custom_property("pushed_candidate") == "b0_image"
    assert pushed.get_string_custom_property("best_candidate") == "b0_image"
    assert pushed.get_string_custom_property("pushed_model") == model.uri
    assert pushed.get_int_custom_property("pushed_model_id") == model.id
    # What is pushed is the infra validator's copy (model + warm-up requests), not the Trainer's.
    assert pushed.get_string_custom_property("pushed_from") == stamped
    assert (tmp_path / "pushed" / pusher_executor.PUSHED_FILE).read_text() == f"{destination}\n"
    assert not (tmp_path / "pushed" / pusher_executor.NOT_PUSHED_FILE).exists()
    assert list(warmup.read(str(destination / "assets.extra" / warmup.WARMUP_FILE))) == warmup_logs
    assert not (Path(model_contract.serving_dir(model.uri)) / "assets.extra" / warmup.WARMUP_FILE).exists()
    assert push_lib.content_digest(str(destination)) == push_lib.content_digest(stamped)
    marker = json.loads((destination / "assets.extra" / model_contract.COMPLETE_MARKER).read_text())
    assert marker["version"] == 1 and marker["source"] == stamped
    assert marker["digest"] == push_lib.content_digest(stamped)
    assert model_contract.read_labels(str(destination)) == LABELS
    assert _listing(serving) == [".version-1", "1"]  # the reservation stays; no staging folder left
    assert selection["pushed_candidate"] == "b0_image" and selection["pushed_version"] == 1
    assert selection["destination"] == str(destination) and selection["new_version"] is True
    assert selection["candidates"][0]["status"] == "blessed and infra-validated"
    assert selection["candidates"][0]["pushed"] is True


def test_without_infra_validation_the_trainers_model_is_pushed(exported, warmup_logs, tmp_path):
    candidates = Candidates(tmp_path, warmup_logs).add("b0_image", exported[2], blessed=True, accuracy=0.7,
                                                       infra=None)
    pushed, selection = _push(candidates, tmp_path / "serving", tmp_path / "pushed")

    source = model_contract.serving_dir(candidates.artifacts["b0_image"]["model"].uri)
    assert source.endswith(model_contract.TRAINER_SERVING_SUBDIR)
    assert pushed.get_string_custom_property("pushed_from") == source
    assert pushed.get_int_custom_property("pushed_version") == 1
    destination = tmp_path / "serving" / MODEL_NAME / "1"
    assert push_lib.content_digest(str(destination)) == push_lib.content_digest(source)
    assert not (destination / "assets.extra" / warmup.WARMUP_FILE).exists()
    (entry,) = selection["candidates"]
    assert entry["infra_blessed"] is None and entry["status"] == "blessed"


def test_of_two_blessed_candidates_the_more_accurate_is_pushed(exported, warmup_logs, tmp_path):
    candidates = (Candidates(tmp_path, warmup_logs)
                  .add("b0_image", exported[1], blessed=True, accuracy=0.8, latency=5.0)
                  .add("b3_text", exported[2], blessed=True, accuracy=0.9, latency=50.0))
    pushed, selection = _push(candidates, tmp_path / "serving", tmp_path / "pushed")

    assert pushed.get_string_custom_property("pushed_candidate") == "b3_text"
    assert pushed.get_int_custom_property("pushed_model_id") == candidates.artifacts["b3_text"]["model"].id
    destination = tmp_path / "serving" / MODEL_NAME / "1"
    assert push_lib.content_digest(str(destination)) == push_lib.content_digest(candidates.stamped("b3_text"))
    assert selection["reason"] == "b3_text: blessed with the best test accuracy (0.9000); also blessed: b0_image (0.8000)"
    assert pushed.get_string_custom_property("selection") == selection["reason"]
    ranked = [(c["rank"], c["name"], c["accuracy"], c["status"], c["pushed"]) for c in selection["candidates"]]
    assert ranked == [(1, "b3_text", 0.9, "blessed and infra-validated", True),
                      (2, "b0_image", 0.8, "blessed and infra-validated", False)]
    assert _listing(tmp_path / "serving") == [".version-1", "1"]


def test_a_more_accurate_candidate_that_failed_infra_validation_is_passed_over(exported, warmup_logs, tmp_path):
    candidates = (Candidates(tmp_path, warmup_logs)
                  .add("b0_image", exported[1], blessed=True, accuracy=0.8, latency=5.0)
                  .add("b7_text", exported[2], blessed=True, accuracy=0.95, infra="failed"))
    pushed, selection = _push(candidates, tmp_path / "serving", tmp_path / "pushed")

    assert pushed.get_string_custom_property("pushed_candidate") == "b0_image"
    assert pushed.get_string_custom_property("best_candidate") == "b0_image"
    statuses = {c["name"]: (c["rank"], c["status"], c["pushed"]) for c in selection["candidates"]}
    assert statuses == {"b7_text": (1, "blessed, but failed infra validation", False),
                        "b0_image": (2, "blessed and infra-validated", True)}


def test_a_tie_in_accuracy_goes_to_the_lower_latency(exported, warmup_logs, tmp_path):
    # "a_slow" comes first by name and is smaller; "b_fast" is bigger but answers faster: latency decides.
    candidates = (Candidates(tmp_path, warmup_logs)
                  .add("a_slow", exported[1], blessed=True, accuracy=0.875, latency=40.0)
                  .add("b_fast", exported[2], blessed=True, accuracy=0.875, latency=15.0, padding=50_000))
    pushed, selection = _push(candidates, tmp_path / "serving", tmp_path / "pushed")

    assert pushed.get_string_custom_property("pushed_candidate") == "b_fast"
    destination = tmp_path / "serving" / MODEL_NAME / "1"
    assert push_lib.content_digest(str(destination)) == push_lib.content_digest(candidates.stamped("b_fast"))
    sizes = {c["name"]: c["size_bytes"] for c in selection["candidates"]}
    assert sizes["b_fast"] > sizes["a_slow"]  # bigger, yet pushed: latency comes before size
    assert selection["reason"].startswith(
        "b_fast: blessed with the best test accuracy (0.8750), tied with a_slow and cheaper to serve "
        f"(latency p50 15.0 ms, {sizes['b_fast']} bytes)")
    assert [c["name"] for c in selection["candidates"]] == ["b_fast", "a_slow"]


def test_a_tie_in_accuracy_and_latency_goes_to_the_smaller_model(exported, warmup_logs, tmp_path):
    candidates = (Candidates(tmp_path, warmup_logs)
                  .add("a_big", exported[1], blessed=True, accuracy=0.875, latency=15.0, padding=50_000)
                  .add("b_small", exported[2], blessed=True, accuracy=0.875, latency=15.0))
    pushed, _ = _push(candidates, tmp_path / "serving", tmp_path / "pushed")
    assert pushed.get_string_custom_property("pushed_candidate") == "b_small"


def test_pushing_the_same_model_again_makes_no_new_version(exported, warmup_logs, tmp_path):
    candidates = Candidates(tmp_path, warmup_logs).add("b0_image", exported[1], blessed=True, accuracy=0.9,
                                                       latency=8.0)
    serving = tmp_path / "serving"
    first, _ = _push(candidates, serving, tmp_path / "pushed-1")
    marker = (serving / MODEL_NAME / "1" / "assets.extra" / model_contract.COMPLETE_MARKER).read_text()
    again, selection = _push(candidates, serving, tmp_path / "pushed-2")

    assert first.get_int_custom_property("new_version") == 1
    assert again.get_int_custom_property("pushed") == 1
    assert again.get_int_custom_property("new_version") == 0
    assert again.get_int_custom_property("pushed_version") == 1
    assert again.get_string_custom_property("pushed_destination") == str(serving / MODEL_NAME / "1")
    assert selection["new_version"] is False and selection["pushed_version"] == 1
    assert _listing(serving) == [".version-1", "1"]  # no new number reserved, nothing copied
    assert (serving / MODEL_NAME / "1" / "assets.extra" / model_contract.COMPLETE_MARKER).read_text() == marker


def test_a_version_deleted_by_an_operator_is_not_reused(exported, warmup_logs, tmp_path):
    serving = tmp_path / "serving"
    first = Candidates(tmp_path / "run1", warmup_logs).add("b0_image", exported[1], blessed=True, accuracy=0.9,
                                                           latency=8.0)
    _push(first, serving, tmp_path / "pushed-1")
    shutil.rmtree(serving / MODEL_NAME / "1")  # a broken version, removed by hand
    second = Candidates(tmp_path / "run2", warmup_logs).add("b0_image", exported[3], blessed=True, accuracy=0.92,
                                                            latency=8.0)
    pushed, selection = _push(second, serving, tmp_path / "pushed-2")

    assert pushed.get_int_custom_property("pushed_version") == 2
    assert pushed.get_int_custom_property("new_version") == 1
    assert _listing(serving) == [".version-1", ".version-2", "2"]
    assert push_lib.complete_versions(str(serving / MODEL_NAME)) == [2]
    marker = json.loads((serving / MODEL_NAME / "2" / "assets.extra" / model_contract.COMPLETE_MARKER).read_text())
    assert marker["version"] == 2 and marker["digest"] == push_lib.content_digest(second.stamped("b0_image"))
    assert selection["destination"] == str(serving / MODEL_NAME / "2")


def test_a_candidate_without_its_gate_blessing_is_an_error(exported, warmup_logs, tmp_path):
    candidates = Candidates(tmp_path, warmup_logs).add("b0_image", exported[1], blessed=True, accuracy=0.9)
    del candidates.input_dict[candidate_inputs.key(pusher_executor.BLESSING_KEY, "b0_image")]
    with pytest.raises(ValueError, match="no model gate blessing for candidate 'b0_image'"):
        _push(candidates, tmp_path / "serving", tmp_path / "pushed")
    assert _listing(tmp_path / "serving") == []
