"""The local server's request log: a sample of served requests as tf.Examples, capped, never failing a request."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from placedemarche.components.infra_validator import warmup
from placedemarche.components.serving_pusher import push as push_lib
from placedemarche.components.trainer import export as export_lib
from placedemarche.components.trainer import model as model_lib
from placedemarche.pipeline.config import ConfigError, load_config
from placedemarche.serving import client as client_lib
from placedemarche.serving import request_log as log_lib
from placedemarche.serving.server import LocalServer

NAME = "product_category"
LABELS = ["Baby Care", "Computers", "Watches"]


def _read(path: str):
    return [tf.train.Example.FromString(r.numpy()).features.feature for r in tf.data.TFRecordDataset(path)]


@pytest.fixture(scope="module")
def pictures(sample_examples):
    records = warmup.read_examples([str(sample_examples / "Split-test" / "*.gz")], 6)
    return [tf.train.Example.FromString(r).features.feature["image_bytes"].bytes_list.value[0] for r in records]


@pytest.fixture(scope="module")
def logged_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("request_log")
    extractor = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 255.0),
                                  keras.layers.GlobalAveragePooling2D()])
    export_lib.export(export_lib.ImageClassifier(extractor, model_lib.build_head(3, 3, 8, 0.0, 1), LABELS, 16),
                      str(root / "model"), {"backbone": "tiny"})
    push_lib.push(str(root / "model"), str(root / "serving"), NAME)
    log = log_lib.RequestLog(str(root / "log"), rate=1.0, seed=0)
    server = LocalServer(NAME, str(root / "serving" / NAME), rest_port=0, grpc_port=0, poll_seconds=0.2,
                         request_log=log).start()
    yield server, log
    server.stop()


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_each_answered_picture_is_logged_with_its_answer(logged_server, pictures, protocol):
    server, log = logged_server
    port = server.rest_port if protocol == "rest" else server.grpc_port
    client = client_lib.make_client(protocol, client_lib.ClientConfig("127.0.0.1", port, NAME, max_batch_size=8))
    client.wait_until_ready(10)
    before = len(_read(log.path))
    result = client.predict(pictures[:3])
    rows = _read(log.path)[before:]
    assert [r["image_bytes"].bytes_list.value[0] for r in rows] == pictures[:3]
    assert [r["predicted_label"].bytes_list.value[0].decode() for r in rows] == [
        LABELS[i] for i in result.probabilities.argmax(axis=1)]
    np.testing.assert_allclose([r["score"].float_list.value[0] for r in rows], result.probabilities.max(axis=1),
                               atol=1e-6)
    assert {r["model_version"].int64_list.value[0] for r in rows} == {1}
    assert {r["signature"].bytes_list.value[0] for r in rows} == {b"serving_default"}
    assert len({r["request_id"].bytes_list.value[0] for r in rows}) == 1  # one request, three pictures
    assert all(abs(r["time_ms"].int64_list.value[0] / 1000 - time.time()) < 60 for r in rows)
    assert all("text" not in r for r in rows)  # an image-only request logs no text


def test_the_sample_rate_is_honoured_and_text_is_kept_per_row(tmp_path):
    outputs = {"label": np.array([b"Watches", b"Computers"]), "score": np.array([0.9, 0.6], np.float32)}
    inputs = {"images": np.array([b"a", b"b"], object), "text": np.array([b"steel watch"], object)}  # one text: all rows
    log = log_lib.RequestLog(str(tmp_path / "some"), rate=0.3, seed=1)
    kept = sum(log.record(2, "serving_default", inputs, outputs) for _ in range(400))
    assert 90 <= kept <= 150 and log.requests == kept and log.examples == 2 * kept
    log.close()
    rows = _read(log.path)
    assert len(rows) == 2 * kept
    assert {r["text"].bytes_list.value[0] for r in rows} == {b"steel watch"}
    none = log_lib.RequestLog(str(tmp_path / "none"), rate=0.0)
    assert not any(none.record(2, "serving_default", inputs, outputs) for _ in range(50))


def test_serving_examples_requests_are_logged_under_the_training_feature_names(tmp_path):
    example = tf.train.Example(features=tf.train.Features(feature={
        "image_bytes": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"jpeg"])),
        "product_name": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"Sonata watch"])),
        "description": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"steel"])),
        "source_format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"PNG"])),
        "width": tf.train.Feature(int64_list=tf.train.Int64List(value=[2400])),
        "height": tf.train.Feature(int64_list=tf.train.Int64List(value=[1800]))})).SerializeToString()
    log = log_lib.RequestLog(str(tmp_path), rate=1.0)
    assert log.record(3, "serving_examples", {"examples": np.array([example], object)},
                      {"label": np.array([b"Watches"]), "score": np.array([0.8], np.float32)})
    log.close()
    (row,) = _read(log.path)
    assert row["image_bytes"].bytes_list.value[0] == b"jpeg" and row["product_name"].bytes_list.value[0] == b"Sonata watch"
    assert row["model_version"].int64_list.value[0] == 3 and "examples" not in row
    # What ingestion recorded of the seller's original travels with it (the picture is the ingested copy).
    assert row["source_format"].bytes_list.value[0] == b"PNG" and row["width"].int64_list.value[0] == 2400


def test_text_only_requests_log_no_picture_and_calls_without_a_label_are_not_logged(tmp_path):
    log = log_lib.RequestLog(str(tmp_path), rate=1.0)
    assert log.record(1, "serving_default", {"text": np.array([b"a watch", b"a sofa"], object)},
                      {"label": np.array([b"Watches", b"Furnishing"]), "score": np.array([0.9, 0.8], np.float32)})
    assert not log.record(1, "serving_pixels", {"pixels": np.zeros((1, 4, 4, 3), np.float32)},
                          {"probabilities": np.array([[0.5, 0.5]], np.float32)})
    log.close()
    rows = _read(log.path)
    assert len(rows) == 2 and all("image_bytes" not in r for r in rows)
    assert [r["text"].bytes_list.value[0] for r in rows] == [b"a watch", b"a sofa"] and log.requests == 1


def test_the_log_stops_at_its_cap_and_a_logging_failure_never_fails_a_request(tmp_path, monkeypatch, caplog):
    outputs = {"label": np.array([b"Watches"]), "score": np.array([0.9], np.float32)}
    inputs = {"images": np.array([b"x" * 1000], object)}
    log = log_lib.RequestLog(str(tmp_path), rate=1.0, max_bytes=5000)
    with caplog.at_level(logging.WARNING):
        written = [log.record(1, "serving_default", inputs, outputs) for _ in range(10)]
    assert written[:3] == [True] * 3 and not any(written[5:]) and log.full
    assert log.written_bytes <= 5000 and "reached its cap" in caplog.text
    monkeypatch.setattr(log_lib, "_examples", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    other = log_lib.RequestLog(str(tmp_path / "other"), rate=1.0)
    with caplog.at_level(logging.ERROR):
        assert other.record(1, "serving_default", inputs, outputs) is False  # no exception
    assert "could not log a request" in caplog.text
    monkeypatch.undo()
    # A write that fails stops the log: nothing is appended after a half-written record.
    broken = log_lib.RequestLog(str(tmp_path / "broken"), rate=1.0)
    monkeypatch.setattr(broken, "_writer", type("W", (), {"write": lambda self, r: (_ for _ in ()).throw(OSError("EIO")),
                                                          "flush": lambda self: None, "close": lambda self: None})())
    assert broken.record(1, "serving_default", inputs, outputs) is False and broken.full
    assert broken.record(1, "serving_default", inputs, outputs) is False


def test_request_log_settings_are_checked():
    with pytest.raises(ConfigError, match="request_log_rate"):
        load_config(None, ["serving.request_log_rate=1.5"])
    assert load_config(None, ["serving.request_log_dir=/tmp/x"]).serving.request_log_rate == 0.1
    with pytest.raises(ValueError, match="between 0 and 1"):
        log_lib.RequestLog(str(Path("/tmp") / "unused-request-log"), rate=2.0)
