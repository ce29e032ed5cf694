"""Trainer benchmark on the real Flipkart sample: EfficientNet-B7 and VGG19 at 224 (random weights).

    .venv/bin/python benchmarks/train_benchmark.py [--data ../shared/flipkart] [--backbones efficientnet_b7 vgg19]

For each backbone it prints, measured in the same run:
- raw forward throughput: the frozen backbone on already-decoded 224 x 224 batches;
- feature-extraction throughput: what the Trainer does (decode + resize in tf.data + backbone), target
  >= 85 % of the raw figure;
- head epoch time, and the whole Trainer wall time (read TFRecords, features, head, export), targets
  on the 2-core machine: B7 <= 4 min, VGG19 <= 5 min.

The recipe is the pipeline's default configuration (candidate / baseline sections) with random
weights, as ImageNet weights cannot be downloaded here; speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def ingest(data_dir: str, out: Path) -> Path:
    from placedemarche.components.catalogue_example_gen import component

    examples, _ = component.run_executor(data_dir, str(out))
    return Path(examples)


def raw_forward(backbone: str, image_size: int, batch_size: int, images: int = 96) -> float:
    """Images/s of the frozen backbone alone on decoded pixels (after one warm-up batch)."""
    import numpy as np
    import tensorflow as tf

    from placedemarche.components.trainer import backbones

    extractor, _ = backbones.build(backbone, image_size, "none")
    step = tf.function(lambda x: extractor(x, training=False))
    batch = tf.constant(np.random.RandomState(0).uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32"))
    step(batch).numpy()
    start = time.perf_counter()
    done = 0
    while done < images:
        step(batch).numpy()
        done += batch_size
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "flipkart"))
    parser.add_argument("--backbones", nargs="+", default=["efficientnet_b7", "vgg19"])
    args = parser.parse_args()
    if not Path(args.data).is_dir():
        raise SystemExit(f"no catalogue at {args.data}: pass --data (the real sample is ../shared/flipkart)")

    from placedemarche.pipeline.config import load_config
    from placedemarche.components.trainer.trainer import TrainSpec, fit_and_export

    config = load_config(None, ["training.allow_random_weights=true"])
    work = Path(tempfile.mkdtemp(prefix="train-bench-"))
    examples = ingest(args.data, work)
    rows = []
    for name in args.backbones:
        section = config.candidate if config.candidate.backbone == name else config.baseline
        model = {**asdict(section), "backbone": name, "weights": "none"}
        spec = TrainSpec.from_dicts(model, asdict(config.training))
        raw = raw_forward(name, spec.image_size, spec.batch_size)
        start = time.perf_counter()
        metadata = fit_and_export(
            spec, [str(examples / "Split-train" / "*.gz")], [str(examples / "Split-eval" / "*.gz")],
            str(work / name / "model"), str(work / name / "run"),
        )
        wall = time.perf_counter() - start
        history = json.loads((work / name / "run" / "history.json").read_text())
        timings = history["timings"]
        extraction = timings["feature_images"] / timings["feature_seconds"]
        rows.append((name, spec.augmentation, metadata["augmented_views"], raw, extraction,
                     history["seconds_per_epoch"], metadata["epochs_run"], wall))
        print(f"{name}: {json.dumps({k: round(v, 2) for k, v in timings.items()})}", flush=True)
    print(f"\n{'backbone':<16} {'aug':>4} {'views':>5} {'raw img/s':>10} {'extract img/s':>14} "
          f"{'ratio':>6} {'epoch s':>8} {'epochs':>6} {'trainer s':>10}")
    for name, aug, views, raw, extraction, epoch, epochs, wall in rows:
        print(f"{name:<16} {str(aug):>4} {views:>5} {raw:>10.2f} {extraction:>14.2f} "
              f"{extraction / raw:>6.0%} {epoch:>8.3f} {epochs:>6} {wall:>10.1f}")
    print("\ntargets: extraction >= 85 % of raw; trainer wall time B7 <= 240 s, VGG19 <= 300 s")


if __name__ == "__main__":
    main()
