"""What a reviewer needs about a run, as plain data (read by ``run_reader``; rendered by ``rendering``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from placedemarche.components.serving_pusher import push as push_lib
from placedemarche.pipeline import pipeline as pipeline_lib
from placedemarche.pipeline import run_reader
from placedemarche.pipeline.config import PipelineConfig


class ReviewError(RuntimeError):
    """The run folder has nothing to review yet, or an override cannot be carried out."""


def serving_root(config: PipelineConfig, run_dir: Path) -> str:
    """Where this run pushes (``serving.serving_root``, default ``RUN_DIR/serving``)."""
    return config.serving.serving_root or str(Path(run_dir) / "serving")


def _model_entry(model: run_reader.TrainedModel, metrics: Dict[str, Any], labels: List[str]) -> Dict[str, Any]:
    """A model's test metrics (TFMA's, as the gate read them) and what its Trainer recorded."""
    matrix = metrics["confusion_matrix"]
    per_category = {}
    for i, label in enumerate(labels):
        m = metrics["per_category"][label]
        support = sum(matrix[i])
        per_category[label] = {
            # The per-category accuracy is the recall: the share of the category's products found.
            "accuracy": matrix[i][i] / support if support else None,
            "precision": m.get("precision"), "recall": m.get("recall"), "f1": m.get("f1"), "support": support,
        }
    entry: Dict[str, Any] = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
                             "examples": metrics["examples"], "per_category": per_category, "confusion_matrix": matrix}
    if model.done:
        md = model.metadata
        entry.update(model=model.model_dir, backbone=md.get("backbone"), text_columns=md.get("text_columns") or [],
                     weights=md.get("weights"), image_size=md.get("image_size"), best_epoch=md.get("best_epoch"),
                     epochs_run=md.get("epochs_run"), val_accuracy=md.get("val_accuracy"),
                     branch_val_accuracy=md.get("branch_val_accuracy"), fusion=md.get("fusion"),
                     tuning=md.get("tuning"), compute_dtype=md.get("compute_dtype"), history=(model.history or {}).get("history"))
    return entry


def _infra_entry(infra: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    if infra is None:
        return None
    return {"passed": infra["passed"], "skipped": infra["skipped"], "problems": infra.get("problems", []),
            "latency_ms": infra.get("latency_ms"), "latency_budget_ms": infra.get("latency_budget_ms"),
            "load_seconds": infra.get("load_seconds"), "requests": len(infra.get("requests", [])),
            "blessing": infra["blessing"]}


def _champion(evaluated: Dict[str, run_reader.CandidateRun], shown: str):
    """``(champion, reason)``: the served champion the candidates were compared with (None when none
    was: the first run, or a champion of other categories; ``reason`` says which) with the shown
    candidate's checks against it and every candidate's difference."""
    block = evaluated[shown].comparison.get("champion")
    if block is None:  # a comparison written before champions existed
        return None, "this run's gate did not compare with a served champion"
    if not block.get("compared"):
        return None, block.get("reason")
    champion = {k: block.get(k) for k in ("version", "how", "path", "accuracy", "macro_f1", "examples", "per_category",
                                         "confusion_matrix", "tolerance", "mcnemar", "difference", "checks")}
    champion["candidates"] = {}
    for name, c in evaluated.items():
        other = c.comparison.get("champion") or {}
        if other.get("compared"):
            champion["candidates"][name] = {"difference": other.get("difference"), "checks": other.get("checks"),
                                            "mcnemar": other.get("mcnemar"),
                                            "passed": bool(other.get("checks")) and all(
                                                k["passed"] for k in other["checks"])}
    return champion, block.get("reason")


def gather(config: PipelineConfig, run_dir: Path) -> Dict[str, Any]:
    """Everything a reviewer needs about the latest evaluated run of ``run_dir``, as plain data.

    Keys: every candidate side by side with the baseline (``candidates``: name, backbone, text
    columns, accuracy, per category, blessed, checks, infra validation, pushed, status), the
    baseline, ``pushed_candidate``, the push and why; ``candidate`` is the pushed candidate, or the
    best one when nothing was pushed (with ``thresholds``, ``mcnemar``, ``blessed`` and
    ``infra_validation`` its own), the served versions and reviewer decisions, ``champion`` (the
    served model the candidates were compared with: version, accuracy, per category, the shown
    candidate's checks against it; None on a first run, ``champion_reason`` says why), ``drift``
    (the drift gate's decision, ``accepted`` when ``data.accept_drift`` let a drifted batch through)
    and ``batches`` (examples per catalogue batch).

    Raises:
      ReviewError: no metadata store in ``run_dir``, or no candidate's gate has completed there.
    """
    from placedemarche.pipeline.review.overrides import list_overrides

    run_dir = Path(run_dir).resolve()
    first = config.enabled_candidates[0].name
    try:
        info = run_reader.read(config, run_dir, with_node=pipeline_lib.gate_id(first))
    except run_reader.RunNotFound as e:
        raise ReviewError(f"nothing to review: {e}; run 'placedemarche run --output RUN_DIR' first") from e
    evaluated = {n: c for n, c in info.candidates.items() if c.comparison is not None}
    if not evaluated:
        states = ", ".join(f"{n}: {c.gate_state}" for n, c in info.candidates.items())
        raise ReviewError(f"no model gate has completed in {run_dir} ({states}): run 'placedemarche run --output "
                          "RUN_DIR' first")
    push = info.push or {"pushed": False, "reason": "the pusher has not run"}
    selection = {c["name"]: c for c in push.get("candidates", [])}
    ranked = sorted(evaluated, key=lambda n: (-evaluated[n].comparison["candidate"]["accuracy"], n))
    shown = push.get("pushed_candidate") or push.get("best_candidate") or ranked[0]
    shown = shown if shown in evaluated else ranked[0]
    some = evaluated[shown].comparison
    labels = some["labels"]
    tfma = some.get("tfma") or {}
    candidates = []
    for name, c in evaluated.items():
        comparison = c.comparison
        metrics = (comparison.get("tfma") or {}).get("candidate") or comparison["candidate"]
        entry = {"name": name, **_model_entry(c.model, metrics, labels), "blessed": comparison["blessed"],
                 "checks": comparison["checks"], "mcnemar": comparison["mcnemar"],
                 "infra_validation": _infra_entry(c.infra), "comparison": c.comparison_uri,
                 "pushed": bool(push.get("pushed") and push.get("pushed_candidate") == name),
                 "status": selection.get(name, {}).get("status")}
        entry.setdefault("backbone", None)
        entry.setdefault("text_columns", [])
        candidates.append(entry)
    candidates.sort(key=lambda e: (-e["accuracy"], e["name"]))
    chosen = next(e for e in candidates if e["name"] == shown)
    review: Dict[str, Any] = {
        "run_dir": str(run_dir), "run_id": info.run_id, "pipeline": config.name, "labels": labels,
        "split": some["split"], "metrics_source": "TFMA (Evaluator: every candidate and the baseline in one pass)" if tfma else "model gate",
        "candidates": candidates, "candidate": chosen,
        "baseline": _model_entry(info.baseline, tfma.get("baseline") or some["baseline"], labels),
        "pushed_candidate": push.get("pushed_candidate") if push.get("pushed") else None,
        "thresholds": chosen["checks"], "mcnemar": chosen["mcnemar"], "blessed": chosen["blessed"],
        "comparison": chosen["comparison"], "infra_validation": chosen["infra_validation"],
        "pushed_version": push.get("version") if push.get("pushed") else None,
        "push": ({"pushed": True, "destination": push["destination"], "selection": push.get("reason")}
                 if push.get("pushed") else {"pushed": False, "reason": push.get("reason")}),
        "serving_root": serving_root(config, run_dir),
    }
    base = os.path.join(review["serving_root"], config.serving.model_name)
    review["served_versions"] = push_lib.versions(base)
    review["overrides"] = list_overrides(config, run_dir)
    review["explanations"] = info.explanations["html"] if info.explanations else None
    # The run's other decisions: the reviewed categories its ingestion applied, and its categorising.
    review["reviews_applied"] = (info.ingestion or {}).get("reviews")
    from placedemarche.pipeline import skew as skew_lib

    latest_skew = skew_lib.latest_report(str(run_dir))
    review["skew"] = None
    if latest_skew:
        try:
            with open(latest_skew, encoding="utf-8") as f:
                found = json.load(f)
            review["skew"] = {"folder": found["folder"], "moved": [m["feature"] for m in found["moved"]],
                              "request_rows": found["request_rows"]}
        except (OSError, ValueError, KeyError, TypeError) as e:
            review["skew"] = {"folder": os.path.dirname(latest_skew), "moved": [], "request_rows": 0,
                              "error": f"unreadable report: {e}"}
    review["champion"], review["champion_reason"] = _champion(evaluated, shown)
    review["drift"] = info.drift
    review["batches"] = (info.ingestion or {}).get("batches")
    review["categorized"] = ({k: v for k, v in info.categorized.items() if k != "outputs"}
                             if info.categorized else None)
    return review
