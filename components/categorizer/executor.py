"""Executor of BatchCategorizer: thin; the work is ``categorize.py``'s.

It reads the unlabelled split whole (their prepared pictures included: about 50 KB a listing), which
suits the listings a catalogue has without a category; a large backlog should go through
``placedemarche categorize`` (flat memory) or its Beam job.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List

import tensorflow as tf
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from placedemarche.components.categorizer import categorize as lib
from placedemarche.components.categorizer.constants import (  # noqa: F401 (re-exported)
    CATEGORIZED_KEY, PUSHED_KEY, SKIPPED_FILE, SUMMARY_FILE, UNLABELLED_KEY)

logger = logging.getLogger(__name__)
TEXT_FIELDS = ("product_name", "description", "brand")


def read_unlabelled(examples_uri: str) -> List[lib.Listing]:
    """The listings of an ``unlabelled`` Examples artifact, their prepared pictures included."""
    files = sorted(tf.io.gfile.glob(os.path.join(examples_uri, "Split-unlabelled", "*.gz")))
    listings = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        feature = tf.train.Example.FromString(record.numpy()).features.feature

        def text(name: str) -> str:
            values = feature[name].bytes_list.value if name in feature else []
            return values[0].decode("utf-8", "replace") if values else ""

        listings.append(lib.Listing(
            row=int(feature["row"].int64_list.value[0]) if "row" in feature else 0, uniq_id=text("uniq_id"),
            image=text("image_file"), seller_category="", fields={n: text(n) for n in TEXT_FIELDS},
            picture=feature["image_bytes"].bytes_list.value[0]))
    return sorted(listings, key=lambda x: x.row)


class _NoListings:
    """The pushed model's identity, not loaded: there is nothing to ask it."""

    def __init__(self, path: str, name: str, version):
        self.path, self.name, self.version, self.labels, self.text_columns = path, name, version, [], ()


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
           exec_properties: Dict[str, Any]) -> None:
        out = artifact_utils.get_single_instance(output_dict[CATEGORIZED_KEY])
        pushed = artifact_utils.get_single_instance(input_dict[PUSHED_KEY])
        unlabelled = artifact_utils.get_single_instance(input_dict[UNLABELLED_KEY])
        tf.io.gfile.makedirs(out.uri)
        if not (pushed.has_custom_property("pushed") and pushed.get_int_custom_property("pushed") == 1):
            reason = pushed.get_string_custom_property("reason") if pushed.has_custom_property("reason") else ""
            why = f"nothing was pushed in this run ({reason or 'no reason recorded'}): no listing categorised"
            logger.warning("BatchCategorizer skipped: %s", why)
            with tf.io.gfile.GFile(os.path.join(out.uri, SKIPPED_FILE), "w") as f:
                f.write(why + "\n")
            with tf.io.gfile.GFile(os.path.join(out.uri, SUMMARY_FILE), "w") as f:
                f.write(json.dumps({"skipped": why}, indent=2))
            out.set_int_custom_property("categorized", 0)
            out.set_string_custom_property("skipped", why)
            return
        listings = read_unlabelled(unlabelled.uri)
        destination = pushed.get_string_custom_property("pushed_destination")
        model = lib.LocalModel.load(destination) if listings else _NoListings(*lib.LocalModel.resolve(destination))
        p = exec_properties
        options = lib.Options(images_dir="", batch_size=int(p["batch_size"]), flag_threshold=float(p["flag_threshold"]),
                              review_threshold=float(p["review_threshold"]))
        result = lib.categorize(listings, model, options)
        summary = lib.write_outputs(out.uri, result, len(listings), listings)
        logger.info("categorised %d listings without a category with %s version %s (%d rejected, %d to review), "
                    "%.1f listings/s", summary["predicted"], model.name, model.version, summary["rejected"],
                    summary["review_queue"], summary["listings_per_s"] or 0.0)
        out.set_int_custom_property("categorized", summary["predicted"])
        out.set_int_custom_property("review_queue", summary["review_queue"])
        out.set_int_custom_property("model_version", model.version or 0)
