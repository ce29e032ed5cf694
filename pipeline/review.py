"""The blessing review: why a model was or was not blessed, for a person; and reviewer overrides.

``gather`` reads a run folder's metadata store and artifacts: both models' test metrics from the
Evaluator (TFMA), the gate's checks and McNemar test, infra validation, what was pushed and every
reviewer decision. ``render_text`` prints it, ``write_html`` writes a self-contained HTML report
(plots inlined as PNG data), and ``record_override`` lets a reviewer push a model that was not
blessed, or roll the served version back, with the decision, who and why stored in the metadata
store, attributed to the pipeline and the run it concerns.
"""

from __future__ import annotations

import base64
import datetime as dt
import getpass
import html
import io
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from ml_metadata.proto import metadata_store_pb2

from placedemarche.components.infra_validator import executor as infra_executor
from placedemarche.components.model_gate import executor as gate_executor
from placedemarche.components.model_gate import predict
from placedemarche.components.serving_pusher import executor as pusher_executor
from placedemarche.components.serving_pusher import push as push_lib
from placedemarche.pipeline import outputs
from placedemarche.pipeline import pipeline as pipeline_lib
from placedemarche.pipeline.config import PipelineConfig

REVIEW_DIR = "review"
HTML_FILE = "index.html"
DECISION_TYPE = "placedemarche.ReviewerDecision"
PUSH = "push"
ROLLBACK = "rollback"


class ReviewError(RuntimeError):
    """The run folder has nothing to review yet, or an override cannot be carried out."""


def serving_root(config: PipelineConfig, run_dir: Path) -> str:
    """Where this run pushes (``serving.serving_root``, default ``RUN_DIR/serving``)."""
    return config.serving.serving_root or str(Path(run_dir) / "serving")


def gather(config: PipelineConfig, run_dir: Path) -> Dict[str, Any]:
    """Everything a reviewer needs about the latest evaluation of ``run_dir``, as plain data.

    Raises:
      ReviewError: no metadata store in ``run_dir``, or the model gate has not completed there.
    """
    run_dir = Path(run_dir).resolve()
    store = _store(run_dir)
    gate = outputs.latest_node_run(store, config.name, pipeline_lib.MODEL_GATE)
    if gate is None or gate.state not in ("COMPLETE", "CACHED"):
        raise ReviewError(
            f"the model gate has not completed in {run_dir} (state: {gate.state if gate else 'never run'}): "
            "run 'placedemarche run --output RUN_DIR' first"
        )
    comparison = json.loads(Path(gate.outputs["comparison"][0], gate_executor.COMPARISON_FILE).read_text())
    labels = comparison["labels"]
    review: Dict[str, Any] = {"run_dir": str(run_dir), "pipeline": config.name, "labels": labels,
                              "split": comparison["split"]}
    tfma = comparison.get("tfma")
    review["metrics_source"] = "TFX Evaluator (TFMA)" if tfma else "model gate"
    for role, node_id in (("candidate", pipeline_lib.CANDIDATE_TRAINER), ("baseline", pipeline_lib.BASELINE_TRAINER)):
        review[role] = _model_review(store, config, node_id, comparison[role], tfma[role] if tfma else None, labels)
    review["thresholds"] = comparison["checks"]
    review["mcnemar"] = comparison["mcnemar"]
    review["blessed"] = comparison["blessed"]
    review["comparison"] = gate.outputs["comparison"][0]
    review["infra_validation"] = _infra_review(store, config)
    review.update(_push_review(store, config))
    review["serving_root"] = serving_root(config, run_dir)
    base = os.path.join(review["serving_root"], config.serving.model_name)
    review["served_versions"] = push_lib.versions(base)
    review["overrides"] = list_overrides(config, run_dir)
    explainer = outputs.latest_node_run(store, config.name, pipeline_lib.EXPLAINER)
    review["explanations"] = (str(Path(explainer.outputs["explanation"][0], "index.html"))
                              if explainer and explainer.state in ("COMPLETE", "CACHED") else None)
    return review


