"""DataValidationGate's executor on ExampleValidator's output (as TFX's example_validator/executor_test.py).

The anomalies are produced two ways: by TFX 1.16's own ExampleValidator executor on statistics with
an unexpected label (so the file layout is exactly what the pipeline's upstream writes), and written
directly with ``writer_utils.write_anomalies`` (per-feature and dataset-level anomalies).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List

import pandas as pd
import pytest
import tensorflow_data_validation as tfdv
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2
from tfx.components.example_validator import executor as example_validator
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import io_utils, json_utils, writer_utils

from placedemarche.components.data_gate import anomalies as anomalies_lib
from placedemarche.components.data_gate import executor as gate
from placedemarche.components.data_gate.component import DataValidation

SCHEMA = """
feature { name: "label" type: BYTES domain: "label" presence { min_fraction: 1.0 min_count: 1 } }
string_domain { name: "label" value: "Computers" value: "Watches" }
"""


def _statistics(root: Path, labels_per_split: Dict[str, List[str]]):
    """An ExampleStatistics artifact as StatisticsGen writes it (``Split-<name>/FeatureStats.pb``)."""
    stats = standard_artifacts.ExampleStatistics()
    stats.uri = str(root / "statistics")
    stats.split_names = artifact_utils.encode_split_names(list(labels_per_split))
    for split, labels in labels_per_split.items():
        folder = Path(stats.uri) / f"Split-{split}"
        folder.mkdir(parents=True)
        proto = tfdv.generate_statistics_from_dataframe(pd.DataFrame({"label": labels}))
        (folder / "FeatureStats.pb").write_bytes(proto.SerializeToString())
    return stats


def _validated(root: Path, labels_per_split: Dict[str, List[str]]):
    """TFX's ExampleValidator executor run on those statistics and the schema: its Anomalies artifact."""
    schema = standard_artifacts.Schema()
    schema.uri = str(root / "schema")
    os.makedirs(schema.uri)
    io_utils.write_pbtxt_file(os.path.join(schema.uri, "schema.pbtxt"), text_format.Parse(SCHEMA, schema_pb2.Schema()))
    anomalies = standard_artifacts.ExampleAnomalies()
    anomalies.uri = str(root / "anomalies")
    example_validator.Executor().Do(
        {"statistics": [_statistics(root, labels_per_split)], "schema": [schema]},
        {"anomalies": [anomalies]}, {"exclude_splits": json_utils.dumps([])})
    return anomalies


def _run_gate(anomalies, out: Path):
    result = DataValidation()
    result.uri = str(out)
    os.makedirs(result.uri, exist_ok=True)
    error = None
    try:
        gate.Executor().Do({gate.ANOMALIES_KEY: [anomalies]}, {gate.RESULT_KEY: [result]}, {})
    except gate.DataAnomaliesFound as e:
        error = e
    return result, json.loads((out / gate.RESULT_FILE).read_text()), error


def test_clean_data_passes(tmp_path):
    anomalies = _validated(tmp_path, {"train": ["Watches", "Computers"] * 3, "eval": ["Computers", "Watches"],
                                      "test": ["Watches"]})
    assert anomalies.get_json_value_custom_property("blessed") == {"train": 1, "eval": 1, "test": 1}
    result, record, error = _run_gate(anomalies, tmp_path / "result")
    assert error is None
    assert record == {"passed": True, "anomalies": []}
    assert result.get_int_custom_property("passed") == 1


