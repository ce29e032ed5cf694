"""Executor of ServingPusher: chooses the candidate to serve and pushes it; records what it did and why.

Every candidate went through the gate and infra validation; only one that is both blessed and
infra-validated can be pushed, and among those the one with the best test accuracy is (``select``).
What is pushed is the infra validator's copy (the model plus its TF Serving warm-up requests) when
the InfraBlessing holds one, as TFX's Pusher does; otherwise the Trainer's model.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Optional

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from placedemarche.components import candidate_inputs
from placedemarche.components.serving_pusher import push as push_lib
from placedemarche.components.serving_pusher import select
from placedemarche.components.serving_pusher.constants import (  # noqa: F401 (re-exported)
    BLESSING_KEY,
    INFRA_BLESSING_KEY,
    MODEL_KEY,
    NOT_PUSHED_FILE,
    PUSHED_FILE,
    PUSHED_KEY,
    SELECTION_FILE,
)
from placedemarche.serving import model_contract

logger = logging.getLogger(__name__)



def _folder_size(path: str) -> int:
    import tensorflow as tf

    return sum(tf.io.gfile.stat(os.path.join(d, f)).length for d, _, files in tf.io.gfile.walk(path) for f in files)


def candidate_results(models: Dict[str, Any], blessings: Dict[str, Any],
                      infra: Optional[Dict[str, Any]]) -> List[select.CandidateResult]:
    """One ``CandidateResult`` per candidate, from its model gate's and infra validator's blessings."""
    results = []
    for name, model in sorted(models.items()):
        blessing = blessings.get(name)
        if blessing is None:
            raise ValueError(f"no model gate blessing for candidate '{name}' ({model.uri})")
        infra_blessed, skipped, latency = None, False, None
        if infra is not None:
            if name not in infra:
                raise ValueError(f"no infra validation result for candidate '{name}' ({model.uri})")
            infra_blessed = bool(infra[name].get_int_custom_property("blessed"))
            skipped = bool(infra[name].get_int_custom_property("skipped"))
            if infra[name].has_custom_property("latency_p50_ms"):
                latency = infra[name].get_float_custom_property("latency_p50_ms")
        reasons = json.loads(blessing.get_string_custom_property("reasons") or "[]") \
            if blessing.has_custom_property("reasons") else []
        results.append(select.CandidateResult(
            name=name, model_uri=model.uri, model_id=model.id,
            accuracy=blessing.get_float_custom_property("accuracy") if blessing.has_custom_property("accuracy") else None,
            blessed=bool(blessing.get_int_custom_property("blessed")), infra_blessed=infra_blessed,
            infra_skipped=skipped, latency_ms=latency,
            size_bytes=_folder_size(model_contract.serving_dir(model.uri)),
            gate_reasons=tuple(reasons),
        ))
    return results


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
           exec_properties: Dict[str, Any]) -> None:
        models = candidate_inputs.gather(input_dict, MODEL_KEY)
        infra = candidate_inputs.gather(input_dict, INFRA_BLESSING_KEY) or None
        pushed = artifact_utils.get_single_instance(output_dict[PUSHED_KEY])
        selection = select.choose(candidate_results(models, candidate_inputs.gather(input_dict, BLESSING_KEY), infra))
        pushed.set_string_custom_property("best_candidate", selection.best.name if selection.best else "")
        pushed.set_string_custom_property("selection", selection.reason)
        record: Dict[str, Any] = selection.to_dict()
        chosen = selection.chosen
        if chosen is None:
            pushed.set_int_custom_property("pushed", 0)
            pushed.set_string_custom_property("reason", selection.reason)
            with open(os.path.join(pushed.uri, NOT_PUSHED_FILE), "w", encoding="utf-8") as f:
                f.write(selection.reason + "\n")
            _write(pushed.uri, record)
            logger.info("nothing pushed: %s", selection.reason)
            return
        model = models[chosen.name]
        source = model_contract.serving_dir(model.uri)
        infra_blessing = infra.get(chosen.name) if infra else None
        if infra_blessing is not None and infra_blessing.get_int_custom_property("has_model"):
            source = path_utils.stamped_model_path(infra_blessing.uri)
        destination, new = push_lib.push(source, exec_properties["serving_root"], exec_properties["model_name"])
        version = int(os.path.basename(destination))
        pushed.set_int_custom_property("pushed", 1)
        pushed.set_string_custom_property("pushed_destination", destination)
        pushed.set_int_custom_property("pushed_version", version)
        pushed.set_string_custom_property("pushed_model", model.uri)
        pushed.set_string_custom_property("pushed_from", source)
        pushed.set_int_custom_property("pushed_model_id", model.id)
        pushed.set_string_custom_property("pushed_candidate", chosen.name)
        pushed.set_int_custom_property("new_version", int(new))
        with open(os.path.join(pushed.uri, PUSHED_FILE), "w", encoding="utf-8") as f:
            f.write(destination + "\n")
        record.update(pushed_version=version, destination=destination, new_version=new)
        _write(pushed.uri, record)
        logger.info("%s candidate %s (%s) as version %d: %s", "pushed" if new else "already serving", chosen.name,
                    model.uri, version, destination)


def _write(uri: str, record: Dict[str, Any]) -> None:
    with open(os.path.join(uri, SELECTION_FILE), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