def _store(run_dir: Path):
    path = Path(run_dir) / "metadata.sqlite"
    if not path.exists():
        raise ReviewError(f"no metadata store at {path}: is {run_dir} a run folder of 'placedemarche run'?")
    return outputs.open_store(str(path))


def _model_review(store, config, node_id, gate_metrics, tfma_metrics, labels) -> Dict[str, Any]:
    from placedemarche.pipeline.trainer import export as export_lib

    source = tfma_metrics or gate_metrics
    matrix = source["confusion_matrix"]
    per_category = {}
    for i, label in enumerate(labels):
        metrics = source["per_category"][label]
        support = sum(matrix[i])
        per_category[label] = {
            # The per-category accuracy is the recall: the share of the category's products found.
            "accuracy": matrix[i][i] / support if support else None,
            "precision": metrics.get("precision"),
            "recall": metrics.get("recall"),
            "f1": metrics.get("f1"),
            "support": support,
        }
    model: Dict[str, Any] = {
        "accuracy": source["accuracy"], "macro_f1": source["macro_f1"], "examples": source["examples"],
        "per_category": per_category, "confusion_matrix": matrix,
    }
    trainer = outputs.latest_node_run(store, config.name, node_id)
    if trainer and "model" in trainer.outputs:
        serving = predict.serving_dir(trainer.outputs["model"][0])
        metadata = export_lib.read_metadata(serving)
        model.update(model=serving, backbone=metadata["backbone"], weights=metadata["weights"],
                     image_size=metadata.get("image_size"), best_epoch=metadata["best_epoch"],
                     epochs_run=metadata["epochs_run"], val_accuracy=metadata["val_accuracy"])
        history = Path(trainer.outputs["model_run"][0], "history.json") if "model_run" in trainer.outputs else None
        model["history"] = json.loads(history.read_text()).get("history") if history and history.exists() else None
    return model


def _infra_review(store, config) -> Optional[Dict[str, Any]]:
    node = outputs.latest_node_run(store, config.name, pipeline_lib.INFRA_VALIDATOR)
    if node is None or "blessing" not in node.outputs:
        return None
    uri = node.outputs["blessing"][0]
    result_file = Path(uri, infra_executor.RESULT_FILE)
    result = json.loads(result_file.read_text()) if result_file.exists() else {}
    return {
        "passed": Path(uri, "INFRA_BLESSED").exists(),
        "problems": result.get("problems", []),
        "latency_ms": result.get("latency_ms"),
        "latency_budget_ms": result.get("latency_budget_ms"),
        "load_seconds": result.get("load_seconds"),
        "requests": len(result.get("requests", [])),
        "blessing": uri,
    }


def _push_review(store, config) -> Dict[str, Any]:
    node = outputs.latest_node_run(store, config.name, pipeline_lib.PUSHER)
    if node is None or node.state not in ("COMPLETE", "CACHED") or "pushed_model" not in node.outputs:
        return {"pushed_version": None, "push": {"pushed": False, "reason": "the pusher has not run"}}
    uri = node.outputs["pushed_model"][0]
    marker, not_pushed = Path(uri, "PUSHED"), Path(uri, pusher_executor.NOT_PUSHED_FILE)
    if marker.exists():
        destination = marker.read_text().strip()
        return {"pushed_version": int(Path(destination).name), "push": {"pushed": True, "destination": destination}}
    reason = not_pushed.read_text().strip() if not_pushed.exists() else "the candidate was not blessed"
    return {"pushed_version": None, "push": {"pushed": False, "reason": reason}}


# --- reviewer decisions -------------------------------------------------------------------------


