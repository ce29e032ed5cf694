"""Executor of BackboneFeatures: read the train and eval pictures (or the splits asked for), compute the backbone's features."""

from __future__ import annotations

import os
from typing import Any, Dict, List

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from placedemarche.components.backbone_features import constants as c
from placedemarche.components.trainer import features as features_lib
from placedemarche.components.trainer import precision


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
           exec_properties: Dict[str, Any]) -> None:
        examples = artifact_utils.get_single_instance(input_dict[c.EXAMPLES_KEY])
        out = artifact_utils.get_single_instance(output_dict[c.FEATURES_KEY])
        dtype, why = precision.resolve(exec_properties.get(c.COMPUTE_DTYPE) or precision.FLOAT32,
                                       "training.compute_dtype")
        spec = features_lib.FeatureSpec(
            backbone=exec_properties[c.BACKBONE], weights=exec_properties[c.WEIGHTS],
            image_size=int(exec_properties[c.IMAGE_SIZE]), views=int(exec_properties[c.VIEWS]),
            seed=int(exec_properties[c.SEED]), allow_random_weights=bool(exec_properties[c.ALLOW_RANDOM_WEIGHTS]),
            batch_size=int(exec_properties[c.BATCH_SIZE]), compute_dtype=dtype,
        )
        splits = exec_properties[c.SPLITS_PARAM].split(",") if exec_properties.get(c.SPLITS_PARAM) else c.SPLITS
        pictures = {split: features_lib.read_pictures([os.path.join(examples.uri, f"Split-{split}", "*.gz")])
                    for split in splits}
        if c.TEST_SPLIT in pictures and not pictures[c.TEST_SPLIT][0]:
            del pictures[c.TEST_SPLIT]  # nothing to compare on; the Trainer's comparison says so
        info = features_lib.compute(spec, pictures, out.uri, dtype_reason=why)
        out.set_string_custom_property(c.BACKBONE, info.backbone)
        out.set_string_custom_property("weights", info.weights)
        out.set_string_custom_property("weights_fingerprint", info.weights_fingerprint)
        out.set_int_custom_property(c.VIEWS, info.views)
        out.set_int_custom_property("dim", info.dim)
        out.set_string_custom_property(c.COMPUTE_DTYPE, info.compute_dtype)
        out.set_float_custom_property("pictures_per_second", info.timings["pictures_per_second"])
