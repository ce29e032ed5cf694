"""Loads a SavedModel the way TF Serving does and replays its warm-up requests; run in its own process.

    python -m components.infra_validator.probe MODEL_DIR --budget-ms 2000 --out result.json

TF Serving loads the SavedModel by its signatures and feeds each ``PredictRequest``'s TensorProtos
to the named signature; so does this probe, in a fresh interpreter that shares nothing with the
Trainer (no Python objects, no custom code but the project's installed packages, which a SavedModel
does not need). Every request of ``assets.extra/tf_serving_warmup_requests`` is sent twice: the
first pass warms up (tracing, allocations, as TF Serving's warm-up does), the second is timed.

Checks: each signature answers every request; ``probabilities`` is ``[batch, classes]`` with the
classes of ``assets.extra/labels.txt``, finite, each row sums to 1 (1e-3); ``label`` is a known
label and agrees with the arg-max; every timed request is within the latency budget.
The result (checks, latencies, load time) is written as JSON; exit status 0 means it passed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List

import numpy as np


def probe(model_dir: str, budget_ms: float) -> Dict[str, Any]:
    import tensorflow as tf

    from placedemarche.components.infra_validator import warmup

    result: Dict[str, Any] = {"model": model_dir, "latency_budget_ms": budget_ms, "problems": []}
    problems: List[str] = result["problems"]
    warmup_path = os.path.join(model_dir, "assets.extra", warmup.WARMUP_FILE)
    labels_path = os.path.join(model_dir, "assets.extra", "labels.txt")
    for path in (warmup_path, labels_path):
        if not os.path.exists(path):
            problems.append(f"missing {path}")
    if problems:
        return result
    with open(labels_path, encoding="utf-8") as f:
        labels = [line.rstrip("\n") for line in f if line.strip()]
    start = time.perf_counter()
    try:
        loaded = tf.saved_model.load(model_dir)
    except Exception as e:  # whatever the loader says is the reason
        problems.append(f"the SavedModel does not load: {type(e).__name__}: {e}")
        return result
    result["load_seconds"] = round(time.perf_counter() - start, 3)
    from placedemarche.serving import model_contract

    defaults = model_contract.signature_defaults(model_dir)  # as TF Serving fills an input a request leaves out
    requests = list(warmup.read(warmup_path))
    result["requests"] = []
    for attempt in ("warm-up", "timed"):
        for i, log in enumerate(requests):
            request = log.predict_log.request
            name = request.model_spec.signature_name or warmup.SERVING_DEFAULT
            entry = {"request": i, "signature": name}
            if name not in loaded.signatures:
                problems.append(f"request {i}: the model has no signature '{name}' "
                                f"(it has {sorted(loaded.signatures)})")
                continue
            inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
            for key, value in defaults.get(name, {}).items():
                inputs.setdefault(key, tf.constant(value))
            batch = int(next(iter(tf.make_ndarray(v) for v in request.inputs.values())).shape[0])
            t0 = time.perf_counter()
            try:
                outputs = loaded.signatures[name](**inputs)
            except Exception as e:
                problems.append(f"request {i} ({name}, batch {batch}): {type(e).__name__}: {e}")
                continue
            ms = (time.perf_counter() - t0) * 1000
            if attempt == "timed":
                entry.update(batch=batch, ms=round(ms, 2))
                result["requests"].append(entry)
                if ms > budget_ms:
                    problems.append(f"request {i} ({name}, batch {batch}) took {ms:.0f} ms, over the "
                                    f"{budget_ms:g} ms budget (evaluation.latency_budget_ms)")
            else:
                problems.extend(f"request {i} ({name}): {p}" for p in _check_outputs(outputs, batch, labels))
    timed = [r["ms"] for r in result["requests"]]
    if timed:
        result["latency_ms"] = {"p50": float(np.percentile(timed, 50)), "p95": float(np.percentile(timed, 95)),
                                "max": max(timed)}
    return result


def _check_outputs(outputs, batch: int, labels: List[str]) -> List[str]:
    problems = []
    if "probabilities" not in outputs:
        return [f"no 'probabilities' output (outputs: {sorted(outputs)})"]
    probabilities = outputs["probabilities"].numpy()
    if probabilities.shape != (batch, len(labels)):
        return [f"probabilities have shape {list(probabilities.shape)}, expected [{batch}, {len(labels)}]"]
    if not np.all(np.isfinite(probabilities)):
        return ["probabilities are not all finite"]
    sums = probabilities.sum(axis=1)
    if np.any(np.abs(sums - 1.0) > 1e-3):
        problems.append(f"probabilities do not sum to 1 (row sums {np.round(sums, 4).tolist()})")
    if "label" in outputs:
        predicted = [v.decode("utf-8") for v in outputs["label"].numpy()]
        expected = [labels[i] for i in probabilities.argmax(axis=1)]
        if predicted != expected:
            problems.append(f"'label' {predicted} disagrees with the arg-max of probabilities {expected}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--budget-ms", type=float, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    result = probe(args.model_dir, args.budget_ms)
    result["passed"] = not result["problems"]
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return 0 if result["passed"] else 3


if __name__ == "__main__":
    sys.exit(main())
