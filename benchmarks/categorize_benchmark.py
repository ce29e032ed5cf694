"""Categorising a generated catalogue: throughput against the model's own batched forward, and memory at 1x and 10x.

    .venv/bin/python benchmarks/categorize_benchmark.py [--backbone efficientnet_b7] [--per-class 150]
        [--scale 10] [--scale-backbone efficientnet_b0] [--skip-scale]

1. Generates a catalogue (``make_sample``, 7 categories x ``--per-class``) and exports an image model
   with ``--backbone`` at 224 (random weights: speed does not depend on them), pushed as version 1.
2. Throughput, each in a fresh process, with the same model and catalogue:
   - **raw**: the model's ``serving_default`` on pictures already read and prepared in memory, in
     batches of ``categorize.batch_size`` (32): the model's own batched forward, decoding of the
     600-pixel JPEG inside the model included; nothing else;
   each timed from loading the model to the last answer (the Beam job loads the model in its worker:
   loading and the first call's tracing count alike for the three);
   - **threads**: ``placedemarche categorize --model`` as the CLI runs it by default (files read and
     prepared by 2 threads one batch ahead of the model);
   - **beam**: the same as a Beam job (RunInference) on the DirectRunner with 2 worker threads.
   Target: categorising at >= 90 % of the raw figure.
3. Memory: peak resident memory of the ``threads`` and ``beam`` paths on the catalogue and on a
   ``--scale`` x copy of it (every row under a new id and its own picture file), with the cheaper
   ``--scale-backbone`` so that the 10x run takes minutes. Target: flat (the 10x peak within a few
   percent of the 1x one).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEAM_ARGS = ["--direct_num_workers=2", "--direct_running_mode=multi_threading"]


def _listings(data_dir: str):
    from placedemarche.components.catalogue_example_gen import catalogue, executor
    from placedemarche.components.categorizer import categorize as lib

    with open(executor.find_csv(data_dir, ""), encoding="utf-8") as f:
        return lib.read_listings(f.read(), catalogue.Columns())


def child(mode: str, data_dir: str, model_dir: str, scratch: str) -> None:
    """One measurement in this fresh process; prints {seconds, listings, listings_per_s, peak_rss_mb}."""
    sys.path.insert(0, str(REPO))
    from placedemarche.components.categorizer import categorize as lib

    listings, rejected, total = _listings(data_dir)
    options = lib.Options(images_dir=os.path.join(data_dir, "Images"))
    # Every path is timed from loading the model to the last answer (the Beam job loads it in its
    # worker, so loading and the first call's tracing count for all three alike).
    if mode == "raw":
        pictures = [lib._prepare(x, options)[0] for x in listings]
        pictures = [p for p in pictures if p is not None]
        start = time.perf_counter()
        model = lib.LocalModel.load(model_dir)
        for i in range(0, len(pictures), options.batch_size):
            model.predict(pictures[i:i + options.batch_size], None)
        seconds, done = time.perf_counter() - start, len(pictures)
    elif mode == "threads":
        start = time.perf_counter()
        result = lib.categorize(listings, lib.LocalModel.load(model_dir), options)
        seconds, done = time.perf_counter() - start, len(result.predictions)
        lib.write_outputs(scratch, result, total, listings)
    else:
        from placedemarche.components.categorizer import beam_job

        result = beam_job.categorize_with_beam(listings, model_dir, options, scratch, BEAM_ARGS)
        seconds, done = result.seconds, len(result.predictions)
        lib.write_outputs(os.path.join(scratch, "out"), result, total, listings)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "seconds": round(seconds, 2), "listings": done,
                      "listings_per_s": round(done / seconds, 2), "peak_rss_mb": round(peak)}))


def _measure(mode: str, data_dir: Path, model_dir: Path, work: Path) -> dict:
    scratch = work / f"{mode}-{data_dir.name}"
    command = [sys.executable, __file__, "--child", mode, str(data_dir), str(model_dir), str(scratch)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{mode} failed:\n{result.stderr[-3000:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"  {mode:<8} {data_dir.name:<6} {figures['listings']:>6} listings {figures['seconds']:>8.1f} s "
          f"{figures['listings_per_s']:>7.2f} /s  peak {figures['peak_rss_mb']} MB", flush=True)
    return figures


def _export(backbone: str, labels, out: Path) -> Path:
    sys.path.insert(0, str(REPO))
    from placedemarche.components.trainer import backbones, export as export_lib, model as model_lib
    from placedemarche.serving import model_contract

    extractor, _ = backbones.build(backbone, 224, "none")
    head = model_lib.build_head(int(extractor.output_shape[-1]), len(labels), 64, 0.0, 1)
    export_lib.export(export_lib.Classifier(labels, 224, extractor=extractor, image_head=head), str(out / "export"),
                      {"backbone": backbone, "image_size": 224})
    version = out / "product_category" / "1"
    shutil.copytree(out / "export", version)
    model_contract.write_complete_marker(str(version), {"version": 1})
    return version


def _scaled(data_dir: Path, out: Path, scale: int) -> Path:
    """Every row ``scale`` times under a new id, each with its own picture file."""
    csv_path = next(data_dir.glob("*.csv"))
    (out / "Images").mkdir(parents=True)
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns, rows = reader.fieldnames, list(reader)
    with open(out / csv_path.name, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for k in range(scale):
            for row in rows:
                name = f"{k}-{row['image']}"
                source = data_dir / "Images" / row["image"]
                if source.exists():
                    os.link(source, out / "Images" / name)
                writer.writerow({**row, "uniq_id": f"{row['uniq_id']}-{k}", "image": name})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_b7")
    parser.add_argument("--scale-backbone", default="efficientnet_b0")
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--child", nargs=4, metavar=("MODE", "DATA", "MODEL", "SCRATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    sys.path.insert(0, str(REPO))
    from placedemarche.pipeline import sample_data

    work = Path(tempfile.mkdtemp(prefix="categorize-bench-"))
    data = work / "x1"
    sample_data.make_sample(data, per_class=args.per_class, seed=3, show_progress=False)
    labels = sorted(c.name for c in sample_data.CATEGORIES)
    print(f"work folder {work}; {args.per_class * 7} listings; {os.cpu_count()} CPUs", flush=True)
    report = {"backbone": args.backbone, "listings": args.per_class * 7, "cpus": os.cpu_count()}

    model = _export(args.backbone, labels, work / "model")
    print(f"throughput, {args.backbone} at 224:", flush=True)
    for mode in ("raw", "threads", "beam"):
        report[mode] = _measure(mode, data, model, work)
    for mode in ("threads", "beam"):
        report[f"{mode}_vs_raw"] = round(report[mode]["listings_per_s"] / report["raw"]["listings_per_s"], 3)

    if not args.skip_scale:
        small = _export(args.scale_backbone, labels, work / "model-small")
        scaled = _scaled(data, work / f"x{args.scale}", args.scale)
        print(f"memory, {args.scale_backbone} at 224, 1x and {args.scale}x:", flush=True)
        report["scale"] = {"backbone": args.scale_backbone, "factor": args.scale}
        for mode in ("threads", "beam"):
            one, many = _measure(mode, data, small, work), _measure(mode, scaled, small, work)
            report["scale"][mode] = {"x1": one, f"x{args.scale}": many,
                                     "peak_ratio": round(many["peak_rss_mb"] / one["peak_rss_mb"], 3)}
    print(json.dumps(report, indent=2))
    print(f"\ncategorising vs the model's own batched forward ({report['raw']['listings_per_s']} /s): threads "
          f"{report['threads_vs_raw']:.0%}, beam {report['beam_vs_raw']:.0%} (target >= 90 %)")
    if "scale" in report:
        for mode in ("threads", "beam"):
            s = report["scale"][mode]
            print(f"peak memory {mode}: {s['x1']['peak_rss_mb']} MB at 1x, {s[f'x{args.scale}']['peak_rss_mb']} MB at "
                  f"{args.scale}x (ratio {s['peak_ratio']})")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
