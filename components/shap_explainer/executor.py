"""Executor of ShapExplainer: a few test pictures per category, explained with SHAP."""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from placedemarche.components import candidate_inputs
from placedemarche.components.shap_explainer import explain, report
from placedemarche.components.shap_explainer.constants import EXAMPLES_KEY, EXPLANATION_KEY, MODEL_KEY, PUSHED_KEY  # noqa: F401 (re-exported)
from placedemarche.serving import model_contract

logger = logging.getLogger(__name__)



def choose_model(models: Dict[str, Any], pushed: List[Any]) -> Tuple[str, Any]:
    """``(name, model)``: the candidate the Pusher pushed, else the one it ranked best, else the only one."""
    if pushed:
        record = pushed[0]
        for key in ("pushed_candidate", "best_candidate"):
            name = record.get_string_custom_property(key) if record.has_custom_property(key) else ""
            if name in models:
                return name, models[name]
    if len(models) == 1:
        return next(iter(models.items()))
    raise ValueError(f"{len(models)} candidate models and no Pusher record saying which one to explain")


@dataclass
class Picked:
    """One listing to explain."""

    id: str
    label: Optional[str]
    image: bytes
    text: str = ""  # the text columns the model reads, joined ("" for an image-only model)
    source: Optional[str] = None  # the file an ad-hoc picture came from


def pick_examples(file_patterns: List[str], per_class: int, text_columns: Sequence[str] = ()) -> List[Picked]:
    """The first ``per_class`` examples of each label, by uniq_id, with the text the model reads."""
    from placedemarche.components.trainer import train as train_lib

    examples = train_lib.read_examples(file_patterns, text_columns)
    texts = examples.text(text_columns) if text_columns else [""] * len(examples.ids)
    by_label: Dict[str, List[Picked]] = defaultdict(list)
    for uid, label, image, text in zip(examples.ids, examples.labels, examples.images, texts):
        by_label[label].append(Picked(uid, label, image, text))
    return [x for label in sorted(by_label) for x in sorted(by_label[label], key=lambda p: p.id)[:per_class]]


def explain_items(model_dir: str, pictures: List[Picked], settings: Dict[str, Any],
                  progress=None) -> Tuple[List[report.Item], List[str], explain.Explainer]:
    """Explains pictures (and, for a model that reads text, their words) with the model in ``model_dir``."""
    metadata = model_contract.read_metadata(model_dir)
    labels = model_contract.read_labels(model_dir)
    if not model_contract.reads_images(metadata):
        raise ValueError(f"the model in {model_dir} reads no pictures (text only): explain its words with a "
                         "model that reads pictures and text, or retrain it with a backbone")
    size = int(metadata["image_size"])
    predictor = explain.saved_model_predict(model_dir)
    explainer = explain.Explainer(
        predictor, size, labels, masker=settings["masker"],
        max_evals=settings["max_evals"], batch_size=settings["batch_size"], top_k=settings["top_k"],
    )
    words = (explain.TextExplainer(predictor.fusion, labels, settings["max_evals"], settings["batch_size"])
             if predictor.reads_text else None)
    items = []
    for n, p in enumerate(pictures, 1):
        try:
            pixels = explain.decode(p.image, size)
        except ValueError as e:
            raise ValueError(f"{p.source or p.id}: {e}") from e
        predictor.use_text(p.text)
        result = explainer.explain(pixels)
        text_result = None
        if words is not None:
            image_probabilities = predictor.image_branch(result.pixels[None].astype(np.float32))[0]
            text_result = words.explain(image_probabilities, p.text, result.classes)
        items.append(report.Item(p.id, result, p.label, p.source, text_result))
        logger.info("explained %d/%d %s in %.1f s%s: %s (%.3f)", n, len(pictures), p.id, result.seconds,
                    f" + {text_result.seconds:.1f} s for its words" if text_result else "",
                    labels[result.classes[0]], result.probabilities[result.classes[0]])
        if progress:
            progress(n, len(pictures), p.id, result)
    explainer.timings.text = words.seconds if words else 0.0
    return items, labels, explainer


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
           exec_properties: Dict[str, Any]) -> None:
        candidate, model = choose_model(candidate_inputs.gather(input_dict, MODEL_KEY), list(input_dict.get(PUSHED_KEY) or []))
        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
        out = artifact_utils.get_single_instance(output_dict[EXPLANATION_KEY])
        settings = {k: exec_properties[k] for k in ("masker", "max_evals", "batch_size", "top_k")}
        settings["split"] = exec_properties["split"]
        model_dir = model_contract.serving_dir(model.uri)
        text_columns = model_contract.read_metadata(model_dir).get("text_columns") or []
        chosen = pick_examples([os.path.join(examples.uri, f"Split-{settings['split']}", "*.gz")],
                               int(exec_properties["images_per_class"]), text_columns)
        start = time.perf_counter()
        items, labels, explainer = explain_items(model_dir, chosen, settings)
        settings.update(model=model_dir, candidate=candidate, text_columns=text_columns,
                        timings={k: v for k, v in vars(explainer.timings).items()})
        index = report.write(out.uri, items, labels, settings)
        out.set_int_custom_property("images", len(index))
        out.set_string_custom_property("masker", settings["masker"])
        out.set_float_custom_property("seconds", time.perf_counter() - start)
        logger.info("SHAP: %d pictures explained in %.1f s -> %s", len(index), time.perf_counter() - start,
                    os.path.join(out.uri, report.HTML_FILE))
