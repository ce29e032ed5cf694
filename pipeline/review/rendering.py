"""The review for a person (text, self-contained HTML) and for programs (JSON)."""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

REVIEW_DIR = "review"
HTML_FILE = "index.html"


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def dtypes(model: Dict[str, Any]) -> str:
    """``features / served`` compute dtypes of a model's backbone (``bf16 / f32``); ``-`` for a text-only model."""
    d = model.get("compute_dtype")
    if not d:
        return "-" if model.get("backbone") in (None, "none") else "f32 / f32"  # models from before the setting
    short = {"float32": "f32", "bfloat16": "bf16"}
    return f"{short.get(d['features'], d['features'])} / {short.get(d['served'], d['served'])}"


def reads(model: Dict[str, Any]) -> str:
    """What a model reads, e.g. ``efficientnet_b7 + product_name, description``."""
    text = model.get("text_columns") or []
    backbone = model.get("backbone") or "?"
    if backbone == "none":
        return "text: " + ", ".join(text)
    return backbone + (" + " + ", ".join(text) if text else "")


def _infra_text(infra: Optional[Dict[str, Any]]) -> str:
    if infra is None:
        return "not run"
    if infra.get("skipped"):
        return "skipped (not blessed)"
    latency = infra.get("latency_ms") or {}
    return ("passed" if infra["passed"] else "FAILED") + (
        f" ({infra['requests']} requests, p95 {_fmt(latency.get('p95'), 0)} ms, budget "
        f"{_fmt(infra.get('latency_budget_ms'), 0)} ms)" if latency else "")


def tuning_lines(tuning: Optional[dict], indent: str = "    ") -> List[str]:
    """A tuned model's settings beside the defaults, and the eval and test accuracy of both recipes."""
    if not tuning:
        return []
    d, t = tuning["default"], tuning["tuned"]
    changed = tuning.get("changed") or []
    lines = [f"{indent}tuned head: {', '.join(changed) or 'the defaults kept (no trial beat them on eval)'}"]
    for key, v in tuning["values"].items():
        mark = "*" if key in changed else " "
        lines.append(f"{indent}  {mark} {key:<18} default {v['default']!s:<10} tuned {v['tuned']!s}")
    test_note = "" if tuning.get("test_examples") else f" (test: {tuning.get('test_note', 'none')})"
    lines.append(f"{indent}  eval accuracy default {_fmt(d['val_accuracy'])} tuned {_fmt(t['val_accuracy'])}; "
                 f"test accuracy default {_fmt(d.get('test_accuracy'))} tuned {_fmt(t.get('test_accuracy'))}"
                 f"{test_note}")
    return lines


def _signed(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:+.4f}"


