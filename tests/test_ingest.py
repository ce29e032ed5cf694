"""Ingestion + validation through TFX: parse the TFRecords, statistics and metadata, check values."""

from __future__ import annotations

import collections
import glob
import io
import json
import os

import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow_metadata.proto.v0 import schema_pb2
from google.protobuf import text_format

from placedemarche.components.catalogue_example_gen import catalogue
from placedemarche.components.data_gate import anomalies as anomalies_lib
from placedemarche.pipeline import local_runner, outputs, pipeline as pipeline_lib, sample_data
from placedemarche.pipeline.cli import main
from placedemarche.pipeline.config import load_config

# The defect sample has 42 clean rows and 11 defect rows, 7 of them refused (13 %).
LENIENT = ["--set", "data.max_quarantine_fraction=0.2"]


def _ingest(capsys, data_dir, run_dir, *extra):
    status = main(["-q", "ingest", "--data", str(data_dir), "--output", str(run_dir), "--json", *extra])
    captured = capsys.readouterr()
    return status, json.loads(captured.out), captured.err


def read_examples(examples_uri, splits=None):
    """{split: [parsed tf.Example feature dicts]} from the GZIP TFRecords of an Examples artifact."""
    out = {}
    splits = splits or catalogue.SPLITS
    for split in splits:
        files = sorted(glob.glob(os.path.join(examples_uri, f"Split-{split}", "*.gz")))
        assert files, f"no TFRecord files for split {split}"
        out[split] = []
        for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
            example = tf.train.Example.FromString(record.numpy())
            out[split].append({k: v for k, v in example.features.feature.items()})
    return out


def _text(feature) -> str:
    return feature.bytes_list.value[0].decode("utf-8")


