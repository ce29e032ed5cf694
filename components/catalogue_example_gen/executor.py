"""Executor of CatalogueExampleGen: reads the parameters, runs the Beam transform, writes the report.

The run fails (after writing the report) when the quarantined share of rows is above
``max_quarantine_fraction``; the error names the top reasons and where the report is.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Dict, List

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils

from placedemarche.components.catalogue_example_gen import artifacts, catalogue, transform
from placedemarche.components.catalogue_example_gen import batches as batches_lib
from placedemarche.components.categorizer import reviews as reviews_lib
from placedemarche.components.catalogue_example_gen.constants import (  # noqa: F401 (re-exported)
    BATCHES_PROPERTY, EXAMPLES_KEY, FIRST_SPAN_PROPERTY, QUARANTINE_KEY, UNLABELLED_KEY, UNLABELLED_SPLIT)

logger = logging.getLogger(__name__)



MAX_CONFLICT_NOTICES = 20  # reviews not applied, listed one by one in the notices (all are in the summary)


class QuarantineLimitExceeded(RuntimeError):
    """Too many rows were quarantined for the catalogue to be trusted."""


class NoLabelledRows(ValueError):
    """No row has a category to train on (all unlabelled or quarantined)."""


def find_csv(data_dir: str, csv_file: str) -> str:
    """The catalogue CSV: ``csv_file`` inside ``data_dir``, or the only ``*.csv`` there."""
    if csv_file:
        path = FileSystems.join(data_dir, csv_file)
        if not FileSystems.exists(path):
            raise FileNotFoundError(f"catalogue CSV '{path}' does not exist (data.csv_file)")
        return path
    matches = [m.path for m in FileSystems.match([FileSystems.join(data_dir, "*.csv")])[0].metadata_list]
    if len(matches) != 1:
        found = ", ".join(sorted(os.path.basename(m) for m in matches)) or "none"
        raise FileNotFoundError(
            f"expected exactly one *.csv in '{data_dir}', found {found}; set data.csv_file"
        )
    return matches[0]


def read_text(path: str) -> str:
    with FileSystems.open(path) as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ValueError(f"'{path}' is not UTF-8 text: byte {e.start} (line {line}) is {data[e.start:e.start + 1]!r}; "
                         "save the catalogue as UTF-8") from None


def _collect_json_lines(pattern: str) -> List[Any]:
    items: List[Any] = []
    for match in FileSystems.match([pattern])[0].metadata_list:
        items.extend(json.loads(line) for line in read_text(match.path).splitlines() if line)
        FileSystems.delete([match.path])
    return items


class Executor(base_beam_executor.BaseBeamExecutor):
    """Writes ``Split-{train,eval,test}/data_tfrecord-*.gz`` and the quarantine report."""

    def Do(
        self,
        input_dict: Dict[str, List[Any]],
        output_dict: Dict[str, List[Any]],
        exec_properties: Dict[str, Any],
    ) -> None:
        examples = artifact_utils.get_single_instance(output_dict[EXAMPLES_KEY])
        report = artifact_utils.get_single_instance(output_dict[QUARANTINE_KEY])
        unlabelled = (artifact_utils.get_single_instance(output_dict[UNLABELLED_KEY])
                      if output_dict.get(UNLABELLED_KEY) else None)
        p = exec_properties
        data_dir = p["data_dir"]
        all_batches = batches_lib.list_batches(data_dir, p.get("csv_file") or "", p["images_dir"])
        used = batches_lib.window(all_batches, int(p.get("window_batches") or 0))
        batched = bool(used[0].name)
        csv_path = used[-1].csv if not batched else data_dir
        columns = catalogue.Columns(**json.loads(p["columns"]))
        options = transform.IngestOptions(
            images_dir=used[-1].images_dir,
            batch_images=tuple((b.name, b.images_dir) for b in used) if batched else (),
            max_image_side=int(p["max_image_side"]),
            min_image_side=int(p["min_image_side"]),
            max_image_pixels=int(p["max_image_pixels"]),
            max_image_bytes=int(p.get("max_image_bytes") or transform.IngestOptions.max_image_bytes),
            jpeg_quality=int(p["jpeg_quality"]),
            test_fraction=float(p["test_fraction"]),
            eval_fraction=float(p["eval_fraction"]),
            split_salt=p["split_salt"],
        )
        max_fraction = float(p["max_quarantine_fraction"])

        reviews = json.loads(p["reviews"]) if p.get("reviews") else None
        # Rows without a category are kept: they become the unlabelled split (for categorising).
        rows, early_quarantine, total, superseded, batch_rows = read_batches(used, columns, int(p["label_depth"]))
        if batched:
            logger.info("catalogue of %d batches; training window: %s (data.window_batches=%s)", len(all_batches),
                        ", ".join(b.name for b in used), p.get("window_batches") or "all")
        reviews_applied = None
        if reviews is not None:  # reviewed categories override the sellers' and label rows that had none
            rows, reviews_applied = reviews_lib.apply(rows, reviews)
            logger.info("reviews: %d applied (%d overrode the seller's category, %d labelled rows without one), "
                        "%d conflicts", reviews_applied["applied"], reviews_applied["overrode_seller"],
                        reviews_applied["labelled_without_category"], len(reviews_applied["conflicts"]))
        logger.info("%s: %d rows, %d refused by the CSV checks", csv_path, total, len(early_quarantine))
        if total == 0:
            raise ValueError(f"catalogue '{csv_path}' has a header but no rows")
        if superseded:
            logger.info("%d listings appear again in a newer batch: the newest row of each is used", len(superseded))

        scratch = os.path.join(report.uri, "_beam")
        with self._make_beam_pipeline() as pipeline:
            out = (
                pipeline
                | "Rows" >> beam.Create(rows, reshuffle=False)
                | "Ingest" >> transform.IngestCatalogue(options)
            )
            for split in catalogue.SPLITS:
                _ = out[split] | f"Write{split.title()}" >> beam.io.WriteToTFRecord(
                    os.path.join(examples.uri, f"Split-{split}", "data_tfrecord"),
                    file_name_suffix=".gz",
                )
            if unlabelled is not None:
                _ = out[transform.UNLABELLED] | "WriteUnlabelled" >> beam.io.WriteToTFRecord(
                    os.path.join(unlabelled.uri, f"Split-{UNLABELLED_SPLIT}", "data_tfrecord"),
                    file_name_suffix=".gz",
                )
            _ = (
                out[transform.QUARANTINE]
                | "QuarantineJson" >> beam.Map(json.dumps)
                | "WriteQuarantine" >> beam.io.WriteToText(os.path.join(scratch, "quarantine"))
            )
            _ = (
                out[transform.COUNTS]
                | "CountsJson" >> beam.Map(lambda kv: json.dumps([kv[0][0], kv[0][1], kv[1], kv[0][2]]))
                | "WriteCounts" >> beam.io.WriteToText(os.path.join(scratch, "counts"))
            )
            _ = (
                out[transform.MISSING_TEXT]
                | "MissingTextJson" >> beam.Map(json.dumps)
                | "WriteMissingText" >> beam.io.WriteToText(os.path.join(scratch, "missing_text"))
            )

        quarantined = [catalogue.QuarantineEntry(**d) for d in _collect_json_lines(os.path.join(scratch, "quarantine*"))]
        quarantined = sorted(early_quarantine + quarantined, key=lambda e: (e.row, e.reason))
        counts = _collect_json_lines(os.path.join(scratch, "counts*"))
        summary = summarise(total, counts, quarantined, csv_path)
        if batched:
            summary["batches"] = batch_summary(used, all_batches, counts, quarantined, batch_rows, superseded)
            summary["superseded"] = superseded[:MAX_CONFLICT_NOTICES * 5]
        missing = dict(_collect_json_lines(os.path.join(scratch, "missing_text*")))
        summary["examples_without_text"] = {c: missing.get(c, 0) for c in (*transform.TEXT_COLUMNS, "no_text")}
        if reviews_applied is not None:
            summary["reviews"] = reviews_applied
            conflicts = reviews_applied["conflicts"]
            summary["notices"].extend(
                f"review of '{c['uniq_id']}' ({c['where'] or 'reviews'}) not applied: {c['kind']}: {c['detail']}"
                for c in conflicts[:MAX_CONFLICT_NOTICES])
            if len(conflicts) > MAX_CONFLICT_NOTICES:
                summary["notices"].append(f"... and {len(conflicts) - MAX_CONFLICT_NOTICES} more reviews not applied "
                                          f"(all listed under 'reviews' in {artifacts.SUMMARY_FILE})")
        _write_json(os.path.join(report.uri, artifacts.QUARANTINE_FILE), [e.to_dict() for e in quarantined])
        _write_json(os.path.join(report.uri, artifacts.SUMMARY_FILE), summary)

        examples.split_names = artifact_utils.encode_split_names(list(catalogue.SPLITS))
        # TFX spans: a batch's position in name order. The artifact holds the window, newest span last.
        examples.span = used[-1].span
        examples.version = 0
        examples.set_string_custom_property(BATCHES_PROPERTY, json.dumps([b.name for b in used]))
        examples.set_int_custom_property(FIRST_SPAN_PROPERTY, used[0].span)
        # What ExampleGen records, so StatisticsGen / Trainer read the payload without guessing.
        examples.set_string_custom_property("payload_format", "FORMAT_TF_EXAMPLE")
        examples.set_string_custom_property("file_format", "tfrecords_gzip")
        examples.set_string_custom_property("input_fingerprint", p.get("input_fingerprint") or "")
        if unlabelled is not None:
            unlabelled.split_names = artifact_utils.encode_split_names([UNLABELLED_SPLIT])
            unlabelled.span, unlabelled.version = used[-1].span, 0
            unlabelled.set_string_custom_property("payload_format", "FORMAT_TF_EXAMPLE")
            unlabelled.set_string_custom_property("file_format", "tfrecords_gzip")
            unlabelled.set_int_custom_property("listings", summary["unlabelled"])
        for note in summary["notices"]:
            logger.warning("%s", note)
        logger.info(
            "examples per split: %s; quarantined %d of %d rows (%s)",
            summary["examples"], len(quarantined), total, catalogue.top_reasons(quarantined) or "none",
        )
        fraction = len(quarantined) / total
        if fraction > max_fraction:
            raise QuarantineLimitExceeded(
                f"{len(quarantined)} of {total} rows ({fraction:.1%}) were quarantined, above the "
                f"{max_fraction:.1%} limit (data.max_quarantine_fraction); top reasons: "
                f"{catalogue.top_reasons(quarantined)}. Every refused row is listed in "
                f"{os.path.join(report.uri, artifacts.QUARANTINE_FILE)}"
            )
        if not any(summary["examples"].values()):
            raise NoLabelledRows(
                f"no row of '{csv_path}' can be trained on: {summary['unlabelled']} have no category (kept in the "
                f"unlabelled output), {len(quarantined)} were quarantined ({catalogue.top_reasons(quarantined) or '-'}). "
                "Give the catalogue's categories, or apply reviewed ones with --reviews")


def read_batches(batches: List[batches_lib.Batch], columns: catalogue.Columns, label_depth: int):
    """The rows of every batch (CSV-level checks applied), each tagged with its batch and span.

    A listing (``uniq_id``) that appears in several batches is read from the **newest** one (a seller
    updated it); the older rows are returned as ``superseded`` (not quarantined: nothing is wrong
    with them). Returns ``(rows, quarantined, total, superseded, rows_per_batch)``.
    """
    rows: List[catalogue.CatalogueRow] = []
    quarantined: List[catalogue.QuarantineEntry] = []
    superseded: List[Dict[str, Any]] = []
    total, per_batch = 0, {}
    newer: Dict[str, str] = {}  # uniq_id -> the newer batch that has it
    for batch in reversed(batches):  # newest first: its rows win
        batch_rows, refused, n = catalogue.read_catalogue(read_text(batch.csv), columns, label_depth,
                                                         keep_unlabelled=True)
        total += n
        per_batch[batch.name] = n
        quarantined += [dataclasses.replace(e, batch=batch.name) for e in refused]
        for row in batch_rows:
            if row.uniq_id in newer:
                superseded.append({"uniq_id": row.uniq_id, "batch": batch.name, "row": row.row,
                                   "newer_batch": newer[row.uniq_id]})
                continue
            rows.append(dataclasses.replace(row, batch=batch.name, span=batch.span))
        for row in batch_rows:
            newer.setdefault(row.uniq_id, batch.name)
    rows.sort(key=lambda r: r.key)
    return rows, quarantined, total, superseded, per_batch


def batch_summary(used: List[batches_lib.Batch], all_batches: List[batches_lib.Batch], counts: List[List[Any]],
                  quarantined: List[catalogue.QuarantineEntry], rows_per_batch: Dict[str, int],
                  superseded: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Per batch of the window: span, rows read, examples per split, unlabelled, quarantined, superseded."""
    entries = []
    for b in used:
        examples = {s: 0 for s in catalogue.SPLITS}
        unlabelled = 0
        for split, _, n, *batch in counts:
            if (batch[0] if batch else "") != b.name:
                continue
            if split == transform.UNLABELLED:
                unlabelled += n
            else:
                examples[split] += n
        entries.append({"name": b.name, "span": b.span, "csv": b.csv, "rows": rows_per_batch.get(b.name, 0),
                        "examples": examples, "unlabelled": unlabelled,
                        "quarantined": sum(1 for e in quarantined if e.batch == b.name),
                        "superseded": sum(1 for x in superseded if x["batch"] == b.name)})
    return {"window": entries, "all": [b.name for b in all_batches], "superseded": len(superseded)}