def record_override(
    config: PipelineConfig,
    run_dir: Path,
    action: str,
    reason: str,
    user: Optional[str] = None,
    rollback_to: Optional[int] = None,
) -> Dict[str, Any]:
    """Carries out a reviewer's decision and records it in the run's metadata store.

    ``action`` is ``push`` (publish the run's candidate as the next version although it was not
    blessed) or ``rollback`` (publish the content of version ``rollback_to`` again as the next
    version, which TF Serving then serves; earlier versions are never deleted). Returns the record.

    Raises:
      ReviewError: empty reason, unknown action or version, or nothing to push.
    """
    if not reason or not reason.strip():
        raise ReviewError("a reason is required: say why, it is stored with the decision")
    if action not in (PUSH, ROLLBACK):
        raise ReviewError(f"unknown action '{action}': use '{PUSH}' or '{ROLLBACK}'")
    run_dir = Path(run_dir).resolve()
    store = _store(run_dir)
    user = user or os.environ.get("USER") or getpass.getuser()
    base = os.path.join(serving_root(config, run_dir), config.serving.model_name)
    trainer = outputs.latest_node_run(store, config.name, pipeline_lib.CANDIDATE_TRAINER)
    if action == PUSH:
        if trainer is None or trainer.state not in ("COMPLETE", "CACHED"):
            raise ReviewError(f"the candidate Trainer has not completed in {run_dir}: nothing to push")
        source = _validated_copy(store, config) or predict.serving_dir(trainer.outputs["model"][0])
    else:
        existing = push_lib.versions(base)
        if rollback_to is None or rollback_to not in existing:
            raise ReviewError(f"--rollback-to {rollback_to}: no such version under {base} (versions: {existing})")
        source = os.path.join(base, str(rollback_to))
    # A rollback republishes an old version on purpose; a push of what is already served is a no-op.
    destination, _ = push_lib.push(source, serving_root(config, run_dir), config.serving.model_name,
                                   force=action == ROLLBACK)
    record = {
        "action": action, "user": user, "reason": reason.strip(),
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": source, "destination": destination, "served_version": int(Path(destination).name),
        "rollback_to": rollback_to,
    }
    _store_decision(store, config, trainer, record)
    return record


def _validated_copy(store, config) -> Optional[str]:
    """The infra-validated copy (with warm-up requests) of the candidate, when validation passed."""
    from tfx.utils import path_utils

    node = outputs.latest_node_run(store, config.name, pipeline_lib.INFRA_VALIDATOR)
    if node is None or "blessing" not in node.outputs:
        return None
    staged = path_utils.stamped_model_path(node.outputs["blessing"][0])
    return staged if os.path.isdir(staged) else None


def _store_decision(store, config, trainer, record) -> None:
    execution_type = metadata_store_pb2.ExecutionType(name=DECISION_TYPE)
    for key in ("action", "user", "reason", "time", "source", "destination"):
        execution_type.properties[key] = metadata_store_pb2.STRING
    execution_type.properties["served_version"] = metadata_store_pb2.INT
    type_id = store.put_execution_type(execution_type, can_add_fields=True)
    execution = metadata_store_pb2.Execution(type_id=type_id, last_known_state=metadata_store_pb2.Execution.COMPLETE)
    for key in ("action", "user", "reason", "time", "source", "destination"):
        execution.properties[key].string_value = str(record[key])
    execution.properties["served_version"].int_value = record["served_version"]
    if record["rollback_to"] is not None:
        execution.custom_properties["rollback_to"].int_value = record["rollback_to"]
    # Next to the run: the pipeline's context and that of the run whose candidate this concerns.
    contexts = [c for c in [store.get_context_by_type_and_name("pipeline", config.name)] if c]
    if trainer is not None:
        contexts += [c for c in store.get_contexts_by_execution(trainer.execution_id) if c.name not in
                     {x.name for x in contexts} and store.get_context_types_by_id([c.type_id])[0].name == "pipeline_run"]
    # Lineage: the pushed folder is the decision's output; the model it came from, its input.
    pushed_type = store.get_artifact_type("PushedModel")
    pushed = metadata_store_pb2.Artifact(type_id=pushed_type.id, uri=record["destination"],
                                         state=metadata_store_pb2.Artifact.LIVE)
    pushed.custom_properties["pushed"].int_value = 1
    pushed.custom_properties["pushed_version"].int_value = record["served_version"]
    pushed.custom_properties["pushed_destination"].string_value = record["destination"]
    events = [(pushed, metadata_store_pb2.Event(type=metadata_store_pb2.Event.OUTPUT))]
    execution_id, _, _ = store.put_execution(
        execution, artifact_and_events=events, contexts=contexts, reuse_context_if_already_exist=True
    )
    # The source folder is an artifact's (a pushed version) or inside one (stamped_model/, Format-Serving/).
    inputs = store.get_artifacts_by_uri(record["source"]) or store.get_artifacts_by_uri(
        os.path.dirname(record["source"]))
    if inputs:
        store.put_events([metadata_store_pb2.Event(artifact_id=inputs[0].id, execution_id=execution_id,
                                                   type=metadata_store_pb2.Event.INPUT)])


