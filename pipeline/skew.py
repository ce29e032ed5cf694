"""Served traffic vs training: TFDV statistics of the logged requests against a run's training examples.

``placedemarche skew --requests DIR --output RUN_DIR`` reads the request log (``serving/request_log.py``)
and the train split of the run's latest ingestion, describes both the same way, one row per picture:

- ``picture_format`` and ``picture_width`` / ``picture_height``: of the seller's original (training:
  the ``source_format``, ``width``, ``height`` ingestion recorded; requests: read from the bytes sent);
- ``text_length``: characters of ``product_name`` + ``description`` (or of the request's ``text``);
- ``label``: the training label, against the served model's ``predicted_label``;

computes TFDV statistics of both (``tfdv.generate_statistics_from_dataframe``) and lets TFDV compare
them (``validate_statistics`` with ``serving_statistics``): L-infinity distance on the categorical
features, Jensen-Shannon divergence on the numeric ones, thresholds from ``serving.skew_*``. Every
figure is TFDV's. The report goes to ``RUN_DIR/skew/<time>/`` (``skew.json``, both statistics).
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from placedemarche.components.data_gate import distributions

logger = logging.getLogger(__name__)

CATEGORICAL = ("picture_format", "label")
NUMERIC = ("picture_width", "picture_height", "text_length")
SKEW_DIR = "skew"
REPORT_FILE = "skew.json"


class SkewError(RuntimeError):
    """The inputs cannot be compared (no log, no training examples)."""


@dataclass(frozen=True)
class Thresholds:
    linf: float = 0.2  # L-infinity distance of a categorical feature's distribution
    jsd: float = 0.2  # Jensen-Shannon divergence of a numeric feature's distribution


def _text(features, name: str) -> str:
    f = features.get(name)
    return f.bytes_list.value[0].decode("utf-8", "replace") if f is not None and f.bytes_list.value else ""


def _picture(data: bytes):
    """(format, width, height) from a picture's header, as ingestion records the original (after the
    EXIF orientation, whatever its size); ("UNREADABLE", 0, 0) when it is not a picture."""
    from placedemarche.components.catalogue_example_gen import images

    try:
        kind, width, height = images.header(data)
        return kind.upper(), int(width), int(height)
    except images.ImageRejected:
        return "UNREADABLE", 0, 0


def training_rows(examples_uri: str) -> List[Dict[str, Any]]:
    """The train split's rows (original pictures' format and size, text length, label)."""
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(os.path.join(examples_uri, "Split-train", "*.gz")))
    if not files:
        raise SkewError(f"no train split in {examples_uri}")
    rows = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        f = tf.train.Example.FromString(record.numpy()).features.feature
        rows.append({"picture_format": _text(f, "source_format").upper() or "UNKNOWN",
                     "picture_width": int(f["width"].int64_list.value[0]) if f["width"].int64_list.value else 0,
                     "picture_height": int(f["height"].int64_list.value[0]) if f["height"].int64_list.value else 0,
                     "text_length": len((_text(f, "product_name") + " " + _text(f, "description")).strip()),
                     "label": _text(f, "label")})
    return rows


def request_rows(requests_dir: str) -> List[Dict[str, Any]]:
    """The logged requests' rows (one per picture)."""
    import tensorflow as tf

    from placedemarche.serving import request_log

    files = sorted(tf.io.gfile.glob(os.path.join(requests_dir, f"{request_log.FILE_PREFIX}*{request_log.FILE_SUFFIX}")))
    if not files:
        raise SkewError(f"no request log in {requests_dir} (files {request_log.FILE_PREFIX}*{request_log.FILE_SUFFIX}); "
                        "serve with --set serving.request_log_dir=DIR first")
    rows = []
    for path in files:
        try:
            for record in tf.data.TFRecordDataset(path):
                rows.append(_request_row(tf.train.Example.FromString(record.numpy()).features.feature))
        except tf.errors.DataLossError:  # a server killed mid-write, or a record being written now
            logger.warning("%s ends with a truncated record: the complete ones before it are read", path)
    if not rows:
        raise SkewError(f"the request log in {requests_dir} is empty")
    return rows


def _request_row(f) -> Dict[str, Any]:
    """One logged picture as a row; None where the request did not carry that input."""
    row: Dict[str, Any] = {"picture_format": None, "picture_width": None, "picture_height": None,
                           "text_length": None, "label": _text(f, "predicted_label")}
    if "source_format" in f and "width" in f and "height" in f:  # a serving_examples request: the original's
        row.update(picture_format=_text(f, "source_format").upper() or "UNKNOWN",
                   picture_width=int(f["width"].int64_list.value[0]), picture_height=int(f["height"].int64_list.value[0]))
    elif "image_bytes" in f:  # the picture as the client sent it: read its header
        kind, width, height = _picture(f["image_bytes"].bytes_list.value[0])
        row.update(picture_format=kind, picture_width=width, picture_height=height)
    if "text" in f:
        row["text_length"] = len(_text(f, "text"))
    elif "product_name" in f or "description" in f:
        row["text_length"] = len((_text(f, "product_name") + " " + _text(f, "description")).strip())
    return row


def compare(train: List[Dict[str, Any]], served: List[Dict[str, Any]], thresholds: Thresholds) -> Dict[str, Any]:
    """TFDV's skew measurements of ``served`` against ``train``; ``moved`` lists those past their threshold
    (``components/data_gate/distributions``, shared with the drift gate)."""
    # A feature no logged request carried (text for an image-only model, pictures for a text-only one)
    # is left out, not counted as moved.
    absent = {c: "no logged request carried it" for c in CATEGORICAL + NUMERIC if all(r[c] is None for r in served)}
    try:
        report = distributions.compare(
            train, served, [c for c in CATEGORICAL if c not in absent], [c for c in NUMERIC if c not in absent],
            distributions.Thresholds(thresholds.linf, thresholds.jsd), mode=distributions.SKEW)
    except (distributions.NothingCompared, ValueError) as e:
        raise SkewError(str(e)) from e
    return {"training_rows": len(train), "request_rows": len(served), "thresholds": vars(thresholds),
            **{k: v for k, v in report.items() if k != "thresholds"}, "not_compared": {**absent, **report["not_compared"]}}


def write_report(run_dir: str, report: Dict[str, Any], requests_dir: str) -> str:
    """``RUN_DIR/skew/<UTC time>/skew.json`` and both statistics; returns the folder."""
    import tensorflow_data_validation as tfdv

    folder = os.path.join(run_dir, SKEW_DIR, dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ"))
    os.makedirs(folder)
    train_stats, served_stats = report.pop("_statistics")
    tfdv.write_stats_text(train_stats, os.path.join(folder, "training_statistics.pbtxt"))
    tfdv.write_stats_text(served_stats, os.path.join(folder, "request_statistics.pbtxt"))
    report.update(requests=os.path.abspath(requests_dir), folder=folder)
    with open(os.path.join(folder, REPORT_FILE), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    return folder


def latest_report(run_dir: str) -> Optional[str]:
    """The newest ``skew.json`` under ``RUN_DIR/skew/``, or None."""
    found = sorted(glob.glob(os.path.join(run_dir, SKEW_DIR, "*", REPORT_FILE)))
    return found[-1] if found else None
