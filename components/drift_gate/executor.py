"""Executor of DriftGate: describes the newest and the previous batch, lets TFDV compare them, writes
the report, and stops the run when something moved past its threshold (unless ``accept_drift``)."""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from placedemarche.components.catalogue_example_gen import batches as batches_lib
from placedemarche.components.catalogue_example_gen import catalogue
from placedemarche.components.catalogue_example_gen.executor import read_text
from placedemarche.components.data_gate import distributions
from placedemarche.components.drift_gate import constants as c
from placedemarche.components.drift_gate import drift as drift_lib

logger = logging.getLogger(__name__)


def _write(path: str, text: str) -> None:
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
           exec_properties: Dict[str, Any]) -> None:
        out = artifact_utils.get_single_instance(output_dict[c.DRIFT_KEY])
        p = exec_properties
        batches = batches_lib.list_batches(p["data_dir"], p.get("csv_file") or "", p["images_dir"])
        newest, previous = batches_lib.newest_and_previous(batches)
        accept = bool(p.get(c.ACCEPT))
        if previous is None:
            report = drift_lib.not_compared(batches)
            logger.info("drift gate: %s", report["reason"])
        else:
            columns = catalogue.Columns(**json.loads(p["columns"]))
            rows = {b.name: drift_lib.batch_rows(b, read_text(b.csv), columns, int(p["label_depth"]),
                                                 int(p.get("max_image_bytes") or 50 * 1024 * 1024))
                    for b in (previous, newest)}
            report = drift_lib.compare(newest, rows[newest.name], previous, rows[previous.name],
                                       distributions.Thresholds(float(p[c.LINF]), float(p[c.JSD])))
            previous_stats, newest_stats = report.pop("_statistics")
            from google.protobuf import text_format

            _write(os.path.join(out.uri, c.PREVIOUS_STATISTICS_FILE), text_format.MessageToString(previous_stats))
            _write(os.path.join(out.uri, c.NEWEST_STATISTICS_FILE), text_format.MessageToString(newest_stats))
            for m in report["measurements"]:
                logger.info("drift %s vs %s: %-20s %s %.4f (threshold %s)%s", newest.name, previous.name,
                            m["feature"], m["measure"], m["value"], m["threshold"], "  MOVED" if m["moved"] else "")
        drifted = bool(report["drifted"])
        report["accepted"] = drifted and accept
        report["accept_drift"] = accept
        _write(os.path.join(out.uri, c.REPORT_FILE), json.dumps(report, indent=2))
        out.set_int_custom_property(c.COMPARED, int(report["compared"]))
        out.set_int_custom_property(c.DRIFTED, int(drifted))
        out.set_int_custom_property(c.ACCEPTED, int(report["accepted"]))
        out.set_string_custom_property(c.NEWEST, newest.name)
        out.set_string_custom_property(c.PREVIOUS, previous.name if previous else "")
        if drifted:
            text = drift_lib.message(report, accept)
            if not accept:
                raise drift_lib.DriftDetected(text)
            logger.warning("%s", text)