def test_an_unexpected_label_in_one_split_stops_the_run_and_names_it(tmp_path):
    anomalies = _validated(tmp_path, {"train": ["Watches", "Computers"] * 3, "eval": ["Watches", "Toys"]})
    # ExampleValidator's own verdict: eval has an anomaly, train none; its files are per split.
    assert anomalies.get_json_value_custom_property("blessed") == {"train": 1, "eval": 0}
    assert sorted(os.listdir(anomalies.uri)) == ["Split-eval", "Split-train"]
    assert os.listdir(os.path.join(anomalies.uri, "Split-eval")) == [anomalies_lib.ANOMALIES_FILE]

    result, record, error = _run_gate(anomalies, tmp_path / "result")
    assert isinstance(error, gate.DataAnomaliesFound)
    assert result.get_int_custom_property("passed") == 0
    assert record["passed"] is False
    (finding,) = record["anomalies"]
    assert (finding["split"], finding["feature"], finding["short"]) == ("eval", "label", "Unexpected string values")
    assert "Toys" in finding["description"]
    message = str(error)
    assert message.startswith("1 data anomaly against the schema, training stopped: split 'eval', feature 'label': "
                              "Unexpected string values (")
    assert "Toys" in message and "regenerate the schema with 'placedemarche schema'" in message


def _write(uri: Path, split: str, proto_text: str) -> None:
    writer_utils.write_anomalies(str(uri / f"Split-{split}" / anomalies_lib.ANOMALIES_FILE),
                                 text_format.Parse(proto_text, anomalies_pb2.Anomalies()))


def test_feature_and_dataset_anomalies_of_every_split_are_all_reported(tmp_path):
    anomalies = standard_artifacts.ExampleAnomalies()
    anomalies.uri = str(tmp_path / "anomalies")
    anomalies.split_names = artifact_utils.encode_split_names(["train", "eval"])
    _write(tmp_path / "anomalies", "train", """
        anomaly_info { key: "price" value { short_description: "Out-of-range values"
                                            description: "Unexpectedly low value: -3." severity: ERROR } }
        anomaly_info { key: "brand" value { short_description: "Column dropped"
                                            description: "The feature was present in fewer examples than expected." } }
    """)
    _write(tmp_path / "anomalies", "eval", """
        dataset_anomaly_info { short_description: "Low num examples in dataset."
                               description: "Low num examples in dataset." severity: ERROR }
    """)
    result, record, error = _run_gate(anomalies, tmp_path / "result")
    assert isinstance(error, gate.DataAnomaliesFound)
    assert [(a["split"], a["feature"], a["short"]) for a in record["anomalies"]] == [
        ("train", "brand", "Column dropped"), ("train", "price", "Out-of-range values"),
        ("eval", "(dataset)", "Low num examples in dataset.")]
    assert str(error).startswith("3 data anomalies against the schema")
    assert "split 'train', feature 'price': Out-of-range values (Unexpectedly low value: -3.)" in str(error)
    assert result.get_int_custom_property("passed") == 0


def test_more_than_ten_anomalies_are_counted_not_all_listed(tmp_path):
    anomalies = standard_artifacts.ExampleAnomalies()
    anomalies.uri = str(tmp_path / "anomalies")
    anomalies.split_names = artifact_utils.encode_split_names(["train"])
    _write(tmp_path / "anomalies", "train", "\n".join(
        f'anomaly_info {{ key: "f{i:02d}" value {{ short_description: "Missing" description: "d{i}" }} }}'
        for i in range(12)))
    _, record, error = _run_gate(anomalies, tmp_path / "result")
    assert len(record["anomalies"]) == 12  # the file lists them all
    assert str(error).startswith("12 data anomalies") and "(and 2 more)" in str(error)
    assert "feature 'f09'" in str(error) and "feature 'f10'" not in str(error)


def test_a_split_without_an_anomalies_file_is_an_error_not_a_pass(tmp_path):
    anomalies = standard_artifacts.ExampleAnomalies()
    anomalies.uri = str(tmp_path / "anomalies")
    anomalies.split_names = artifact_utils.encode_split_names(["train", "eval"])
    _write(tmp_path / "anomalies", "train", "")
    result = DataValidation()
    result.uri = str(tmp_path / "result")
    os.makedirs(result.uri)
    with pytest.raises(FileNotFoundError, match="no anomalies file for split 'eval'"):
        gate.Executor().Do({gate.ANOMALIES_KEY: [anomalies]}, {gate.RESULT_KEY: [result]}, {})
    assert not result.has_custom_property("passed")
    assert not (tmp_path / "result" / gate.RESULT_FILE).exists()
