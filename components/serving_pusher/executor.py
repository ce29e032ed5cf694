"""Executor of ServingPusher: pushes only a blessed model; records what it did."""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.model_gate import predict
from components.serving_pusher import push as push_lib

logger = logging.getLogger(__name__)

MODEL_KEY = "model"
BLESSING_KEY = "blessing"
PUSHED_KEY = "pushed_model"


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
           exec_properties: Dict[str, Any]) -> None:
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        blessing = artifact_utils.get_single_instance(input_dict[BLESSING_KEY])
        pushed = artifact_utils.get_single_instance(output_dict[PUSHED_KEY])
        if not blessing.get_int_custom_property("blessed"):
            pushed.set_int_custom_property("pushed", 0)
            logger.info("model %s is not blessed: nothing pushed", model.uri)
            return
        destination = push_lib.push(
            predict.serving_dir(model.uri), exec_properties["serving_root"], exec_properties["model_name"]
        )
        version = int(os.path.basename(destination))
        pushed.set_int_custom_property("pushed", 1)
        pushed.set_string_custom_property("pushed_destination", destination)
        pushed.set_int_custom_property("pushed_version", version)
        pushed.set_string_custom_property("pushed_model", model.uri)
        pushed.set_int_custom_property("pushed_model_id", model.id)
        with open(os.path.join(pushed.uri, "PUSHED"), "w", encoding="utf-8") as f:
            f.write(destination + "\n")
        logger.info("pushed %s as version %d: %s", model.uri, version, destination)