def render_text(review: Dict[str, Any]) -> str:
    cands, base = review["candidates"], review["baseline"]
    lines = [f"run: {review['run_dir']}",
             f"metrics: {review['metrics_source']}, {review['split']} split, {base['examples']} examples", ""]
    names = [c["name"] for c in cands] + ["baseline"]
    models = cands + [base]
    width = max(14, *(len(n) + 2 for n in names))
    lines.append(f"{'':<30}" + "".join(f"{n:>{width}}" for n in names))
    lines.append(f"{'backbone':<30}" + "".join(f"{(m.get('backbone') or '?')[:width - 1]:>{width}}" for m in models))
    lines.append(f"{'text':<30}" + "".join(f"{(', '.join(m.get('text_columns') or []) or '-')[:width - 1]:>{width}}"
                                           for m in models))
    lines.append(f"{'accuracy':<30}" + "".join(f"{_fmt(m['accuracy']):>{width}}" for m in models))
    lines.append(f"{'macro F1':<30}" + "".join(f"{_fmt(m['macro_f1']):>{width}}" for m in models))
    lines.append(f"{'validation accuracy':<30}" + "".join(f"{_fmt(m.get('val_accuracy')):>{width}}" for m in models))
    lines.append(f"{'compute (features / served)':<30}" + "".join(f"{dtypes(m)[:width - 1]:>{width}}" for m in models))
    lines.append("per category: accuracy (support)")
    for label in review["labels"]:
        lines.append(f"  {label[:28]:<28}" + "".join(f"{_fmt(m['per_category'][label]['accuracy'], 2):>{width}}"
                                                    for m in models) + f"  ({base['per_category'][label]['support']})")
    lines.append("")
    for c in cands:
        verdict = "BLESSED" if c["blessed"] else "NOT blessed"
        lines.append(f"candidate {c['name']} ({reads(c)}): {verdict}; infra validation: {_infra_text(c['infra_validation'])}"
                     + ("; PUSHED" if c["pushed"] else ""))
        lines.extend(f"  [{'pass' if k['passed'] else 'FAIL'}] {k['name']}: {k['explanation']}" for k in c["checks"])
        m = c["mcnemar"]
        lines.append(f"  McNemar ({m['method']}): p = {m['p_value']:.4g}; right where the baseline was wrong: "
                     f"{m['candidate_only_correct']}, the reverse: {m['baseline_only_correct']}")
        if c.get("fusion"):
            f, b = c["fusion"], c.get("branch_val_accuracy") or {}
            lines.append(f"  fusion: image weight {f['image_weight']}, text weight {f['text_weight']} (chosen on the eval "
                         f"split); eval accuracy image alone {_fmt(b.get('image'))} (= without text), text alone "
                         f"{_fmt(b.get('text'))}, fused {_fmt(c.get('val_accuracy'))}")
        lines.extend(tuning_lines(c.get("tuning"), "  "))
        for p in (c["infra_validation"] or {}).get("problems", []):
            if not (c["infra_validation"] or {}).get("skipped"):
                lines.append(f"  - {p}")
    for role, model in [(c["name"], c) for c in cands] + [("baseline", base)]:
        lines.append(f"confusion matrix, {role} (rows: true, columns: predicted; labels in the order above)")
        lines.extend("  " + " ".join(f"{n:>4}" for n in row) for row in model["confusion_matrix"])
    champion = review.get("champion")
    if champion:
        lines.append(f"champion (served): version {champion['version']} ({champion['how']}), accuracy "
                     f"{_fmt(champion['accuracy'])}, tolerance {champion['tolerance']}")
        for name, c in (champion.get("candidates") or {}).items():
            lines.append(f"  {name}: {_signed(c['difference'])} vs the champion: {'pass' if c['passed'] else 'FAIL'}")
        lines.append("  per category: " + ", ".join(f"{label} {_fmt(m.get('accuracy'), 2)}"
                                                    for label, m in (champion.get("per_category") or {}).items()))
    elif review.get("champion_reason"):
        lines.append(f"champion: none compared ({review['champion_reason']})")
    drift = review.get("drift")
    if drift:
        moved = ", ".join(f"{m['feature']} {m['measure']} {m['value']:.3f} > {m['threshold']}" for m in drift["moved"])
        lines.append(f"drift gate: {drift['reason']}" if not drift["compared"] else
                     f"drift gate: batch {drift['newest_batch']} vs {drift['previous_batch']}: "
                     + (f"DRIFTED ({moved}); accepted (data.accept_drift=true)" if drift["accepted"] else
                        "nothing moved past its threshold"))
    if review.get("batches"):
        lines.append("batches trained on: " + ", ".join(f"{b['name'] or '(root)'}: {sum(b['examples'].values())} examples"
                                                        for b in review["batches"]["window"]))
    push = review["push"]
    lines.append(f"pushed: {review['pushed_candidate']} as version {review['pushed_version']} -> {push['destination']}"
                 if push["pushed"] else f"pushed: nothing ({push['reason']})")
    if push.get("selection"):
        lines.append(f"  why: {push['selection']}")
    lines.append(f"served versions under {review['serving_root']}: {review['served_versions'] or 'none'}")
    for o in review["overrides"]:
        state = "" if o.get("state", "COMPLETE") == "COMPLETE" else f" [{o['state']}: {o.get('error', '')}]"
        what = f" {o['candidate']}" if o.get("candidate") else ""
        lines.append(f"override: {o['action']}{what} by {o['user']} at {o['time']} -> version {o['served_version']}: "
                     f"{o['reason']}{state}")
    applied = review.get("reviews_applied")
    if applied:
        lines.append(f"reviews applied by this run's ingestion: {applied['applied']} of {applied['reviewed']} "
                     f"({applied['overrode_seller']} overrode the seller's category, "
                     f"{applied['labelled_without_category']} labelled listings without one), "
                     f"{len(applied['conflicts'])} not applied; from "
                     + ", ".join(f"{f['path']} (sha256 {f['sha256'][:12]})" for f in applied["files"]))
    categorized = review.get("categorized")
    if categorized:
        lines.append(f"listings without a category: {categorized['skipped']}" if categorized.get("skipped") else
                     f"listings without a category: {categorized['predicted']} categorised by version "
                     f"{categorized['model']['version']}, {categorized['review_queue']} to review: "
                     f"{categorized['folder']}")
    if review.get("skew"):
        k = review["skew"]
        lines.append(f"skew: {k['folder']} " + (f"({k['error']})" if k.get("error") else
                     f"({k['request_rows']} logged pictures; moved: {', '.join(k['moved']) or 'nothing'})"))
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
    models = [(c["name"], c) for c in review["candidates"]] + [("baseline", review["baseline"])]
    plots = {}
    # Seller text (category names) is shown as plain text: no math text for a '$' in 'Under $50'.
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 6), gridspec_kw={"wspace": 0.55})
        for ax, (role, model) in zip(np.atleast_1d(axes), models):
            matrix = np.array(model["confusion_matrix"])
            ax.imshow(matrix, cmap="Blues")
            ax.set_title(f"{role} ({reads(model)}): accuracy {_fmt(model['accuracy'])}", fontsize=9)
            ax.set_xticks(range(len(labels)), [l[:18] for l in labels], rotation=60, ha="right", fontsize=7)
            ax.set_yticks(range(len(labels)), [l[:18] for l in labels], fontsize=7)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            for (i, j), n in np.ndenumerate(matrix):
                ax.text(j, i, str(n), ha="center", va="center", fontsize=7,
                        color="white" if n > matrix.max() / 2 else "black")
        plots["confusion"] = _png(fig)
        plt.close(fig)
        histories = [(r, m.get("history")) for r, m in models if m.get("history")]
        if histories:
            fig, axes = plt.subplots(1, 2, figsize=(12, 4))
            for role, history in histories:
                for ax, metric in zip(axes, ("accuracy", "loss")):
                    epochs = range(1, len(history.get(metric, [])) + 1)
                    ax.plot(epochs, history.get(metric, []), label=f"{role} train")
                    ax.plot(epochs, history.get(f"val_{metric}", []), "--", label=f"{role} validation")
                    ax.set_title(f"{metric} (image head)")
                    ax.set_xlabel("epoch")
                    ax.legend(fontsize=7)
            plots["training"] = _png(fig)
            plt.close(fig)
    return plots


