"""Reviewed categories: a filled review queue becomes labels of the next ingestion.

A reviewer fills the ``reviewed_category`` column of ``review_queue.csv`` (written by
``placedemarche categorize``) and the next ``placedemarche run`` / ``ingest --reviews FILE`` applies
it: a review overrides the seller's category, and gives a category to a listing that had none.

:func:`load` reads the files when the pipeline is built; what it returns (the reviews, each file's
path and SHA-256, the problems found) is passed to ingestion as a JSON execution property, so the
metadata store records exactly which reviews a run applied, and TFX's cache reruns ingestion when
they change. :func:`apply` is called by ingestion on the parsed catalogue rows.

Nothing is applied silently when it looks wrong; each such review is listed as a *conflict*:

- ``conflicting_reviews``: one listing reviewed with different categories (in one file or across files);
- ``bad_category``: a reviewed category with control characters, or longer than 200 characters;
- ``unknown_id``: no row of the catalogue that passed the CSV checks has this ``uniq_id`` (absent, or
  refused by them: the quarantine says why);
- ``unknown_category``: no row of the catalogue has this category (a typo would otherwise create a
  category of one product; add products of a new category through the catalogue itself).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import re
from typing import Dict, List, Sequence, Tuple

from placedemarche.components.categorizer import constants as C

ID_COLUMN = "uniq_id"
MAX_CATEGORY_CHARS = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ReviewsError(ValueError):
    """A reviews file cannot be used at all (missing, not UTF-8 CSV, without the needed columns)."""


def load(paths: Sequence[str]) -> Dict[str, object]:
    """Reads filled review queues (in order) into ``{"files", "reviewed", "unreviewed", "conflicts"}``.

    ``reviewed`` maps uniq_id to its reviewed category; rows with an empty ``reviewed_category`` are
    counted in ``unreviewed``. Raises ReviewsError naming the file and what is wrong with it.
    """
    files: List[Dict[str, object]] = []
    seen: Dict[str, Tuple[str, str]] = {}  # uniq_id -> (category, where)
    refused: Dict[str, Dict[str, str]] = {}
    conflicts: List[Dict[str, str]] = []
    unreviewed = 0
    for path in paths:
        if "://" in path:
            raise ReviewsError(f"reviews file '{path}': give a file on this machine's filesystem (the reviews are "
                               "read when the pipeline is built, and recorded with the run)")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ReviewsError(f"reviews file '{path}' cannot be read: {e.strerror or e}") from None
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise ReviewsError(f"reviews file '{path}' is not UTF-8 text (byte {e.start})") from None
        reader = csv.DictReader(io.StringIO(text, newline=""))
        missing = [c for c in (ID_COLUMN, C.REVIEWED_CATEGORY) if c not in (reader.fieldnames or [])]
        if missing:
            raise ReviewsError(f"reviews file '{path}' has no column(s) {', '.join(missing)} (columns: "
                               f"{', '.join(reader.fieldnames or []) or 'none'}); give the review_queue.csv that "
                               "'placedemarche categorize' wrote, with its reviewed_category column filled")
        filled = 0
        try:
            for record in reader:
                line = reader.line_num
                uid = (record.get(ID_COLUMN) or "").strip()
                category = (record.get(C.REVIEWED_CATEGORY) or "").strip()
                if not category:
                    unreviewed += 1
                    continue
                filled += 1
                where = f"{path}:{line}"
                if _CONTROL.search(category) or len(category) > MAX_CATEGORY_CHARS or not uid:
                    conflicts.append({"uniq_id": uid, "where": where, "kind": "bad_category",
                                      "detail": "an empty uniq_id, or a category with control characters or over "
                                                f"{MAX_CATEGORY_CHARS} characters"})
                    continue
                if uid in refused:
                    continue
                if uid in seen and seen[uid][0] != category:
                    conflicts.append({"uniq_id": uid, "where": where, "kind": "conflicting_reviews",
                                      "detail": f"'{category}' here, '{seen[uid][0]}' at {seen[uid][1]}: "
                                                "neither is applied"})
                    refused[uid] = {}
                    del seen[uid]
                    continue
                seen[uid] = (category, where)
        except csv.Error as e:
            raise ReviewsError(f"reviews file '{path}' line {reader.line_num}: {e}") from None
        files.append({"path": path, "sha256": hashlib.sha256(data).hexdigest(), "reviewed_rows": filled})
    return {"files": files, "reviewed": {uid: v[0] for uid, v in sorted(seen.items())},
            "where": {uid: v[1] for uid, v in sorted(seen.items())}, "unreviewed": unreviewed,
            "conflicts": conflicts}


def to_property(reviews: Dict[str, object]) -> str:
    """The execution property's value (stable JSON, so the same reviews keep TFX's cache)."""
    return json.dumps(reviews, sort_keys=True, ensure_ascii=False)


def apply(rows: Sequence, reviews: Dict[str, object]) -> Tuple[List, Dict[str, object]]:
    """``rows`` (``catalogue.CatalogueRow``, label "" when the row had no category) with reviewed labels,
    and what was done: counts and the conflicts (those found by :func:`load` too).

    Rows still without a label are returned as they are (ingestion's unlabelled split). ``applied``
    counts reviews given to rows that passed the CSV checks: a row refused later for its picture is in
    the quarantine, with its reason, and its review has no example to label."""
    reviewed: Dict[str, str] = dict(reviews.get("reviewed") or {})
    where: Dict[str, str] = dict(reviews.get("where") or {})
    known = {r.label for r in rows if r.label}
    conflicts = list(reviews.get("conflicts") or [])
    ids = {r.uniq_id for r in rows}
    for uid in sorted(set(reviewed) - ids):
        conflicts.append({"uniq_id": uid, "where": where.get(uid, ""), "kind": "unknown_id",
                          "detail": "no row of this catalogue that passed the CSV checks has this uniq_id (absent, or "
                                    "refused: see the quarantine): not applied"})
    for uid, category in sorted(reviewed.items()):
        if uid in ids and category not in known:
            conflicts.append({"uniq_id": uid, "where": where.get(uid, ""), "kind": "unknown_category",
                              "detail": f"'{category}' is not a category of this catalogue "
                                        f"({', '.join(sorted(known))}): not applied"})
    out, overrode, confirmed, labelled = [], 0, 0, 0
    for row in rows:
        category = reviewed.get(row.uniq_id)
        if category is None or category not in known:
            out.append(row)
            continue
        if not row.label:
            labelled += 1
        elif row.label == category:
            confirmed += 1
        else:
            overrode += 1
        out.append(dataclasses.replace(row, label=category))
    return out, {
        "files": reviews.get("files", []),
        "reviewed": len(reviewed),
        "applied": overrode + confirmed + labelled,
        "overrode_seller": overrode,
        "confirmed_seller": confirmed,
        "labelled_without_category": labelled,
        "unreviewed": reviews.get("unreviewed", 0),
        "conflicts": conflicts,
    }
