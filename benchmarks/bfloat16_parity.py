"""bfloat16 parity: the models of two pipeline runs (float32 and bfloat16) on the same test split.

    .venv/bin/python benchmarks/pipeline_benchmark.py --output RUN_F32
    .venv/bin/python benchmarks/pipeline_benchmark.py --output RUN_BF16 \\
        --set training.compute_dtype=auto --set serving.compute_dtype=auto
    .venv/bin/python benchmarks/bfloat16_parity.py RUN_F32 RUN_BF16

For each candidate and the baseline: the compute dtypes each run recorded (features / served), the
test accuracy of each run's exported model (its ``serving_default``, pictures and text as a client
sends them), the largest per-picture probability difference between the two exported models, how
often their top category agrees, and each model's throughput on the test pictures. Target: test
accuracy within 0.01 of float32.

Both runs use the same catalogue, split and seeds, so the test split is the same products.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

NODES = {"b7_image": "Trainer_b7_image", "b7_text": "Trainer_b7_text", "baseline": "BaselineTrainer"}


def _model_dir(run: str, node: str) -> str:
    found = sorted(glob.glob(os.path.join(run, "pipeline", node, "model", "*", "Format-Serving")),
                   key=lambda p: int(Path(p).parent.name))
    if not found:
        raise SystemExit(f"no model of {node} in {run}")
    return found[-1]


def _answers(model_dir: str, test, text_columns):
    import numpy as np
    import tensorflow as tf

    from placedemarche.serving import model_contract

    signature = tf.saved_model.load(model_dir).signatures[model_contract.SERVING_DEFAULT]
    texts = test.text(text_columns) if text_columns else None
    out = []
    start = time.perf_counter()
    for i in range(0, len(test.ids), 16):
        inputs = {"images": tf.constant(test.images[i:i + 16])}
        if texts is not None:
            inputs["text"] = tf.constant(texts[i:i + 16])
        out.append(signature(**inputs)["probabilities"].numpy())
    seconds = time.perf_counter() - start
    return np.concatenate(out), model_contract.read_labels(model_dir), len(test.ids) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("float32_run")
    parser.add_argument("bfloat16_run")
    args = parser.parse_args()
    import numpy as np

    from placedemarche.components.trainer import train as train_lib
    from placedemarche.serving import model_contract

    examples = sorted(glob.glob(os.path.join(args.float32_run, "pipeline", "CatalogueExampleGen", "examples", "*")))[-1]
    results = {}
    for name, node in NODES.items():
        dirs = [_model_dir(r, node) for r in (args.float32_run, args.bfloat16_run)]
        metadata = [model_contract.read_metadata(d) for d in dirs]
        columns = tuple(metadata[0].get("text_columns") or ())
        test = train_lib.read_examples([os.path.join(examples, "Split-test", "*.gz")], columns)
        (p32, labels, rate32), (p16, labels16, rate16) = (_answers(d, test, columns) for d in dirs)
        assert labels == labels16, "the two runs' models have other classes"
        truth = np.array(test.labels)
        acc32 = float(np.mean(np.array(labels)[p32.argmax(axis=1)] == truth))
        acc16 = float(np.mean(np.array(labels)[p16.argmax(axis=1)] == truth))
        results[name] = {
            "compute_dtype": [m.get("compute_dtype") for m in metadata],
            "test_accuracy_float32": round(acc32, 4), "test_accuracy_bfloat16": round(acc16, 4),
            "difference": round(acc16 - acc32, 4), "within_0.01": abs(acc16 - acc32) <= 0.01,
            "max_probability_difference": round(float(np.abs(p32 - p16).max()), 4),
            "mean_probability_difference": round(float(np.abs(p32 - p16).mean()), 5),
            "top1_agreement": round(float(np.mean(p32.argmax(axis=1) == p16.argmax(axis=1))), 4),
            "pictures_per_second_float32": round(rate32, 2), "pictures_per_second_bfloat16": round(rate16, 2),
            "test_examples": len(test.ids),
        }
        print(json.dumps({name: results[name]}), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
