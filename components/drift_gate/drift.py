"""The drift gate's library: describe a catalogue batch as rows, and compare the newest batch with the
previous one through TFDV. Plain Python (TFDV through ``data_gate.distributions``); no TFX.

A batch is described as it **arrived** (every row that passes the CSV checks, whatever ingestion
later decides about its picture): the label (``data.label_depth`` level of the category, absent for
a listing without one) and the picture's format (as read from its header; ``UNREADABLE`` when it
cannot be read) are compared by L-infinity distance; the prices (on a log10 scale), the picture's width and height (of
the seller's original, after EXIF orientation, as ingestion records them) and the lengths of the
name and the description by Jensen-Shannon divergence. Pictures are read from their headers only
(never decoded), through ingestion's contained reader.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, List

from placedemarche.components.catalogue_example_gen import batches as batches_lib
from placedemarche.components.catalogue_example_gen import catalogue, images, pictures
from placedemarche.components.data_gate import distributions

logger = logging.getLogger(__name__)

CATEGORICAL = ("label", "picture_format")
NUMERIC = ("log10_retail_price", "log10_discounted_price", "picture_width", "picture_height", "name_length",
           "description_length")
UNREADABLE = "UNREADABLE"


class DriftDetected(RuntimeError):
    """The newest batch's distributions moved past a threshold: training must not start."""


def _log10(price):
    # Prices span orders of magnitude (a 99-rupee mug, a 50,000-rupee laptop): on their own scale a
    # random half of the real catalogue already "moves" (Jensen-Shannon 0.24 against the other half);
    # on a log scale 0.04, while a real change of mix stays visible.
    return None if price is None else math.log10(max(price, 1.0))


def batch_rows(batch: batches_lib.Batch, text: str, columns: catalogue.Columns, label_depth: int,
               max_image_bytes: int = 50 * 1024 * 1024) -> List[Dict[str, Any]]:
    """One row per listing of ``batch`` (its CSV's ``text``) that passes the CSV checks."""
    rows, _, _ = catalogue.read_catalogue(text, columns, label_depth, keep_unlabelled=True)
    reader = pictures.PictureReader(batch.images_dir, max_image_bytes)
    described = []
    for row in rows:
        try:
            kind, width, height = images.header(reader.read(row.image))
            kind, width, height = kind.upper(), int(width), int(height)
        except (pictures.PictureRefused, images.ImageRejected, OSError):
            kind, width, height = UNREADABLE, None, None
        described.append({
            "label": row.label or None, "picture_format": kind, "picture_width": width, "picture_height": height,
            "log10_retail_price": _log10(catalogue.parse_float(row.fields.get("retail_price"))),
            "log10_discounted_price": _log10(catalogue.parse_float(row.fields.get("discounted_price"))),
            "name_length": len((row.fields.get("product_name") or "").strip()),
            "description_length": len((row.fields.get("description") or "").strip()),
        })
    return described


def compare(newest: batches_lib.Batch, newest_rows: List[Dict[str, Any]], previous: batches_lib.Batch,
            previous_rows: List[Dict[str, Any]], thresholds: distributions.Thresholds) -> Dict[str, Any]:
    """TFDV's drift measurements of the newest batch against the previous one (see the module doc)."""
    for batch, rows in ((newest, newest_rows), (previous, previous_rows)):
        if not rows:
            raise DriftDetected(f"{batch.label} ({batch.csv}) has no row that passes the CSV checks: nothing to "
                                "compare; look at its CSV (ingest names each refused row)")
    report = distributions.compare(previous_rows, newest_rows, CATEGORICAL, NUMERIC, thresholds,
                                   mode=distributions.DRIFT)
    report.update(newest=newest.to_dict(), previous=previous.to_dict(), newest_rows=len(newest_rows),
                  previous_rows=len(previous_rows), compared=True, drifted=bool(report["moved"]))
    return report


def not_compared(batches: List[batches_lib.Batch]) -> Dict[str, Any]:
    """The report of a catalogue with one batch: nothing to compare with."""
    only = batches[-1]
    return {"compared": False, "drifted": False, "newest": only.to_dict(), "previous": None, "measurements": [],
            "moved": [], "reason": f"{only.label} is the only batch: no previous batch to compare with"}


def message(report: Dict[str, Any], accepted: bool) -> str:
    """What moved, in words: batch, feature, measure, value, threshold."""
    newest, previous = report["newest"], report["previous"]
    moved = "; ".join(f"feature '{m['feature']}' {m['measure']} {m['value']:.4f} > threshold {m['threshold']}"
                      for m in report["moved"])
    head = (f"drift between batch '{newest['name']}' (span {newest['span']}, {report['newest_rows']} rows) and the "
            f"previous batch '{previous['name']}' (span {previous['span']}, {report['previous_rows']} rows): {moved}")
    if accepted:
        return head + "; accepted (data.accept_drift=true): training goes on, and the decision is recorded"
    return (head + ". Training stopped before it started. Look at the newest batch; if the change is expected, "
            "run again with --set data.accept_drift=true (the decision is recorded in the metadata store and "
            "shown by review)")