def list_overrides(config: PipelineConfig, run_dir: Path) -> List[Dict[str, Any]]:
    """Every reviewer decision stored for this pipeline, oldest first."""
    store = _store(run_dir)
    try:
        execution_type = store.get_execution_type(DECISION_TYPE)
    except Exception:  # NotFoundError: no decision was ever recorded
        return []
    context = store.get_context_by_type_and_name("pipeline", config.name)
    if context is None:
        return []
    decisions = []
    for e in sorted(store.get_executions_by_context(context.id), key=lambda e: e.id):
        if e.type_id != execution_type.id:
            continue
        item = {k: v.string_value for k, v in e.properties.items() if k != "served_version"}
        item["served_version"] = e.properties["served_version"].int_value
        if "rollback_to" in e.custom_properties:
            item["rollback_to"] = e.custom_properties["rollback_to"].int_value
        item["execution_id"] = e.id
        decisions.append(item)
    return decisions


# --- presentation -------------------------------------------------------------------------------


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_text(review: Dict[str, Any]) -> str:
    cand, base = review["candidate"], review["baseline"]
    lines = [f"run: {review['run_dir']}",
             f"metrics: {review['metrics_source']}, {review['split']} split, {cand['examples']} examples", ""]
    lines.append(f"{'':<30} {'candidate':>22} {'baseline':>22}")
    lines.append(f"{'model':<30} {cand.get('backbone', '?'):>22} {base.get('backbone', '?'):>22}")
    lines.append(f"{'accuracy':<30} {_fmt(cand['accuracy']):>22} {_fmt(base['accuracy']):>22}")
    lines.append(f"{'macro F1':<30} {_fmt(cand['macro_f1']):>22} {_fmt(base['macro_f1']):>22}")
    lines.append("per category: accuracy / precision / F1 (support)")
    for label in review["labels"]:
        c, b = cand["per_category"][label], base["per_category"][label]
        triple = lambda m: f"{_fmt(m['accuracy'], 2)} / {_fmt(m['precision'], 2)} / {_fmt(m['f1'], 2)}"  # noqa: E731
        lines.append(f"  {label[:28]:<28} {triple(c):>22} {triple(b):>22}  ({c['support']})")
    for role in ("candidate", "baseline"):
        lines.append(f"confusion matrix, {role} (rows: true, columns: predicted; labels in the order above)")
        lines.extend("  " + " ".join(f"{n:>4}" for n in row) for row in review[role]["confusion_matrix"])
    m = review["mcnemar"]
    lines.append(f"McNemar ({m['method']}): p = {m['p_value']:.4g}; candidate right where the baseline was "
                 f"wrong: {m['candidate_only_correct']}, the reverse: {m['baseline_only_correct']}")
    lines.append("thresholds:")
    lines.extend(f"  [{'pass' if c['passed'] else 'FAIL'}] {c['name']}: {c['explanation']}" for c in review["thresholds"])
    infra = review["infra_validation"]
    if infra is None:
        lines.append("infra validation: not run")
    else:
        latency = infra.get("latency_ms") or {}
        lines.append(f"infra validation: {'passed' if infra['passed'] else 'FAILED'}"
                     + (f" ({infra['requests']} requests, p95 {_fmt(latency.get('p95'), 0)} ms, budget "
                        f"{_fmt(infra.get('latency_budget_ms'), 0)} ms)" if latency else ""))
        lines.extend(f"  - {p}" for p in infra["problems"])
    lines.append(f"decision: {'BLESSED' if review['blessed'] else 'NOT blessed'}")
    push = review["push"]
    lines.append(f"pushed: version {review['pushed_version']} -> {push['destination']}" if push["pushed"]
                 else f"pushed: nothing ({push['reason']})")
    lines.append(f"served versions under {review['serving_root']}: {review['served_versions'] or 'none'}")
    for o in review["overrides"]:
        lines.append(f"override: {o['action']} by {o['user']} at {o['time']} -> version {o['served_version']}: {o['reason']}")
    if review.get("explanations"):
        lines.append(f"explanations: {review['explanations']}")
    if review.get("html"):
        lines.append(f"report: {review['html']}")
    return "\n".join(lines)


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _plots(review: Dict[str, Any]) -> Dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = review["labels"]
    plots = {}
    fig, axes = plt.subplots(1, 2, figsize=(14, 6), gridspec_kw={"wspace": 0.55})
    for ax, role in zip(axes, ("candidate", "baseline")):
        matrix = np.array(review[role]["confusion_matrix"])
        ax.imshow(matrix, cmap="Blues")
        ax.set_title(f"{role} ({review[role].get('backbone', '?')}): accuracy {_fmt(review[role]['accuracy'])}")
        ax.set_xticks(range(len(labels)), [l[:18] for l in labels], rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(labels)), [l[:18] for l in labels], fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for (i, j), n in np.ndenumerate(matrix):
            ax.text(j, i, str(n), ha="center", va="center", fontsize=7,
                    color="white" if n > matrix.max() / 2 else "black")
    plots["confusion"] = _png(fig)
    plt.close(fig)
    histories = [(r, review[r].get("history")) for r in ("candidate", "baseline") if review[r].get("history")]
    if histories:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
        for role, history in histories:
            for ax, metric in zip(axes, ("accuracy", "loss")):
                epochs = range(1, len(history.get(metric, [])) + 1)
                ax.plot(epochs, history.get(metric, []), label=f"{role} train")
                ax.plot(epochs, history.get(f"val_{metric}", []), "--", label=f"{role} validation")
                ax.set_title(metric)
                ax.set_xlabel("epoch")
                ax.legend(fontsize=7)
        plots["training"] = _png(fig)
        plt.close(fig)
    return plots


