"""``explain``: SHAP explanations of any picture (and its words) with an exported model."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from placedemarche.pipeline import config as config_lib
from placedemarche.pipeline.cli import common

logger = logging.getLogger(__name__)


def _cmd_explain(args: argparse.Namespace) -> int:
    from placedemarche.components.shap_explainer import executor as explain_executor
    from placedemarche.components.shap_explainer import report

    cfg = config_lib.load_config(args.config, args.overrides)
    settings = {"masker": args.masker or cfg.explain.masker, "max_evals": args.max_evals or cfg.explain.max_evals,
                "batch_size": cfg.explain.batch_size, "top_k": args.top_k or cfg.explain.top_k}
    if not os.path.exists(os.path.join(args.model, "saved_model.pb")):
        raise common.UserError(f"--model '{args.model}' holds no saved_model.pb: give a pushed version folder "
                        "(e.g. RUN_DIR/serving/product_category/1) or a Trainer's Format-Serving folder")
    texts = args.text or []
    if len(texts) not in (0, 1, len(args.images)):
        raise common.UserError(f"--text given {len(texts)} times for {len(args.images)} pictures: give it once (for all) "
                        "or once per picture, in the same order")
    pictures = []
    for n, path in enumerate(args.images):
        if not os.path.isfile(path):
            raise common.UserError(f"image '{path}' does not exist")
        with open(path, "rb") as f:
            text = texts[n] if len(texts) > 1 else (texts[0] if texts else "")
            pictures.append(explain_executor.Picked(os.path.basename(path), None, f.read(), text, os.path.abspath(path)))
    progress = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(pictures), unit="image", desc="SHAP", file=sys.stderr)

        def progress(n, total, uid, result):
            bar.set_postfix_str(f"{uid}: {result.seconds:.1f} s")
            bar.update(1)
    try:
        items, labels, _ = explain_executor.explain_items(args.model, pictures, settings, progress)
    except ValueError as e:  # an undecodable picture, a model without the pixels signature
        raise common.UserError(str(e)) from e
    index = report.write(args.out, items, labels, {**settings, "model": os.path.abspath(args.model)})
    for entry in index:
        top = ", ".join(f"{t['label']} {t['probability']:.3f}" for t in entry["top_k"])
        print(f"{entry['id']}: {top} -> {os.path.join(args.out, entry['overlay'])}")
        if "text" in entry and entry["text"]["tokens"]:
            ranked = sorted(zip(entry["text"]["tokens"], (v[0] for v in entry["text"]["values"])), key=lambda t: -abs(t[1]))
            print("  words: " + ", ".join(f"{w} {v:+.3f}" for w, v in ranked[:8]))
    print(f"explanations: {os.path.join(args.out, report.HTML_FILE)}")
    return common.EXIT_OK



def register(sub) -> None:
    """Adds this group's subcommands to ``sub`` (the top-level parser's subparsers)."""
    p = sub.add_parser(
        "explain",
        help="SHAP explanations of any pictures with an exported model",
        description=(
            "Explains each IMAGE with SHAP's Partition explainer over the model's own decoding and "
            "preprocessing (the served model), for its top-k categories; for a model that reads text, "
            "also which words of --text moved the decision (the picture held fixed). Writes "
            "OUT/overlays/*.png, OUT/shap_values.npz, OUT/index.json and OUT/index.html, and prints each "
            "picture's top categories (and most influential words). About max_evals forward passes per picture."
        ),
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="picture files (JPEG, PNG, GIF, BMP)")
    p.add_argument("--model", required=True, metavar="DIR", help="exported SavedModel folder")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--text", action="append", metavar="TEXT",
                   help="the listing's name and description (once for all pictures, or once per picture)")
    p.add_argument("--masker", choices=config_lib.MASKERS, help="SHAP masker (default: explain.masker)")
    p.add_argument("--max-evals", type=int, metavar="N", help="model evaluations per picture (default: explain.max_evals)")
    p.add_argument("--top-k", type=int, metavar="K", help="categories explained per picture (default: explain.top_k)")
    common.add_config_arguments(p)
    p.set_defaults(func=_cmd_explain)

