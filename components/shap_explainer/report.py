"""Writing explanations: ``shap_values.npz``, one overlay PNG per picture, ``index.json``, ``index.html``."""

from __future__ import annotations

import html
import json
import os
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from placedemarche.components.shap_explainer.explain import Explanation, TextExplanation

from placedemarche.components.shap_explainer.constants import HTML_FILE, INDEX_FILE, OVERLAYS_DIR, VALUES_FILE  # noqa: F401


@dataclass
class Item:
    """One explained picture and what is known about it."""

    id: str
    explanation: Explanation
    true_label: Optional[str] = None  # unknown for an ad-hoc picture
    source: Optional[str] = None  # the file it came from, for ad-hoc pictures
    text: Optional[TextExplanation] = None  # the words, for a model that reads text


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80] or "image"


def _text_entry(t: TextExplanation, labels: Sequence[str]) -> dict:
    return {
        "text": t.text,
        "tokens": t.tokens,
        # values[i][j]: token i's attribution to class j of top_k (the picture's top classes)
        "values": np.round(t.values, 6).tolist(),
        "classes": [labels[c] for c in t.classes],
        "base_values": [float(v) for v in t.base_values],  # no word: the picture's own answer
        "efficiency_gap": float(t.efficiency_gap().max()) if len(t.classes) else 0.0,
        "seconds": round(t.seconds, 3),
    }


def overlay(item: Item, labels: Sequence[str], path: str) -> None:
    """The picture, then one attribution map per explained class, titled with its probability.

    Red: the region pushes the probability of that class up; blue: down (SHAP's convention), over a
    faded grey copy of the picture; one colour scale for all maps of the picture.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"text.parse_math": False}):  # category names are plain text ('Under $50')
        _overlay(item, labels, path, plt)


def _overlay(item: Item, labels: Sequence[str], path: str, plt) -> None:
    e = item.explanation
    maps = e.values.sum(axis=2)  # [H, W, k]: the three channels of a pixel together
    limit = float(np.nanpercentile(np.abs(maps), 99.5)) or 1e-12
    grey = e.pixels.mean(axis=2)
    k = len(e.classes)
    fig, axes = plt.subplots(1, k + 1, figsize=(3 * (k + 1), 3.4))
    axes[0].imshow(e.pixels)
    predicted = labels[e.classes[0]]
    axes[0].set_title(f"true: {item.true_label}" if item.true_label else "picture", fontsize=8)
    for i, (ax, c) in enumerate(zip(axes[1:], e.classes)):
        ax.imshow(grey, cmap="gray", vmin=0, vmax=255)
        im = ax.imshow(maps[..., i], cmap="bwr", vmin=-limit, vmax=limit, alpha=0.6)
        ax.set_title(f"{labels[c][:24]}\np = {e.probabilities[c]:.3f}", fontsize=8,
                     fontweight="bold" if labels[c] == predicted else "normal")
    for ax in axes:
        ax.axis("off")
    fig.colorbar(im, ax=axes, orientation="horizontal", fraction=0.05, pad=0.04, label="SHAP value")
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def write(out_dir: str, items: List[Item], labels: Sequence[str], settings: dict) -> List[dict]:
    """Writes every output for ``items`` into ``out_dir``; returns the index entries."""
    os.makedirs(os.path.join(out_dir, OVERLAYS_DIR), exist_ok=True)
    index = []
    for n, item in enumerate(items):
        e = item.explanation
        png = os.path.join(OVERLAYS_DIR, f"{n:03d}_{_safe(item.id)}.png")
        overlay(item, labels, os.path.join(out_dir, png))
        index.append({
            "id": item.id,
            "source": item.source,
            "true_label": item.true_label,
            "predicted_label": labels[e.classes[0]],
            "probability": float(e.probabilities[e.classes[0]]),
            "top_k": [{"label": labels[c], "probability": float(e.probabilities[c])} for c in e.classes],
            "overlay": png,
            "seconds": round(e.seconds, 2),
            "efficiency_gap": float(e.efficiency_gap().max()),
            **({"text": _text_entry(item.text, labels)} if item.text is not None else {}),
        })
    if items:
        np.savez_compressed(
            os.path.join(out_dir, VALUES_FILE),
            ids=np.array([i.id for i in items]),
            values=np.stack([i.explanation.values for i in items]).astype(np.float32),
            classes=np.array([i.explanation.classes for i in items]),
            base_values=np.stack([i.explanation.base_values for i in items]),
            probabilities=np.stack([i.explanation.probabilities for i in items]),
            pixels=np.stack([i.explanation.pixels for i in items]),
            labels=np.array(list(labels)),
            # Words: one array per explained listing (their numbers of words differ).
            **{f"text_values_{n:03d}": i.text.values.astype(np.float32) for n, i in enumerate(items) if i.text},
            **{f"text_tokens_{n:03d}": np.array(i.text.tokens, dtype=str) for n, i in enumerate(items) if i.text},
        )
    with open(os.path.join(out_dir, INDEX_FILE), "w", encoding="utf-8") as f:
        json.dump({"settings": settings, "labels": list(labels), "images": index}, f, indent=2)
    _write_html(out_dir, index, settings)
    return index


def _words_html(text: dict) -> str:
    """The listing's words coloured by their attribution to the predicted class (red: for, blue: against)."""
    e = html.escape
    if not text["tokens"]:
        return "<p class='words'>(no words: the answer is the picture's)</p>"
    values = [v[0] for v in text["values"]]
    limit = max(abs(v) for v in values) or 1e-12
    spans = []
    for token, value in zip(text["tokens"], values):
        alpha = min(1.0, abs(value) / limit)
        colour = f"rgba(220,30,30,{alpha:.2f})" if value > 0 else f"rgba(30,80,220,{alpha:.2f})"
        spans.append(f"<span class='word' style='background:{colour}' data-value='{value:.6f}' "
                     f"title='{value:+.4f}'>{e(token)}</span>")
    return (f"<p class='words'>Words for <b>{e(text['classes'][0])}</b> (red: for, blue: against; without any word the "
            f"picture alone gives {text['base_values'][0]:.3f}): " + " ".join(spans) + "</p>")


def _write_html(out_dir: str, index: List[dict], settings: dict) -> None:
    e = html.escape
    cards = "".join(
        f"<figure><img src='{e(i['overlay'])}' alt='{e(i['id'])}'><figcaption><b>{e(i['id'])}</b>: "
        f"true {e(str(i['true_label']))}, predicted {e(i['predicted_label'])} ({i['probability']:.3f})"
        f"{' ✓' if i['true_label'] == i['predicted_label'] else ''}</figcaption>"
        + (_words_html(i["text"]) if "text" in i else "") + "</figure>"
        for i in index
    ) or "<p>No pictures were explained.</p>"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>SHAP explanations</title>
<style>body {{ font-family: sans-serif; margin: 2em; }} figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; }}
.word {{ padding: 0 2px; border-radius: 3px; }}</style>
</head><body>
<h1>SHAP explanations</h1>
<p>Partition explainer, masker <code>{e(str(settings.get('masker')))}</code>, max_evals {settings.get('max_evals')},
top {settings.get('top_k')} classes. Red regions raise the probability of the class above the map, blue ones lower it.</p>
{cards}
</body></html>
"""
    with open(os.path.join(out_dir, HTML_FILE), "w", encoding="utf-8") as f:
        f.write(page)