def write_html(review: Dict[str, Any], path: Optional[str] = None) -> str:
    """Writes the self-contained HTML report (default ``RUN_DIR/review/index.html``); returns its path."""
    path = path or os.path.join(review["run_dir"], REVIEW_DIR, HTML_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    e = html.escape
    cand, base = review["candidate"], review["baseline"]
    rows = "".join(
        f"<tr><td>{e(label)}</td><td>{cand['per_category'][label]['support']}</td>"
        + "".join(f"<td>{_fmt(m['per_category'][label][k], 3)}</td>"
                  for m in (cand, base) for k in ("accuracy", "precision", "recall", "f1"))
        + "</tr>"
        for label in review["labels"]
    )
    checks = "".join(
        f"<tr class='{'pass' if c['passed'] else 'fail'}'><td>{e(c['name'])}</td><td>{_fmt(c['value'], 4)}</td>"
        f"<td>{_fmt(c['threshold'], 4)}</td><td>{'pass' if c['passed'] else 'FAIL'}</td><td>{e(c['explanation'])}</td></tr>"
        for c in review["thresholds"]
    )
    plots = _plots(review)
    images = "".join(f"<h2>{e(title)}</h2><img alt='{e(title)}' src='{plots[key]}'>"
                     for key, title in (("confusion", "Confusion matrices (test split)"),
                                        ("training", "Training curves")) if key in plots)
    infra = review["infra_validation"]
    infra_html = "<p>not run</p>" if infra is None else (
        f"<p id='infra'>{'passed' if infra['passed'] else 'FAILED'}: {infra['requests']} timed requests, "
        f"latency p50 / p95 / max {' / '.join(_fmt((infra.get('latency_ms') or {}).get(k), 1) for k in ('p50', 'p95', 'max'))} ms "
        f"(budget {_fmt(infra.get('latency_budget_ms'), 0)} ms), load {_fmt(infra.get('load_seconds'), 1)} s</p>"
        + "".join(f"<p class='fail'>{e(p)}</p>" for p in infra["problems"]))
    push = review["push"]
    push_html = (f"version {review['pushed_version']} &rarr; {e(push['destination'])}" if push["pushed"]
                 else f"nothing ({e(push['reason'])})")
    overrides = "".join(f"<li>{e(o['time'])}: <b>{e(o['action'])}</b> by {e(o['user'])} &rarr; version "
                        f"{o['served_version']}: {e(o['reason'])}</li>" for o in review["overrides"]) or "<li>none</li>"
    explanations = (f"<a id='explanations' href='{e(Path(review['explanations']).as_uri())}'>SHAP explanations of the "
                    "candidate</a>" if review.get("explanations") else "not computed")
    m = review["mcnemar"]
    decision = "BLESSED" if review["blessed"] else "NOT blessed"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Blessing review: {e(review['pipeline'])}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
td:first-child, #thresholds td:last-child {{ text-align: left; }} .pass td {{ background: #e8f6e8; }} .fail, .fail td {{ background: #fbe4e4; }}
#decision.blessed {{ color: #17701f; }} #decision.not-blessed {{ color: #a11; }} img {{ max-width: 100%; }}
</style></head>
<body data-blessed="{str(review['blessed']).lower()}">
<h1>Blessing review</h1>
<p>Run <code>{e(review['run_dir'])}</code>; metrics from {e(review['metrics_source'])} on the {e(review['split'])} split
({cand['examples']} examples).</p>
<h2 id="decision" class="{'blessed' if review['blessed'] else 'not-blessed'}">Decision: {decision}</h2>
<p>Pushed: {push_html}. Served versions: {e(str(review['served_versions']))}.</p>
<table id="overall"><tr><th></th><th>candidate</th><th>baseline</th></tr>
<tr><td>model</td><td>{e(str(cand.get('backbone')))}</td><td>{e(str(base.get('backbone')))}</td></tr>
<tr><td>accuracy</td><td>{_fmt(cand['accuracy'])}</td><td>{_fmt(base['accuracy'])}</td></tr>
<tr><td>macro F1</td><td>{_fmt(cand['macro_f1'])}</td><td>{_fmt(base['macro_f1'])}</td></tr>
<tr><td>validation accuracy (early stopping)</td><td>{_fmt(cand.get('val_accuracy'))}</td><td>{_fmt(base.get('val_accuracy'))}</td></tr>
</table>
<h2>Thresholds</h2>
<table id="thresholds"><tr><th>check</th><th>value</th><th>threshold</th><th>result</th><th>explanation</th></tr>{checks}</table>
<p>McNemar ({e(m['method'])}): p = {m['p_value']:.4g}; candidate right where the baseline was wrong:
{m['candidate_only_correct']}, the reverse: {m['baseline_only_correct']}.</p>
<h2>Per category</h2>
<table id="per-category"><tr><th rowspan="2">category</th><th rowspan="2">support</th><th colspan="4">candidate</th><th colspan="4">baseline</th></tr>
<tr>{'<th>accuracy</th><th>precision</th><th>recall</th><th>F1</th>' * 2}</tr>{rows}</table>
<h2>Infra validation</h2>{infra_html}
<h2>Reviewer decisions</h2><ul id="overrides">{overrides}</ul>
<h2>Explanations</h2><p>{explanations}</p>
{images}
<script>
// Lets a headless check confirm every plot decoded: sets data-images-loaded on <body>.
window.addEventListener("load", function () {{
  var imgs = Array.from(document.images);
  document.body.dataset.imagesLoaded = imgs.filter(function (i) {{ return i.complete && i.naturalWidth > 0; }}).length + "/" + imgs.length;
}});
</script>
</body></html>
"""
    Path(path).write_text(page, encoding="utf-8")
    return path


def to_json(review: Dict[str, Any]) -> str:
    """The machine-readable review (training histories left out; they are in the HTML plots)."""
    slim = {**review}
    for role in ("candidate", "baseline"):
        slim[role] = {k: v for k, v in review[role].items() if k != "history"}
    return json.dumps(slim, indent=2)
