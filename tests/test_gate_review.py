"""The blessing gate on generated data where the answer is known, the review and reviewer overrides.

One run folder, several runs (the data stages and unchanged Trainers come from the cache):
  1. a trained candidate against an untrained baseline (zero epochs): blessed and pushed;
  2. an untrained candidate against a trained baseline: not blessed, nothing pushed, the failing
     thresholds named by ``review``;
  3. a reviewer pushes that unblessed candidate anyway, then rolls back to version 1;
  4. the good candidate again with an impossible latency budget: infra validation fails, nothing pushed.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from placedemarche.components.serving_pusher import push as push_lib
from placedemarche.pipeline import local_runner, outputs, pipeline as pipeline_lib, review as review_lib, sample_data
from placedemarche.pipeline.cli import main
from placedemarche.pipeline.config import load_config

SMALL = [
    "--set", "candidate.backbone=efficientnet_b0", "--set", "candidate.image_size=48",
    "--set", "candidate.weights=none", "--set", "baseline.backbone=vgg16",
    "--set", "baseline.image_size=32", "--set", "baseline.weights=none", "--set", "training.epochs=3",
    # The real improvement threshold (default 0.01); a floor the trained candidate clears on this sample.
    "--set", "evaluation.min_accuracy=0.2",
]
BETTER = [*SMALL, "--set", "baseline.epochs=0"]
WORSE = [*SMALL, "--set", "candidate.epochs=0"]


def _cli(*argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["-q", *argv])
    return status, out.getvalue()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    sample_data.make_sample(root / "data", per_class=12, seed=5, show_progress=False)
    return root


def _run(root, args):
    status, out = _cli("run", "--data", str(root / "data"), "--output", str(root / "run"), "--json", *args)
    return status, json.loads(out)


def _review(root):
    status, out = _cli("review", "--output", str(root / "run"), "--json")
    assert status == 0
    return json.loads(out)


@pytest.fixture(scope="module")
def better(root):
    status, report = _run(root, BETTER)
    assert status == 0, report["failure"]
    return report, _review(root)


@pytest.fixture(scope="module")
def worse(root, better):
    status, report = _run(root, WORSE)
    assert status == 0, report["failure"]
    return report, _review(root)


def test_better_candidate_is_blessed_and_pushed(root, better):
    report, review = better
    assert [n["state"] for n in report["nodes"]] == ["COMPLETE"] * len(pipeline_lib.ALL_NODES)
    assert review["blessed"] is True and review["pushed_version"] == 1
    assert review["candidate"]["accuracy"] > review["baseline"]["accuracy"] + 0.01
    assert all(c["passed"] for c in review["thresholds"])
    assert review["infra_validation"]["passed"] and review["infra_validation"]["problems"] == []
    assert review["served_versions"] == [1]


def test_review_json_has_both_models_per_category_and_the_thresholds(better):
    _, review = better
    for role in ("candidate", "baseline"):
        model = review[role]
        assert set(model["per_category"]) == set(review["labels"]) and len(review["labels"]) == 7
        assert sum(c["support"] for c in model["per_category"].values()) == model["examples"]
        assert np.array(model["confusion_matrix"]).sum() == model["examples"]
        correct = np.trace(np.array(model["confusion_matrix"]))
        assert model["accuracy"] == pytest.approx(correct / model["examples"])
        assert "history" not in model  # curves are in the HTML report, not the JSON
    assert review["metrics_source"] == "TFX Evaluator (TFMA)"
    assert [t["name"] for t in review["thresholds"]] == ["accuracy_floor", "improvement_over_baseline", "tfma_evaluator"]
    assert {"p_value", "candidate_only_correct", "baseline_only_correct"} <= set(review["mcnemar"])


def test_worse_candidate_is_not_blessed_and_nothing_is_pushed(root, worse):
    report, review = worse
    states = {n["node"]: n["state"] for n in report["nodes"]}
    assert states[pipeline_lib.EXAMPLE_GEN] == "CACHED"
    assert states[pipeline_lib.CANDIDATE_TRAINER] == states[pipeline_lib.BASELINE_TRAINER] == "COMPLETE"
    assert review["candidate"]["epochs_run"] == 0
    assert review["blessed"] is False and review["pushed_version"] is None
    assert review["push"]["reason"] == "the model gate did not bless the candidate"
    failed = [t["name"] for t in review["thresholds"] if not t["passed"]]
    assert "improvement_over_baseline" in failed and "tfma_evaluator" in failed
    assert review["served_versions"] == [1]  # the earlier blessed version still serves
    status, text = _cli("review", "--output", str(root / "run"))
    assert status == 0
    assert "[FAIL] improvement_over_baseline: candidate" in text and "decision: NOT blessed" in text


def test_reviewer_can_push_an_unblessed_model_and_roll_back(root, worse):
    status, out = _cli("override", "--output", str(root / "run"), "--push", "--reason", "seasonal catalogue",
                       "--user", "alice", "--json")
    assert status == 0, out
    pushed = json.loads(out)
    assert pushed["served_version"] == 2
    status, out = _cli("override", "--output", str(root / "run"), "--rollback-to", "1",
                       "--reason", "complaints about watches", "--user", "bob", "--json")
    assert status == 0, out
    assert json.loads(out)["served_version"] == 3
    base = root / "run" / "serving" / "product_category"
    assert push_lib.content_digest(str(base / "3")) == push_lib.content_digest(str(base / "1"))
    review = _review(root)
    assert [(o["action"], o["user"], o["reason"], o["served_version"]) for o in review["overrides"]] == [
        ("push", "alice", "seasonal catalogue", 2), ("rollback", "bob", "complaints about watches", 3)]
    assert review["served_versions"] == [1, 2, 3]
    # Stored in the metadata store, in the pipeline's context, with the pushed folder as output.
    store = outputs.open_store(str(local_runner.metadata_path(root / "run")))
    decisions = store.get_executions_by_type(review_lib.DECISION_TYPE)
    assert [d.properties["user"].string_value for d in decisions] == ["alice", "bob"]
    events = store.get_events_by_execution_ids([decisions[0].id])
    outputs_ = store.get_artifacts_by_id([e.artifact_id for e in events if e.type == e.OUTPUT])
    assert [a.uri for a in outputs_] == [str(base / "2")]


def test_override_refuses_an_unknown_version_and_an_empty_reason(root, worse, capsys):
    status, _ = _cli("override", "--output", str(root / "run"), "--rollback-to", "99", "--reason", "x")
    assert status == 2
    assert "--rollback-to 99: no such version" in capsys.readouterr().err
    status, _ = _cli("override", "--output", str(root / "run"), "--push", "--reason", "  ")
    assert status == 2
    assert "a reason is required" in capsys.readouterr().err


def test_model_failing_infra_validation_is_not_pushed(root, worse):
    before = push_lib.versions(str(root / "run" / "serving" / "product_category"))
    status, report = _run(root, [*BETTER, "--set", "evaluation.latency_budget_ms=0.001"])
    assert status == 0, report["failure"]
    states = {n["node"]: n["state"] for n in report["nodes"]}
    assert states[pipeline_lib.CANDIDATE_TRAINER] == "CACHED" and states[pipeline_lib.INFRA_VALIDATOR] == "COMPLETE"
    assert report["gate"]["blessed"] is True  # the model is good; serving it is not
    assert report["pushed"] == {"reason": "the candidate failed infra validation"}
    assert push_lib.versions(str(root / "run" / "serving" / "product_category")) == before
    review = _review(root)
    assert review["infra_validation"]["passed"] is False
    assert "evaluation.latency_budget_ms" in review["infra_validation"]["problems"][0]


def test_review_without_a_run_says_what_to_do(tmp_path, capsys):
    status, _ = _cli("review", "--output", str(tmp_path))
    assert status == 2
    assert "no metadata store" in capsys.readouterr().err


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (scripts/install.sh installs it)")
def test_html_report_renders_in_headless_chromium(root, better, tmp_path):
    _, review = better
    page = Path(review_lib.write_html({**review_lib.gather(load_config(), root / "run")}, str(tmp_path / "r.html")))
    run = lambda *a: subprocess.run([CHROMIUM, *HEADLESS, f"--user-data-dir={tmp_path / 'profile'}", *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    dom = run("--virtual-time-budget=5000", "--dump-dom", page.as_uri()).stdout
    # The page's own script counts decoded plots: the confusion matrices and the training curves.
    assert 'data-images-loaded="2/2"' in dom
    assert "Decision: " in dom and 'id="thresholds"' in dom and "improvement_over_baseline" in dom
    shot = tmp_path / "shot.png"
    run("--window-size=1200,1800", f"--screenshot={shot}", page.as_uri())
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1800, 1200)
    # Not a blank page: text, tables and the heat maps give many distinct colours.
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200
