"""Executor of ServingPusher: pushes only a blessed, infra-validated model; records what it did.

What is pushed is the infra validator's copy (the model plus its TF Serving warm-up requests) when
the InfraBlessing holds one, as TFX's Pusher does; otherwise the Trainer's model.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from placedemarche.components.model_gate import predict
from placedemarche.components.serving_pusher import push as push_lib

logger = logging.getLogger(__name__)

MODEL_KEY = "model"
BLESSING_KEY = "blessing"
INFRA_BLESSING_KEY = "infra_blessing"
PUSHED_KEY = "pushed_model"
NOT_PUSHED_FILE = "NOT_PUSHED"


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
           exec_properties: Dict[str, Any]) -> None:
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        blessing = artifact_utils.get_single_instance(input_dict[BLESSING_KEY])
        pushed = artifact_utils.get_single_instance(output_dict[PUSHED_KEY])
        infra = input_dict.get(INFRA_BLESSING_KEY)
        infra = artifact_utils.get_single_instance(infra) if infra else None
        reason = None
        if not blessing.get_int_custom_property("blessed"):
            reason = "the model gate did not bless the candidate"
        elif infra is not None and not infra.get_int_custom_property("blessed"):
            reason = "the candidate failed infra validation"
        if reason:
            pushed.set_int_custom_property("pushed", 0)
            pushed.set_string_custom_property("reason", reason)
            with open(os.path.join(pushed.uri, NOT_PUSHED_FILE), "w", encoding="utf-8") as f:
                f.write(reason + "\n")
            logger.info("nothing pushed: %s (%s)", reason, model.uri)
            return
        source = predict.serving_dir(model.uri)
        if infra is not None and infra.get_int_custom_property("has_model"):
            source = path_utils.stamped_model_path(infra.uri)
        destination, new = push_lib.push(source, exec_properties["serving_root"], exec_properties["model_name"])
        version = int(os.path.basename(destination))
        pushed.set_int_custom_property("pushed", 1)
        pushed.set_string_custom_property("pushed_destination", destination)
        pushed.set_int_custom_property("pushed_version", version)
        pushed.set_string_custom_property("pushed_model", model.uri)
        pushed.set_string_custom_property("pushed_from", source)
        pushed.set_int_custom_property("pushed_model_id", model.id)
        with open(os.path.join(pushed.uri, "PUSHED"), "w", encoding="utf-8") as f:
            f.write(destination + "\n")
        pushed.set_int_custom_property("new_version", int(new))
        logger.info("%s %s as version %d: %s", "pushed" if new else "already serving", model.uri, version, destination)
