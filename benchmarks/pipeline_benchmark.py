"""The whole pipeline on the real Flipkart sample: wall time per component and in total.

    .venv/bin/python benchmarks/pipeline_benchmark.py [--data ../shared/flipkart] [--output DIR]

Default recipe: the candidates ``b7_image`` and ``b7_text`` (EfficientNet-B7 features computed once
for both) and the VGG19 baseline with augmentation at 224, 30 epochs with early stopping, random
backbone weights (ImageNet weights cannot be downloaded here; speed does not depend on them), SHAP
on one test picture per category (7 pictures and their words, max_evals 300), local Beam runner. A
fresh run folder, so nothing comes from the cache. Target on the 2-core machine: <= 15 minutes.
Prints each component's time, each candidate's test accuracy, what was pushed, and peak memory.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "flipkart"))
    parser.add_argument("--output", help="run folder (default: a temporary one, removed afterwards)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if not os.path.isdir(os.path.join(args.data, "Images")):
        sys.exit(f"no catalogue at {args.data} (it needs the CSV and Images/)")
    from placedemarche.pipeline.cli import main as cli

    run_dir = args.output or tempfile.mkdtemp(prefix="pipeline-benchmark-")
    if os.path.exists(os.path.join(run_dir, "metadata.sqlite")):
        sys.exit(f"{run_dir} already holds a run: give a new folder so nothing comes from the cache")
    sets = ["training.allow_random_weights=true", "candidates.*.weights=none", "baseline.weights=none",
            "explain.images_per_class=1", *args.overrides]
    argv = ["-q", "run", "--data", args.data, "--output", run_dir, "--json"]
    for s in sets:
        argv += ["--set", s]
    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out):
        status = cli(argv)
    total = time.perf_counter() - start
    report = json.loads(out.getvalue())
    print(f"{'component':<28} {'state':<9} {'seconds':>8}")
    for node in report["nodes"]:
        print(f"{node['node']:<28} {node['state']:<9} {node['seconds'] or 0:>8.1f}")
    print(f"{'total (wall)':<32} {total:>8.1f}  ({total / 60:.1f} min; target <= 15 min)")
    gate = report.get("gate") or {}
    summary = {
        "status": status, "failure": report.get("failure"), "total_seconds": round(total, 1),
        "nodes": {n["node"]: n["seconds"] for n in report["nodes"]},
        "candidates": {c["name"]: {"test_accuracy": c["test_accuracy"], "blessed": c["blessed"], "pushed": c["pushed"],
                                   "infra_validation": c["infra_validation"]} for c in report["candidates"]},
        "baseline_accuracy": gate.get("baseline_accuracy"), "test_examples": gate.get("test_examples"),
        "pushed": report.get("pushed"),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "explained_pictures": (report.get("explanations") or {}).get("images"), "overrides": sets,
    }
    print(json.dumps(summary, indent=2))
    if not args.output:
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
