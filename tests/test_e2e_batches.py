"""The production loop end to end (issue 14): catalogue batches, the drift gate, the served champion.

One serving root shared by every run, as in production:

1. batch ``b1`` alone: a first run (nothing served, it says so) pushes ``b7_text``: the champion;
2. an ordinary second batch ``b2``: the run trains on both batches and compares its candidate with
   the champion the first run pushed;
3. a batch with one category tripled and pictures three times larger stops at the drift gate (exit
   1, naming the label and the picture width); with ``data.accept_drift=true`` it goes on, and a
   challenger that beats the VGG19 baseline (here a one-epoch VGG19) but not the champion (an
   image-only candidate against the image + text champion: another input contract, compared
   through ``serving_examples``) is not pushed, and ``review`` says why.

Small batches (12 products per category) move the numeric distributions by chance more than a real
catalogue does (Jensen-Shannon up to ~0.18 between two ordinary batches of 5 per category, 0.03 to
0.11 at 20, measured on two seed pairs), so these runs raise ``data.drift_jsd`` to 0.3: the drifted batch's picture width is
at about 0.9.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from placedemarche.components.serving_pusher import push as push_lib
from placedemarche.pipeline import sample_data
from test_e2e import SMALL, _cli  # noqa: E402 (tests/ is on sys.path: pytest's rootdir import mode)

pytestmark = pytest.mark.e2e

ONLY_TEXT = ["--set", "candidates.b7_image.enabled=false"]
ONLY_IMAGE = ["--set", "candidates.b7_text.enabled=false"]
PER_CLASS = 12


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("batches")
    sample_data.make_sample(root / "batches" / "b1", per_class=PER_CLASS, seed=21, show_progress=False)
    sample_data.make_sample(root / "batches" / "b2", per_class=PER_CLASS, seed=22, show_progress=False)
    sample_data.make_sample(root / "drifted-batch", per_class=PER_CLASS, seed=23, show_progress=False,
                            category_factors={"Watches": 3}, size_factor=3)
    # Catalogue folders: one batch, then two, then three (the drifted one newest).
    for name, batches in (("one", ["b1"]), ("two", ["b1", "b2"])):
        for b in batches:
            shutil.copytree(root / "batches" / b, root / name / b)
    shutil.copytree(root / "two", root / "three")
    shutil.copytree(root / "drifted-batch", root / "three" / "b3")
    return root


def _run(root: Path, data: str, output: str, *extra):
    status, out = _cli("run", "--data", str(root / data), "--output", str(root / output), "--json", *SMALL,
                       "--set", f"serving.serving_root={root / 'serving'}", "--set", "data.drift_jsd=0.3",
                       "--set", "explain.images_per_class=0", *extra)
    return status, json.loads(out)


def _review(root: Path, output: str, *extra):
    status, out = _cli("review", "--output", str(root / output), "--json", *SMALL,
                       "--set", f"serving.serving_root={root / 'serving'}", *extra)
    assert status == 0, out
    return json.loads(out)


@pytest.fixture(scope="module")
def first(root):
    status, report = _run(root, "one", "run1", *ONLY_TEXT)
    assert status == 0, report["failure"]
    return report


@pytest.fixture(scope="module")
def second(root, first):
    status, report = _run(root, "two", "run2", *ONLY_TEXT)
    assert status == 0, report["failure"]
    return report


def test_the_first_run_says_nothing_is_served_and_pushes_the_champion(root, first):
    assert first["champion"]["compared"] is False
    assert first["champion"]["reason"].startswith("first run: nothing is served under")
    assert first["drift"]["compared"] is False and "only batch" in first["drift"]["reason"]
    assert [b["name"] for b in first["batches"]["window"]] == ["b1"]
    assert first["pushed"]["candidate"] == "b7_text" and first["pushed"]["version"] == 1
    review = _review(root, "run1", *ONLY_TEXT)
    assert review["champion"] is None and "nothing is served" in review["champion_reason"]


def test_an_ordinary_second_batch_trains_on_both_and_meets_the_champion(root, first, second):
    window = {b["name"]: b for b in second["batches"]["window"]}
    assert list(window) == ["b1", "b2"] and second["batches"]["all"] == ["b1", "b2"]
    assert all(sum(b["examples"].values()) > PER_CLASS * 7 * 0.8 for b in window.values())
    assert second["drift"]["compared"] and not second["drift"]["drifted"]
    assert (second["drift"]["previous_batch"], second["drift"]["newest_batch"]) == ("b1", "b2")
    champion = second["champion"]
    assert champion["compared"] is True and champion["version"] == 1
    review = _review(root, "run2", *ONLY_TEXT)
    block = review["champion"]
    assert block["version"] == 1 and block["how"] == "highest version"
    assert set(block["per_category"]) == set(review["labels"])
    candidate = review["candidates"][0]
    assert block["difference"] == pytest.approx(candidate["accuracy"] - block["accuracy"])
    (check,) = [k for k in candidate["checks"] if k["name"] == "not_worse_than_champion"]
    assert check["passed"] == (candidate["accuracy"] >= block["accuracy"]) and "served version 1" in check["explanation"]
    # Pushed exactly when it was blessed (beats the baseline and is not worse than the champion).
    assert (second["pushed"].get("version") == 2) == candidate["blessed"]


def test_a_drifted_batch_stops_before_training_naming_the_label_and_the_picture_width(root, second):
    status, out = _cli("ingest", "--data", str(root / "three"), "--output", str(root / "drift-ingest"), *SMALL,
                       "--set", "data.drift_jsd=0.3")
    assert status == 1
    status, out = _cli("ingest", "--data", str(root / "three"), "--output", str(root / "drift-ingest"), "--json",
                       *SMALL, "--set", "data.drift_jsd=0.3")
    report = json.loads(out)
    assert status == 1 and "drift" in report["failure"]
    assert "batch 'b3' (span 2" in report["failure"] and "previous batch 'b2'" in report["failure"]
    assert "feature 'label' L-infinity" in report["failure"]
    assert "feature 'picture_width' Jensen-Shannon divergence" in report["failure"]
    assert "data.accept_drift=true" in report["failure"]


def test_an_accepted_drift_is_recorded_and_a_challenger_below_the_champion_is_not_pushed(root, second):
    before = push_lib.versions(str(root / "serving" / "product_category"))
    status, report = _run(root, "three", "run3", *ONLY_IMAGE, "--set", "data.accept_drift=true",
                          "--set", "baseline.epochs=1")
    assert status == 0, report["failure"]
    assert report["drift"]["drifted"] and report["drift"]["accepted"]
    assert {"label", "picture_width"} <= {m["feature"] for m in report["drift"]["moved"]}
    (candidate,) = report["candidates"]
    review = _review(root, "run3", *ONLY_IMAGE)
    (entry,) = review["candidates"]
    checks = {k["name"]: k for k in entry["checks"]}
    assert checks["improvement_over_baseline"]["passed"], checks  # it beats the (one-epoch) VGG19 baseline
    assert not checks["not_worse_than_champion"]["passed"]
    assert f"served version {before[-1]}" in checks["not_worse_than_champion"]["explanation"]
    assert entry["text_columns"] == [] and review["champion"]["version"] == before[-1]
    assert review["champion"]["candidates"]["b7_image"]["passed"] is False
    assert review["blessed"] is False and review["pushed_candidate"] is None
    assert entry["status"].startswith("not blessed by the model gate: candidate ") and "- champion" in entry["status"]
    assert push_lib.versions(str(root / "serving" / "product_category")) == before
    assert review["drift"]["accepted"] is True and review["drift"]["newest_batch"] == "b3"
    status, text = _cli("review", "--output", str(root / "run3"), *SMALL, *ONLY_IMAGE,
                        "--set", f"serving.serving_root={root / 'serving'}")
    assert "vs the champion: FAIL" in text and "accepted (data.accept_drift=true)" in text
