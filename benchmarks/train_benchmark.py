"""Training benchmark on the real Flipkart sample: shared backbone features, candidate heads, accuracies.

    .venv/bin/python benchmarks/train_benchmark.py [--data ../shared/flipkart] [--skip-vgg19]

Measured in one run, with the pipeline's default recipe (random backbone weights: ImageNet weights
cannot be downloaded here; speed does not depend on them):

- **raw forward** throughput of each frozen backbone on already-decoded 224 x 224 batches;
- **BackboneFeatures**: decode + resize (tf.data) + backbone over the train and eval pictures, as
  the pipeline's features node does it; target >= 85 % of the raw figure;
- **Trainers** on those features: ``b7_image`` (the proof of concept's head) and ``b7_text`` (plus
  the listing's words), each timed; target: both together cost at most 25 % more than ``b7_image``
  alone, features included: ``(F + T_image + T_text) / (F + T_image) <= 1.25``;
- **test accuracy** (the test split, never seen in training) of ``b7_image``, ``b7_text``, and
  ``b7_text`` with the text left out (an image-only request): target within 0.05 of ``b7_image``;
  and of the VGG19 baseline unless ``--skip-vgg19``.
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


def test_accuracy(model_dir: Path, examples: Path, text_columns, blank_text: bool = False) -> float:
    """Accuracy of an exported model on the test split through ``serving_default`` (text left out
    when ``blank_text``)."""
    import numpy as np
    import tensorflow as tf

    from placedemarche.components.trainer import train as train_lib
    from placedemarche.serving import model_contract

    test = train_lib.read_examples([str(examples / "Split-test" / "*.gz")], text_columns)
    signature = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    labels = model_contract.read_labels(str(model_dir))
    right = 0
    texts = test.text(text_columns) if text_columns else None
    for i in range(0, len(test.ids), 32):
        inputs = {"images": tf.constant(test.images[i:i + 32])}
        if text_columns:  # left out, TF Serving would take the signature's default: [""]
            inputs["text"] = tf.constant([""] if blank_text else texts[i:i + 32])
        probabilities = signature(**inputs)["probabilities"].numpy()
        right += int(np.sum(np.array(labels)[probabilities.argmax(axis=1)] == np.array(test.labels[i:i + 32])))
    return right / len(test.ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "flipkart"))
    parser.add_argument("--skip-vgg19", action="store_true", help="leave the baseline out (saves ~5 minutes)")
    args = parser.parse_args()
    if not Path(args.data).is_dir():
        raise SystemExit(f"no catalogue at {args.data}: pass --data (the real sample is ../shared/flipkart)")

    from placedemarche.components.trainer import features as features_lib
    from placedemarche.components.trainer.trainer import TrainSpec, fit_and_export
    from placedemarche.pipeline import pipeline as pipeline_lib
    from placedemarche.pipeline.config import load_config

    config = load_config(None, ["training.allow_random_weights=true", "candidates.*.weights=none",
                                "baseline.weights=none"])
    work = Path(tempfile.mkdtemp(prefix="train-bench-"))
    examples = ingest(args.data, work)
    splits = {s: features_lib.read_pictures([str(examples / f"Split-{s}" / "*.gz")]) for s in ("train", "eval")}
    report = {"work": str(work), "features": {}, "trainers": {}, "test_accuracy": {}}

    models = [(c.name, c) for c in config.enabled_candidates]
    if not args.skip_vgg19:
        models.append(("baseline", config.baseline))
    features_dirs = {}
    for node, (key, users) in pipeline_lib.feature_groups(config).items():
        if not any(u in dict(models) for u in users):
            continue
        spec = TrainSpec.from_dicts(pipeline_lib.train_spec(config, dict(models)[users[0]], users[0]), {})
        raw = raw_forward(spec.backbone, spec.image_size, spec.batch_size)
        start = time.perf_counter()
        info = features_lib.compute(spec.feature_spec(), splits, str(work / node))
        seconds = time.perf_counter() - start
        rate = info.timings["backbone_passes"] / info.timings["feature_seconds"]
        report["features"][node] = {"backbone": spec.backbone, "views": spec.views, "raw_img_s": round(raw, 2),
                                    "features_img_s": round(rate, 2), "ratio": round(rate / raw, 3),
                                    "seconds": round(seconds, 1), "passes": info.timings["backbone_passes"]}
        for user in users:
            features_dirs[user] = (work / node, seconds)
        print(f"{node}: {json.dumps(report['features'][node])}", flush=True)

    for name, model in models:
        spec = TrainSpec.from_dicts(pipeline_lib.train_spec(config, model, name), {})
        start = time.perf_counter()
        metadata = fit_and_export(spec, [str(examples / "Split-train" / "*.gz")], [str(examples / "Split-eval" / "*.gz")],
                                  str(work / name / "model"), str(work / name / "run"),
                                  features_dir=str(features_dirs[name][0]))
        wall = time.perf_counter() - start
        timings = json.loads((work / name / "run" / "history.json").read_text())["timings"]
        report["trainers"][name] = {"seconds": round(wall, 1), "val_accuracy": round(metadata["val_accuracy"], 4),
                                    "fusion": metadata.get("fusion"),
                                    "timings": {k: round(v, 1) for k, v in timings.items() if isinstance(v, float)}}
        report["test_accuracy"][name] = round(test_accuracy(work / name / "model", examples, spec.text_columns), 4)
        if spec.text_columns:
            report["test_accuracy"][f"{name} (text left out)"] = round(
                test_accuracy(work / name / "model", examples, spec.text_columns, blank_text=True), 4)
        print(f"{name}: {json.dumps(report['trainers'][name])}", flush=True)

    f = features_dirs["b7_image"][1]
    t_image, t_text = report["trainers"]["b7_image"]["seconds"], report["trainers"]["b7_text"]["seconds"]
    report["shared_cost_ratio"] = round((f + t_image + t_text) / (f + t_image), 3)
    print(json.dumps(report, indent=2))
    print("\nfeatures vs raw forward: " + ", ".join(f"{n} {v['ratio']:.0%}" for n, v in report["features"].items())
          + " (target >= 85 %)")
    print(f"b7_image + b7_text vs b7_image alone, features included: {report['shared_cost_ratio']:.2f} x "
          f"(target <= 1.25)")
    print("test accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in report["test_accuracy"].items()))


if __name__ == "__main__":
    main()