def summarise(
    total: int, counts: List[List[Any]], quarantined: List[catalogue.QuarantineEntry], csv_path: str
) -> Dict[str, Any]:
    """The ingestion summary: examples per split and label, quarantine by reason, notices.

    ``counts``: ``[split, label, n]`` or ``[split, label, n, batch]`` rows.
    """
    per_split = {s: 0 for s in catalogue.SPLITS}
    per_split_label: Dict[str, Dict[str, int]] = {s: {} for s in catalogue.SPLITS}
    labels: Dict[str, int] = {}
    unlabelled = 0
    for split, label, n, *_ in counts:
        if split == transform.UNLABELLED:
            unlabelled += n
            continue
        per_split[split] += n
        per_split_label[split][label] = per_split_label[split].get(label, 0) + n
        labels[label] = labels.get(label, 0) + n
    by_reason: Dict[str, int] = {}
    for e in quarantined:
        by_reason[e.reason] = by_reason.get(e.reason, 0) + 1
    notices = []
    for label in sorted(labels):
        absent = [s for s in catalogue.SPLITS if label not in per_split_label[s]]
        if absent:
            notices.append(
                f"category '{label}' has {labels[label]} example(s) and none in the "
                f"{'/'.join(absent)} split(s): it cannot be trained and evaluated fairly; add "
                "products or lower data.label_depth"
            )
    return {
        "csv": csv_path,
        "rows": total,
        "examples": per_split,
        "labels": dict(sorted(labels.items())),
        "examples_per_split_and_label": {s: dict(sorted(v.items())) for s, v in per_split_label.items()},
        "unlabelled": unlabelled,
        "quarantined": len(quarantined),
        "quarantined_by_reason": dict(sorted(by_reason.items())),
        "notices": notices,
    }


def _write_json(path: str, value: Any) -> None:
    with FileSystems.create(path) as f:
        f.write((json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
