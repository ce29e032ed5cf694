"""Executor of ChampionResolver: records which version is served (``champion`` library) in a Model
artifact. The version is read in place (a pushed version is never rewritten), not copied."""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from placedemarche.components.champion import champion as champion_lib
from placedemarche.components.champion import constants as c
from placedemarche.serving import model_contract

logger = logging.getLogger(__name__)


def _read_json(path: str) -> Dict[str, Any]:
    import tensorflow as tf

    with tf.io.gfile.GFile(path) as f:
        return json.loads(f.read())


def read(artifact) -> Dict[str, Any]:
    """The champion an artifact of this component describes (``champion.json``: version, path, how,
    reason, served and, when served, the push's completion marker)."""
    return _read_json(os.path.join(artifact.uri, c.CHAMPION_FILE))


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
           exec_properties: Dict[str, Any]) -> None:
        import tensorflow as tf

        out = artifact_utils.get_single_instance(output_dict[c.CHAMPION_KEY])
        found = champion_lib.resolve(exec_properties[c.SERVING_ROOT], exec_properties[c.MODEL_NAME],
                                     int(exec_properties.get(c.STABLE_VERSION) or 0) or None)
        record = found.to_dict()
        if found.served:
            try:  # informative only: resolve() has checked the version is complete
                record["pushed"] = _read_json(os.path.join(found.path, model_contract.ASSETS_EXTRA,
                                                           model_contract.COMPLETE_MARKER))
            except (OSError, ValueError) as e:
                record["pushed"] = {"error": str(e)}
        tf.io.gfile.makedirs(out.uri)
        with tf.io.gfile.GFile(os.path.join(out.uri, c.CHAMPION_FILE), "w") as f:
            f.write(json.dumps(record, indent=2))
        out.set_int_custom_property(c.SERVED, int(found.served))
        out.set_int_custom_property(c.VERSION, found.version)
        out.set_string_custom_property(c.HOW, found.how)
        out.set_string_custom_property(c.PATH, found.path)
        out.set_string_custom_property(c.REASON, found.reason)
        logger.info("champion: %s", found.reason)
