"""Splits a one-folder catalogue into batch folders (DEST/<batch>/ with its CSV and Images/), for
trying the drift gate and the champion loop on a real catalogue (README: "Catalogue batches").

    .venv/bin/python scripts/split_into_batches.py ../shared/flipkart /tmp/flipkart-batches --batches 2

Rows are ordered by ``--by`` (default ``crawl_timestamp``: the order listings arrived in; ``random``
shuffles with ``--seed``) and cut into ``--batches`` consecutive batches of equal size, named
``batch-01``, ``batch-02``, ... (name order = arrival order, as the pipeline reads them). Each batch
gets the rows' pictures **copied** (not linked: ingestion refuses links that leave a batch folder).
A row whose picture is missing keeps its row (ingestion quarantines it). DEST must not exist.
Never write DEST inside the project: the catalogue is reference data.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="catalogue folder: one *.csv and Images/")
    parser.add_argument("dest", help="folder to create, one sub-folder per batch")
    parser.add_argument("--batches", type=int, default=2, help="number of batches (default 2)")
    parser.add_argument("--by", default="crawl_timestamp", help="column to order rows by, or 'random'")
    parser.add_argument("--seed", type=int, default=0, help="with --by random")
    parser.add_argument("--images-dir", default="Images")
    args = parser.parse_args(argv)
    csvs = [n for n in sorted(os.listdir(args.source)) if n.endswith(".csv")]
    if len(csvs) != 1:
        parser.error(f"{args.source} must hold exactly one *.csv, found {csvs or 'none'}")
    if args.batches < 1:
        parser.error("--batches must be at least 1")
    if os.path.exists(args.dest):
        parser.error(f"{args.dest} exists: give a new folder")
    with open(os.path.join(args.source, csvs[0]), encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    if args.by == "random":
        random.Random(args.seed).shuffle(rows)
    elif args.by in fields:
        rows.sort(key=lambda r: r[args.by])
    else:
        parser.error(f"--by {args.by!r}: not a column of {csvs[0]} ({', '.join(fields)}) nor 'random'")
    size = -(-len(rows) // args.batches)
    for i in range(args.batches):
        part = rows[i * size:(i + 1) * size]
        folder = os.path.join(args.dest, f"batch-{i + 1:02d}")
        os.makedirs(os.path.join(folder, args.images_dir))
        with open(os.path.join(folder, csvs[0]), "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(part)
        copied = 0
        for row in part:
            src = os.path.join(args.source, args.images_dir, os.path.basename(row.get("image") or ""))
            if row.get("image") and os.path.isfile(src):
                shutil.copyfile(src, os.path.join(folder, args.images_dir, os.path.basename(src)))
                copied += 1
        first, last = (part[0].get(args.by, ""), part[-1].get(args.by, "")) if args.by in fields else ("", "")
        print(f"{folder}: {len(part)} rows, {copied} pictures" + (f" ({args.by} {first} .. {last})" if first else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