def write_html(review: Dict[str, Any], path: Optional[str] = None) -> str:
    """Writes the self-contained HTML report (default ``RUN_DIR/review/index.html``); returns its path."""
    path = path or os.path.join(review["run_dir"], REVIEW_DIR, HTML_FILE)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    e = html.escape
    cands, base = review["candidates"], review["baseline"]
    models: List[Dict[str, Any]] = cands + [base]
    names = [c["name"] for c in cands] + ["baseline"]
    head = "".join(f"<th>{e(n)}</th>" for n in names)
    def row(title: str, cells: List[str]) -> str:
        return f"<tr><td>{e(title)}</td>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"

    overall = "".join([
        row("reads", [e(reads(m)) for m in models]),
        row("accuracy", [_fmt(m["accuracy"]) for m in models]),
        row("macro F1", [_fmt(m["macro_f1"]) for m in models]),
        row("validation accuracy (early stopping)", [_fmt(m.get("val_accuracy")) for m in models]),
        row("backbone compute (features / served)", [e(dtypes(m)) for m in models]),
    ])
    per_category = "".join(
        f"<tr><td>{e(label)}</td><td>{base['per_category'][label]['support']}</td>"
        + "".join(f"<td>{_fmt(m['per_category'][label]['accuracy'], 3)}</td><td>{_fmt(m['per_category'][label]['f1'], 3)}</td>"
                  for m in models) + "</tr>"
        for label in review["labels"])
    candidate_rows = ""
    for c in cands:
        checks = "".join(
            f"<tr class='{'pass' if k['passed'] else 'fail'}'><td>{e(k['name'])}</td><td>{_fmt(k['value'], 4)}</td>"
            f"<td>{_fmt(k['threshold'], 4)}</td><td>{'pass' if k['passed'] else 'FAIL'}</td><td>{e(k['explanation'])}</td></tr>"
            for k in c["checks"])
        m = c["mcnemar"]
        fusion = ""
        if c.get("fusion"):
            f, b = c["fusion"], c.get("branch_val_accuracy") or {}
            fusion = (f"<p>Fusion: image weight {f['image_weight']}, text weight {f['text_weight']} (chosen on the eval "
                      f"split); eval accuracy of the image alone (= a request without text) {_fmt(b.get('image'))}, "
                      f"text alone {_fmt(b.get('text'))}, fused {_fmt(c.get('val_accuracy'))}.</p>")
        tuning = ""
        if c.get("tuning"):
            t = c["tuning"]
            rows = "".join(
                f"<tr class='{'changed' if k in t['changed'] else ''}'><td>{e(k)}</td><td>{e(str(v['default']))}</td>"
                f"<td>{e(str(v['tuned']))}</td></tr>" for k, v in t["values"].items())
            accuracy = "".join(
                f"<tr><td>{label}</td><td>{_fmt(t['default'].get(key))}</td><td>{_fmt(t['tuned'].get(key))}</td></tr>"
                for label, key in (("eval accuracy", "val_accuracy"), ("test accuracy", "test_accuracy")))
            tuning = (f"<table class='tuning'><tr><th>tuned head</th><th>default</th><th>tuned</th></tr>{rows}"
                      f"{accuracy}</table>")
        status = c.get("status") or ("blessed" if c["blessed"] else "not blessed")
        candidate_rows += (
            f"<section class='candidate' data-name='{e(c['name'])}' data-blessed='{str(c['blessed']).lower()}' "
            f"data-pushed='{str(c['pushed']).lower()}'>"
            f"<h3>{e(c['name'])} ({e(reads(c))}): {'BLESSED' if c['blessed'] else 'NOT blessed'}"
            f"{' &mdash; PUSHED' if c['pushed'] else ''}</h3><p>{e(status)}. Infra validation: {e(_infra_text(c['infra_validation']))}.</p>"
            f"<table class='thresholds'><tr><th>check</th><th>value</th><th>threshold</th><th>result</th><th>explanation</th></tr>{checks}</table>"
            f"<p>McNemar ({e(m['method'])}): p = {m['p_value']:.4g}; right where the baseline was wrong: "
            f"{m['candidate_only_correct']}, the reverse: {m['baseline_only_correct']}.</p>{fusion}{tuning}</section>")
    plots = _plots(review)
    images = "".join(f"<h2>{e(title)}</h2><img alt='{e(title)}' src='{plots[key]}'>"
                     for key, title in (("confusion", "Confusion matrices (test split)"),
                                        ("training", "Training curves")) if key in plots)
    push = review["push"]
    push_html = (f"{e(str(review['pushed_candidate']))} as version {review['pushed_version']} &rarr; {e(push['destination'])}"
                 if push["pushed"] else f"nothing ({e(str(push['reason']))})")
    why = f"<p id='why'>Why: {e(push['selection'])}</p>" if push.get("selection") else ""
    overrides = "".join(f"<li>{e(o['time'])}: <b>{e(o['action'])}</b> {e(o.get('candidate') or '')} by {e(o['user'])} "
                        f"&rarr; version {o['served_version']}: {e(o['reason'])} ({e(o.get('state', ''))})</li>"
                        for o in review["overrides"]) or "<li>none</li>"
    explanations = (f"<a id='explanations' href='{e(Path(review['explanations']).as_uri())}'>SHAP explanations of "
                    f"{e(review['candidate']['name'])}</a>" if review.get("explanations") else "not computed")
    decision = f"{review['pushed_candidate']} pushed" if push["pushed"] else "nothing pushed"
    champion = review.get("champion")
    if champion:
        rows = "".join(f"<tr class='{'pass' if c['passed'] else 'fail'}'><td>{e(n)}</td><td>{_signed(c['difference'])}</td>"
                       f"<td>{e('; '.join(k['explanation'] for k in c['checks'] or []))}</td></tr>"
                       for n, c in (champion.get("candidates") or {}).items())
        champion_html = (f"<p>Served version {champion['version']} ({e(str(champion['how']))}): test accuracy "
                         f"{_fmt(champion['accuracy'])}; tolerance {champion['tolerance']} "
                         f"(evaluation.champion_tolerance).</p><table id='champion'><tr><th>candidate</th>"
                         f"<th>vs champion</th><th>check</th></tr>{rows}</table>")
    else:
        champion_html = f"<p id='champion'>None compared: {e(str(review.get('champion_reason') or 'not recorded'))}.</p>"
    drift = review.get("drift")
    drift_html = "<p id='drift'>not recorded</p>" if not drift else (
        f"<p id='drift'>{e(drift['reason'] or '')}</p>" if not drift["compared"] else
        f"<p id='drift' data-accepted='{str(drift['accepted']).lower()}'>Batch {e(drift['newest_batch'])} vs "
        f"{e(drift['previous_batch'])}: " + (
            "DRIFTED (" + e(", ".join(f"{m['feature']} {m['measure']} {m['value']:.3f} > {m['threshold']}"
                                      for m in drift["moved"])) + "); accepted by data.accept_drift=true"
            if drift["accepted"] else "nothing moved past its threshold") + f" (<code>{e(drift['folder'])}</code>)</p>")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Blessing review: {e(review['pipeline'])}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
