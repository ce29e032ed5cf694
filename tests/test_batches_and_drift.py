"""Catalogue batches (spans) and the drift gate, through the executors without a pipeline (issue 14)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import tensorflow as tf
from tfx.types import channel, standard_artifacts

from placedemarche.components.catalogue_example_gen import batches as batches_lib
from placedemarche.components.catalogue_example_gen.component import run_executor
from placedemarche.components.drift_gate import constants as drift_constants
from placedemarche.components.drift_gate import drift as drift_lib
from placedemarche.components.drift_gate import executor as drift_executor
from placedemarche.components.drift_gate.component import DriftGate, DriftReport
from placedemarche.pipeline import sample_data


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """``ordinary/`` (two ordinary batches of 20 products per category), ``drifted/`` (the same first
    batch, then one with Watches tripled and pictures three times larger)."""
    root = tmp_path_factory.mktemp("batches")
    sample_data.make_sample(root / "ordinary" / "2026-11-30", per_class=20, seed=31, show_progress=False)
    sample_data.make_sample(root / "ordinary" / "2026-12-07", per_class=20, seed=32, show_progress=False)
    shutil.copytree(root / "ordinary" / "2026-11-30", root / "drifted" / "2026-11-30")
    sample_data.make_sample(root / "drifted" / "2026-12-07", per_class=20, seed=33, show_progress=False,
                            category_factors={"Watches": 3}, size_factor=3)
    return root


def _ids_by_split(examples_uri: str):
    found = {}
    for path in Path(examples_uri).glob("Split-*/*.gz"):
        for record in tf.data.TFRecordDataset(str(path), compression_type="GZIP"):
            example = tf.train.Example.FromString(record.numpy())
            found[example.features.feature["uniq_id"].bytes_list.value[0].decode()] = path.parent.name[len("Split-"):]
    return found


def test_batch_folders_are_spans_in_name_order_and_a_flat_catalogue_is_one_batch(catalogue, tmp_path):
    batches = batches_lib.list_batches(str(catalogue / "ordinary"))
    assert [(b.span, b.name) for b in batches] == [(0, "2026-11-30"), (1, "2026-12-07")]
    assert batches[1].csv.endswith(sample_data.CSV_NAME) and batches[1].images_dir.endswith("Images")
    flat = batches_lib.list_batches(str(catalogue / "ordinary" / "2026-11-30"))
    assert [(b.span, b.name) for b in flat] == [(0, "")] and flat[0].label == "the catalogue"
    assert batches_lib.window(batches, 1) == batches[1:] and batches_lib.window(batches, 0) == batches
    (tmp_path / "empty").mkdir()
    with pytest.raises(batches_lib.BatchLayoutError, match="holds no catalogue: no \\*.csv in it and no batch folder"):
        batches_lib.list_batches(str(tmp_path / "empty"))
    (tmp_path / "bad" / "b1").mkdir(parents=True)
    (tmp_path / "bad" / "b1" / "x.csv").write_text("a\n")
    with pytest.raises(batches_lib.BatchLayoutError, match="batch folder 'b1' has no pictures"):
        batches_lib.list_batches(str(tmp_path / "bad"))


def test_a_run_reads_every_batch_and_a_relisted_product_keeps_its_split(catalogue, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(catalogue / "ordinary", data)
    first = data / "2026-11-30" / sample_data.CSV_NAME
    rows = list(csv.DictReader(first.open(encoding="utf-8")))
    alone, _ = run_executor(str(data / "2026-11-30"), str(tmp_path / "alone"))
    split_alone = _ids_by_split(alone)
    # The seller lists the first product again in the newest batch (another price): the newest row wins.
    newest = data / "2026-12-07" / sample_data.CSV_NAME
    relisted = dict(rows[0], retail_price="1234")
    shutil.copy(data / "2026-11-30" / "Images" / rows[0]["image"], data / "2026-12-07" / "Images" / rows[0]["image"])
    with newest.open("a", encoding="utf-8", newline="") as f:
        csv.DictWriter(f, fieldnames=list(rows[0])).writerow(relisted)
    examples, quarantine = run_executor(str(data), str(tmp_path / "both"))
    summary = json.loads((Path(quarantine) / "summary.json").read_text())
    window = {b["name"]: b for b in summary["batches"]["window"]}
    assert list(window) == ["2026-11-30", "2026-12-07"] and summary["batches"]["superseded"] == 1
    assert window["2026-11-30"]["superseded"] == 1 and window["2026-12-07"]["rows"] == 141
    assert sum(sum(b["examples"].values()) for b in window.values()) == sum(summary["examples"].values()) == 280
    both = _ids_by_split(examples)
    assert len(both) == 280
    assert all(both[i] == s for i, s in split_alone.items())  # the same split whatever batch a product came in
    only_newest, quarantine = run_executor(str(data), str(tmp_path / "newest"), window_batches=1)
    summary = json.loads((Path(quarantine) / "summary.json").read_text())
    assert [b["name"] for b in summary["batches"]["window"]] == ["2026-12-07"]
    assert summary["batches"]["all"] == ["2026-11-30", "2026-12-07"]
    assert sum(summary["examples"].values()) == 141


def _drift(data: Path, out: Path, **parameters):
    report = DriftReport()
    report.uri = str(out)
    out.mkdir(parents=True)
    gate = DriftGate(examples=channel.Channel(type=standard_artifacts.Examples), data_dir=str(data), **parameters)
    try:
        drift_executor.Executor().Do({}, {drift_constants.DRIFT_KEY: [report]}, dict(gate.exec_properties))
    finally:
        written = out / drift_constants.REPORT_FILE
        result = json.loads(written.read_text()) if written.exists() else None
    return report, result


def test_two_ordinary_batches_pass_the_drift_gate_with_tfdvs_measurements(catalogue, tmp_path):
    report, result = _drift(catalogue / "ordinary", tmp_path / "drift")
    assert result["compared"] and not result["drifted"]
    assert (report.get_int_custom_property(drift_constants.DRIFTED), report.get_string_custom_property(
        drift_constants.NEWEST), report.get_string_custom_property(drift_constants.PREVIOUS)) == (0, "2026-12-07", "2026-11-30")
    measured = {m["feature"]: m for m in result["measurements"]}
    assert set(measured) == set(drift_lib.CATEGORICAL) | set(drift_lib.NUMERIC)
    assert measured["label"]["measure"] == "L-infinity" and measured["label"]["value"] == 0.0  # 20 of each, both
    assert measured["picture_width"]["measure"] == "Jensen-Shannon divergence"
    # Both batches' statistics are TFDV's own, kept beside the report.
    assert (tmp_path / "drift" / drift_constants.NEWEST_STATISTICS_FILE).read_text().count("num_examples: 140") >= 1


def test_a_flooding_category_and_bigger_photos_stop_the_run_naming_batch_feature_measure_value(catalogue, tmp_path):
    with pytest.raises(drift_lib.DriftDetected) as raised:
        _drift(catalogue / "drifted", tmp_path / "stopped")
    text = str(raised.value)
    assert text.startswith("drift between batch '2026-12-07' (span 1, 180 rows) and the previous batch '2026-11-30'")
    # Watches: 1/7 of the previous batch, 3/9 of the newest: L-infinity 1/3 - 1/7 = 0.1905.
    assert "feature 'label' L-infinity 0.1905 > threshold 0.1" in text
    assert "feature 'picture_width' Jensen-Shannon divergence" in text and "data.accept_drift=true" in text
    result = json.loads((tmp_path / "stopped" / drift_constants.REPORT_FILE).read_text())
    assert result["drifted"] and not result["accepted"]
    assert {"label", "picture_width", "picture_height"} <= {m["feature"] for m in result["moved"]}
    report, result = _drift(catalogue / "drifted", tmp_path / "accepted", accept_drift=True)
    assert result["accepted"] and report.get_int_custom_property(drift_constants.ACCEPTED) == 1


def test_a_feature_the_newest_batch_lost_counts_as_moved():
    from placedemarche.components.data_gate import distributions

    previous = [{"label": "Watches" if i % 2 else "Baby Care", "picture_width": 100 + i} for i in range(20)]
    newest = [{"label": None, "picture_width": 100 + i} for i in range(20)]  # no listing has a category
    report = distributions.compare(previous, newest, ["label"], ["picture_width"], distributions.Thresholds(),
                                   mode=distributions.DRIFT)
    assert [m["feature"] for m in report["moved"]] == ["label"]
    skew = distributions.compare(previous, newest, ["label"], ["picture_width"], distributions.Thresholds(),
                                 mode=distributions.SKEW)
    assert skew["moved"] == [] and "label" in skew["not_compared"]  # skew leaves out what requests lack


def test_a_single_batch_has_nothing_to_compare(catalogue, tmp_path):
    report, result = _drift(catalogue / "ordinary" / "2026-11-30", tmp_path / "one")
    assert not result["compared"] and "the catalogue is the only batch" in result["reason"]
    assert report.get_int_custom_property(drift_constants.COMPARED) == 0