@pytest.fixture(scope="module")
def ingested(defect_sample, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ingest_run")
    status = main(["-q", "ingest", "--data", str(defect_sample), "--output", str(run_dir), *LENIENT])
    assert status == 0
    config = load_config(None, [f"data.data_dir={defect_sample}", "data.max_quarantine_fraction=0.2"])
    report = local_runner.ingestion_report(config, run_dir)
    return run_dir, report


def test_every_defect_gets_its_outcome(defect_sample, ingested):
    _, report = ingested
    manifest = json.loads((defect_sample / sample_data.MANIFEST_NAME).read_text())
    refused = {(q["row"], q["uniq_id"]): q for q in report["quarantined"]}
    examples = read_examples(report["artifacts"]["examples"])
    ids = collections.Counter(_text(e["uniq_id"]) for rows in examples.values() for e in rows)
    for defect in manifest["defects"]:
        key = (defect["row"], defect["uniq_id"])
        if defect["expected"] == "ok":
            assert key not in refused, defect
            assert ids[defect["uniq_id"]] == 1, defect
        elif defect["expected"] == "unlabelled":  # kept for categorising, not quarantined, not trained on
            assert key not in refused and ids[defect["uniq_id"]] == 0, defect
            unlabelled = read_examples(report["artifacts"]["unlabelled"], ["unlabelled"])["unlabelled"]
            assert [_text(e["uniq_id"]) for e in unlabelled] == [defect["uniq_id"]]
            assert "label" not in unlabelled[0] and unlabelled[0]["image_bytes"].bytes_list.value[0]
            assert report["unlabelled"] == 1
        else:
            assert refused[key]["reason"] == defect["expected"], defect
            assert refused[key]["image"] == defect["image"]
            assert refused[key]["detail"]
    assert len(refused) == sum(d["expected"] not in ("ok", "unlabelled") for d in manifest["defects"])
    assert report["quarantined_by_reason"] == dict(
        collections.Counter(d["expected"] for d in manifest["defects"] if d["expected"] not in ("ok", "unlabelled"))
    )


def test_examples_hold_the_rows_values(defect_sample, ingested):
    _, report = ingested
    frame = pd.read_csv(defect_sample / sample_data.CSV_NAME).set_index("uniq_id", drop=False)
    frame = frame[~frame.index.duplicated()]  # the duplicate-id row is refused; the first stays
    examples = read_examples(report["artifacts"]["examples"])
    assert sum(len(v) for v in examples.values()) == report["rows"] - len(report["quarantined"]) - report["unlabelled"] == 46
    for split, rows in examples.items():
        for e in rows:
            uniq_id = _text(e["uniq_id"])
            row = frame.loc[uniq_id]
            assert _text(e["label"]) == catalogue.parse_category(row["product_category_tree"])[0]
            assert _text(e["image_file"]) == row["image"]
            assert e["retail_price"].float_list.value[0] == pytest.approx(row["retail_price"])
            img = Image.open(io.BytesIO(e["image_bytes"].bytes_list.value[0]))
            img.load()
            assert img.format == "JPEG" and img.mode == "RGB" and max(img.size) <= 600
            with Image.open(defect_sample / "Images" / row["image"]) as original:
                assert (e["width"].int64_list.value[0], e["height"].int64_list.value[0]) == original.size


def test_splits_follow_the_id_hash_and_shared_pictures_share_a_split(defect_sample, ingested):
    _, report = ingested
    manifest = json.loads((defect_sample / sample_data.MANIFEST_NAME).read_text())
    examples = read_examples(report["artifacts"]["examples"])
    split_of = {_text(e["uniq_id"]): split for split, rows in examples.items() for e in rows}
    shared = next(d for d in manifest["defects"] if d["kind"] == "shared_picture")
    frame = pd.read_csv(defect_sample / sample_data.CSV_NAME)
    source_id = frame.iloc[2]["uniq_id"]  # the variant reuses the third product's picture
    assert split_of[shared["uniq_id"]] == split_of[source_id]
    for uniq_id, split in split_of.items():
        key = source_id if uniq_id == shared["uniq_id"] else uniq_id
        assert split == catalogue.assign_split(key, "placedemarche", 0.2, 0.25)


def test_statistics_hold_per_split_label_counts(ingested):
    _, report = ingested
    stats_uri = report["artifacts"]["statistics"]
    for split in catalogue.SPLITS:
        counts = anomalies_lib.string_value_counts(anomalies_lib.read_statistics(stats_uri, split), "label")
        assert counts == report["examples_per_split_and_label"][split]
    assert report["anomalies"] == []
    assert report["data_validation"] == "passed"


def test_second_run_is_served_from_cache(defect_sample, ingested, capsys):
    run_dir, report = ingested
    status, again, _ = _ingest(capsys, defect_sample, run_dir, *LENIENT)
    assert status == 0
    store = outputs.open_store(str(local_runner.metadata_path(run_dir)))
    for node in pipeline_lib.DATA_STAGES:
        assert outputs.count_executions(store, "placedemarche", node).get("CACHED") == 1, node
    assert again["artifacts"]["examples"] == report["artifacts"]["examples"]


def test_quarantine_limit_fails_the_run_naming_the_reasons(defect_sample, tmp_path, capsys):
    status, report, err = _ingest(capsys, defect_sample, tmp_path / "run")
    assert status == 1
    assert "6 of 53 rows (11.3%) were quarantined, above the 5.0% limit" in report["failure"]
    assert "top reasons: " in report["failure"] and "quarantine.json" in report["failure"]
    assert report["examples"] is None  # ExampleGen published nothing


def test_anomaly_stops_before_training_naming_feature(defect_sample, tmp_path, capsys):
    schema = schema_pb2.Schema()
    text_format.Parse(open(pipeline_lib.default_schema_file()).read(), schema)
    domain = next(d for d in schema.string_domain if d.name == "label")
    kept = [v for v in domain.value if v != "Watches"]
    del domain.value[:]
    domain.value.extend(kept)
    path = tmp_path / "schema.pbtxt"
    path.write_text(text_format.MessageToString(schema))
    status, report, err = _ingest(
        capsys, defect_sample, tmp_path / "run", *LENIENT, "--set", f"data.schema_file={path}"
    )
    assert status == 1
    assert report["data_validation"] == "failed"
    label_anomalies = [a for a in report["anomalies"] if a["feature"] == "label"]
    assert {a["split"] for a in label_anomalies} == {"train", "eval", "test"}
    assert "Watches" in label_anomalies[0]["description"]
    assert "feature 'label'" in report["failure"] and "training stopped" in report["failure"]


def test_human_report_lists_splits_quarantine_and_anomalies(defect_sample, ingested, capsys):
    run_dir, _ = ingested
    assert main(["-q", "ingest", "--data", str(defect_sample), "--output", str(run_dir), *LENIENT]) == 0
    out = capsys.readouterr().out
    assert "examples per split and label:" in out
    assert "quarantined: 6 of 53 rows" in out
    assert "unlabelled: 1 listing without a category" in out
    assert "missing_image: 1" in out
    assert "anomalies: none" in out


def test_bad_data_folder_is_a_usage_error(tmp_path, capsys):
    assert main(["-q", "ingest", "--data", str(tmp_path / "nope"), "--output", str(tmp_path / "r")]) == 2
    assert "is not a folder" in capsys.readouterr().err


@pytest.mark.realdata
def test_real_flipkart_sample(flipkart_dir, tmp_path, capsys):
    status, report, _ = _ingest(capsys, flipkart_dir, tmp_path / "run")
    assert status == 0, report["failure"]
    assert sum(report["examples"].values()) == 1047
    assert sorted((q["reason"], q["image"]) for q in report["quarantined"]) == [
        ("missing_image", "22ac36ba254a68d7dd6173f099771147.jpg"),
        ("missing_image", "994f1d8ade16b9fddce3c127eb7f38ed.jpg"),
        ("missing_image", "c4ac93e194281d6d1450ffdaa52f5f99.jpg"),
    ]
    frame = pd.read_csv(flipkart_dir / "flipkart_com-ecommerce_sample_1050.csv")
    missing = frame[frame["image"].isin([q["image"] for q in report["quarantined"]])]
    expected = collections.Counter({c: 150 for c in frame["product_category_tree"].map(lambda t: catalogue.parse_category(t)[0])})
    expected.subtract(missing["product_category_tree"].map(lambda t: catalogue.parse_category(t)[0]))
    assert report["labels"] == dict(expected)
    assert len(report["labels"]) == 7
    assert report["anomalies"] == []
    assert report["data_validation"] == "passed"


def test_schema_command_regenerates_a_curated_schema(defect_sample, tmp_path, capsys):
    out = tmp_path / "schema.pbtxt"
    status = main(["-q", "schema", "--data", str(defect_sample), "--output", str(out),
                   "--work-dir", str(tmp_path / "work"), *LENIENT])
    assert status == 0, capsys.readouterr().err
    schema = schema_pb2.Schema()
    text_format.Parse(out.read_text(), schema)
    domain = next(d for d in schema.string_domain if d.name == "label")
    assert sorted(domain.value) == sorted(c.name for c in sample_data.CATEGORIES)
    features = {f.name: f for f in schema.feature}
    assert features["image_bytes"].presence.min_fraction == 1.0
    assert features["brand"].presence.min_fraction == 0.0
    assert not features["brand"].HasField("domain")