td:first-child, .thresholds td:last-child {{ text-align: left; }} .pass td {{ background: #e8f6e8; }} .fail, .fail td {{ background: #fbe4e4; }}
.tuning .changed td {{ font-weight: bold; }} #decision.blessed {{ color: #17701f; }} #decision.not-blessed {{ color: #a11; }} img {{ max-width: 100%; }}
</style></head>
<body data-blessed="{str(review['blessed']).lower()}" data-pushed-candidate="{e(str(review['pushed_candidate'] or ''))}">
<h1>Blessing review</h1>
<p>Run <code>{e(review['run_dir'])}</code>; metrics from {e(review['metrics_source'])} on the {e(review['split'])} split
({base['examples']} examples).</p>
<h2 id="decision" class="{'blessed' if push['pushed'] else 'not-blessed'}">Decision: {e(decision)}</h2>
<p>Pushed: {push_html}. Served versions: {e(str(review['served_versions']))}.</p>{why}
<h2>Champion (the served model)</h2>{champion_html}
<h2>Drift gate</h2>{drift_html}
<h2>Candidates and the baseline</h2>
<table id="overall"><tr><th></th>{head}</tr>{overall}</table>
{candidate_rows}
<h2>Per category (accuracy / F1)</h2>
<table id="per-category"><tr><th>category</th><th>support</th>{''.join(f'<th colspan="2">{e(n)}</th>' for n in names)}</tr>{per_category}</table>
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
    slim["candidates"] = [{k: v for k, v in c.items() if k != "history"} for c in review["candidates"]]
    return json.dumps(slim, indent=2)
