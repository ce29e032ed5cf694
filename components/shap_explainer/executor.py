"""Executor of ShapExplainer: a few test pictures per category, explained with SHAP."""

from __future__ import annotations

import glob
import logging
import os
import time
from collections import defaultdict
from typing import Any, Dict, List, Tuple

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from placedemarche.components.model_gate import predict as predict_lib
from placedemarche.components.shap_explainer import explain, report

logger = logging.getLogger(__name__)

MODEL_KEY = "model"
EXAMPLES_KEY = "examples"
EXPLANATION_KEY = "explanation"


def pick_examples(file_patterns: List[str], per_class: int) -> List[Tuple[str, str, bytes]]:
    """``(uniq_id, label, image_bytes)`` of the first ``per_class`` examples of each label, by uniq_id."""
    import tensorflow as tf

    files = sorted(f for p in file_patterns for f in glob.glob(p))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {file_patterns}")
    spec = {k: tf.io.FixedLenFeature([], tf.string) for k in ("uniq_id", "label", "image_bytes")}
    by_label: Dict[str, List[Tuple[str, str, bytes]]] = defaultdict(list)
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        parsed = tf.io.parse_single_example(record, spec)
        uid, label = parsed["uniq_id"].numpy().decode(), parsed["label"].numpy().decode()
        by_label[label].append((uid, label, parsed["image_bytes"].numpy()))
    return [x for label in sorted(by_label) for x in sorted(by_label[label])[:per_class]]


def explain_items(model_dir: str, pictures: List[Tuple[str, str, bytes, str]], settings: Dict[str, Any],
                  progress=None) -> Tuple[List[report.Item], List[str], explain.Explainer]:
    """Explains ``(id, true label or None, image bytes, source)`` pictures with the model in ``model_dir``."""
    from placedemarche.pipeline.trainer import export as export_lib

    metadata = export_lib.read_metadata(model_dir)
    labels = predict_lib.read_labels(model_dir)
    size = int(metadata["image_size"])
    explainer = explain.Explainer(
        explain.saved_model_predict(model_dir), size, labels, masker=settings["masker"],
        max_evals=settings["max_evals"], batch_size=settings["batch_size"], top_k=settings["top_k"],
    )
    items = []
    for n, (uid, label, image_bytes, source) in enumerate(pictures, 1):
        try:
            pixels = explain.decode(image_bytes, size)
        except ValueError as e:
            raise ValueError(f"{source or uid}: {e}") from e
        result = explainer.explain(pixels)
        items.append(report.Item(uid, result, label, source))
        logger.info("explained %d/%d %s in %.1f s: %s (%.3f)", n, len(pictures), uid, result.seconds,
                    labels[result.classes[0]], result.probabilities[result.classes[0]])
        if progress:
            progress(n, len(pictures), uid, result)
    return items, labels, explainer


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
           exec_properties: Dict[str, Any]) -> None:
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
        out = artifact_utils.get_single_instance(output_dict[EXPLANATION_KEY])
        settings = {k: exec_properties[k] for k in ("masker", "max_evals", "batch_size", "top_k")}
        settings["split"] = exec_properties["split"]
        chosen = pick_examples([os.path.join(examples.uri, f"Split-{settings['split']}", "*.gz")],
                               int(exec_properties["images_per_class"]))
        start = time.perf_counter()
        model_dir = predict_lib.serving_dir(model.uri)
        items, labels, explainer = explain_items(model_dir, [(u, l, b, None) for u, l, b in chosen], settings)
        settings.update(model=model_dir, timings={k: v for k, v in vars(explainer.timings).items()})
        index = report.write(out.uri, items, labels, settings)
        out.set_int_custom_property("images", len(index))
        out.set_string_custom_property("masker", settings["masker"])
        out.set_float_custom_property("seconds", time.perf_counter() - start)
        logger.info("SHAP: %d pictures explained in %.1f s -> %s", len(index), time.perf_counter() - start,
                    os.path.join(out.uri, report.HTML_FILE))
