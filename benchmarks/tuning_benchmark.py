"""Tuning benchmark on the real Flipkart sample: what 20 trials cost beyond the features, and what they buy.

    .venv/bin/python benchmarks/tuning_benchmark.py [--data ../shared/flipkart] [--trials 20]
        [--algorithm random] [--candidates b7_image,b7_text]

Measured in one process, with the pipeline's default config (random backbone weights: ImageNet
weights cannot be downloaded here):

- **feature extraction**: EfficientNet-B7 over the train, eval and test pictures, once (as the
  ``Features_efficientnet_b7`` and ``TestFeatures_efficientnet_b7`` nodes), timed and reported apart;
- **tuning** of each candidate: ``search.tune`` with ``--trials`` trials (plus the default recipe's
  reference training) on those features, exactly as the ``Tuner_<candidate>`` node runs it; target
  for ``b7_image``: 20 trials <= 60 s on 2 cores;
- **default vs tuned**: both recipes trained as the Trainer trains them (``fit_classifiers``) and
  scored on eval (what tuning chose on) and on test (never seen by tuning), through the same
  ``Fitted.predict`` the Trainer's comparison uses.
"""

from __future__ import annotations

import argparse
import json
import os
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
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--algorithm", default="random", choices=("random", "bayesian", "hyperband"))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--candidates", default="b7_image,b7_text")
    parser.add_argument("--work", help="keep the examples and features here (default: a temporary folder)")
    args = parser.parse_args()
    if not Path(args.data).is_dir():
        raise SystemExit(f"no catalogue at {args.data}: pass --data (the real sample is ../shared/flipkart)")

    import logging

    from placedemarche.components.catalogue_example_gen import component
    from placedemarche.components.trainer import features as features_lib
    from placedemarche.components.trainer import trainer as trainer_lib
    from placedemarche.components.tuner import search
    from placedemarche.components.trainer import space as space_lib
    from placedemarche.pipeline import config as config_lib
    from placedemarche.pipeline import pipeline as pipeline_lib

    logging.basicConfig(level=logging.WARNING)
    os.environ["PLACEDEMARCHE_NO_PROGRESS"] = "1"
    config = config_lib.load_config(None, ["training.allow_random_weights=true", "candidates.*.weights=none",
                                           "baseline.weights=none"])
    work = Path(args.work or tempfile.mkdtemp(prefix="tuning-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    examples_dir = work / "ingest" / "examples"
    if not (examples_dir / "Split-test").is_dir():
        examples, _ = component.run_executor(args.data, str(work / "ingest"))
        examples_dir = Path(examples)
    files = {s: [str(examples_dir / f"Split-{s}" / "*.gz")] for s in ("train", "eval", "test")}
    results = {"machine": f"{os.cpu_count()} cores", "trials": args.trials, "algorithm": args.algorithm,
               "seed": args.seed, "candidates": {}}
    features_dir = work / "features_b7"
    names = args.candidates.split(",")
    specs = {n: trainer_lib.TrainSpec.from_dicts(pipeline_lib.train_spec(config, config.candidate(n), n), {})
             for n in names}
    picture_spec = next((s for s in specs.values() if s.reads_images), None)
    if picture_spec and not (features_dir / "test.npy").exists():
        t = time.perf_counter()
        pictures = {s: features_lib.read_pictures(files[s]) for s in ("train", "eval", "test")}
        info = features_lib.compute(picture_spec.feature_spec(), pictures, str(features_dir))
        results["feature_seconds"] = round(time.perf_counter() - t, 1)
        results["feature_rows"] = info.rows
    for name, spec in specs.items():
        data = trainer_lib.read_training_data(spec, files["train"], files["eval"])
        if spec.reads_images:
            trainer_lib.load_features(spec, data, str(features_dir))
        t = time.perf_counter()
        found = search.tune(spec, data, search.TuningSettings(args.trials, args.algorithm, args.seed))
        tuning_seconds = time.perf_counter() - t
        test = trainer_lib.read_test_data(spec, files["test"], str(features_dir) if spec.reads_images else None,
                                      data.labels)
        tuned_spec = space_lib.apply(spec, found.best_values)
        default_fit = trainer_lib.fit_classifiers(spec, data, None, quiet=True)
        tuned_fit = trainer_lib.fit_classifiers(tuned_spec, data, None, quiet=True)
        comparison = space_lib.compare(spec, tuned_spec, found.best_values, tuned_fit, default_fit, test)
        results["candidates"][name] = {
            "tuning_seconds": round(tuning_seconds, 1),
            "seconds_per_trial": round(tuning_seconds / max(1, len(found.trials) + 1), 2),
            "trials": len(found.trials), "failed": sum(t.status == "FAILED" for t in found.trials),
            "best_trial": found.best_trial, "changed": comparison["changed"],
            "values": {k: v for k, v in comparison["values"].items()},
            "default": comparison["default"], "tuned": comparison["tuned"],
            "test_examples": comparison["test_examples"],
        }
        print(json.dumps({name: results["candidates"][name]}, indent=1), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
