"""Ingestion benchmark on the real Flipkart sample: throughput and peak memory, 1x and 4x the rows.

    .venv/bin/python benchmarks/ingest_benchmark.py [--data ../shared/flipkart] [--scale 4]

Each size runs CatalogueExampleGen's executor (the Beam DirectRunner, as the local pipeline does) in
a fresh process, so its peak resident memory is its own. The 4x catalogue repeats every row under a
new id with its own copy of the picture (a trailing byte after the JPEG end marker makes each copy a
different file, as distinct products are), so nothing is grouped as a shared picture.

Throughput "after start-up" is the marginal rate between the two sizes, (N4 - N1) / (T4 - T1): the
fixed cost of starting Beam and TensorFlow cancels out.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
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


def child(data_dir: str, out_dir: str) -> None:
    """Runs the executor once and prints {seconds, rows, examples, peak_rss_mb} as JSON."""
    sys.path.insert(0, str(REPO))
    from placedemarche.components.catalogue_example_gen import artifacts, component

    start = time.perf_counter()
    _, report_uri = component.run_executor(data_dir, out_dir)
    seconds = time.perf_counter() - start
    summary = json.loads(Path(report_uri, artifacts.SUMMARY_FILE).read_text())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rows": summary["rows"],
                      "examples": sum(summary["examples"].values()), "peak_rss_mb": peak}))


def scaled_copy(data_dir: Path, out: Path, scale: int) -> Path:
    """Writes a catalogue with every row repeated ``scale`` times under new ids and files."""
    csv_path = next(data_dir.glob("*.csv"))
    images = out / "Images"
    images.mkdir(parents=True)
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    id_col, image_col = header.index("uniq_id"), header.index("image")
    with open(out / csv_path.name, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for k in range(scale):
            for row in rows:
                row = list(row)
                new_id = hashlib.md5(f"{row[id_col]}/{k}".encode()).hexdigest()
                source = data_dir / "Images" / row[image_col]
                row[id_col], row[image_col] = new_id, f"{new_id}.jpg"
                if source.exists():
                    (images / row[image_col]).write_bytes(source.read_bytes() + bytes([k]))
                writer.writerow(row)
    return out


def run_child(data_dir: Path, work: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(data_dir), str(work)],
        capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit(f"benchmark child failed on {data_dir}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "flipkart"))
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    data = Path(args.data)
    if not any(data.glob("*.csv")):
        raise SystemExit(f"no catalogue at {data}: pass --data (the real sample is ../shared/flipkart)")
    work = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    try:
        print(f"preparing the {args.scale}x catalogue in {work} ...", flush=True)
        scaled = scaled_copy(data, work / "scaled", args.scale)
        one = run_child(data, work / "out1")
        many = run_child(scaled, work / "outN")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'rows':>6} {'examples':>9} {'seconds':>8} {'img/s':>7} {'peak RSS MB':>12}")
    for r in (one, many):
        print(f"{r['rows']:>6} {r['examples']:>9} {r['seconds']:>8.1f} "
              f"{r['examples'] / r['seconds']:>7.1f} {r['peak_rss_mb']:>12.0f}")
    marginal = (many["examples"] - one["examples"]) / (many["seconds"] - one["seconds"])
    print(f"\nthroughput after start-up (marginal, {args.scale}x vs 1x): {marginal:.1f} images/s "
          f"(target >= 100)")
    print(f"peak memory: {one['peak_rss_mb']:.0f} MB for {one['rows']} rows, "
          f"{many['peak_rss_mb']:.0f} MB for {many['rows']} rows "
          f"(ratio {many['peak_rss_mb'] / one['peak_rss_mb']:.2f}; flat would be 1.0)")


if __name__ == "__main__":
    main()
