"""Served traffic vs training: the rows compared, TFDV's measurements, what counts as moved."""

from __future__ import annotations

import collections
import io

import numpy as np
import pytest
from PIL import Image

from placedemarche.components.trainer import train as train_lib
from placedemarche.pipeline import skew
from placedemarche.serving import request_log as log_lib


@pytest.fixture(scope="module")
def training(sample_examples):
    return skew.training_rows(str(sample_examples))


def _log(tmp_path, pictures, labels, texts):
    log = log_lib.RequestLog(str(tmp_path), rate=1.0)
    for picture, label, text in zip(pictures, labels, texts):
        assert log.record(1, "serving_default", {"images": np.array([picture], object), "text": np.array([text], object)},
                          {"label": np.array([label.encode()]), "score": np.array([0.9], np.float32)})
    log.close()
    return skew.request_rows(str(tmp_path))


def test_training_rows_describe_the_originals_and_the_labels(training, sample_examples):
    train = train_lib.read_examples([str(sample_examples / "Split-train" / "*.gz")], ("product_name", "description"))
    assert len(training) == len(train.ids)
    assert collections.Counter(r["label"] for r in training) == collections.Counter(train.labels)
    assert all(r["picture_width"] > 0 and r["picture_height"] > 0 and r["picture_format"] for r in training)
    assert [r["text_length"] for r in training] == [len(t) for t in train.text(("product_name", "description"))]


def test_traffic_like_training_moves_nothing_and_a_flooded_label_and_bigger_pictures_move(training, sample_examples,
                                                                                            tmp_path):
    train = train_lib.read_examples([str(sample_examples / "Split-train" / "*.gz")], ("product_name", "description"))
    texts = train.text(("product_name", "description"))
    # Pictures as sellers send them: the originals' sizes and formats, as ingestion recorded them.
    sizes = [(r["picture_width"], r["picture_height"], r["picture_format"]) for r in training]

    def picture(w, h, kind):
        out = io.BytesIO()
        Image.new("RGB", (w, h), (90, 120, 30)).save(out, kind)
        return out.getvalue()

    alike = _log(tmp_path / "alike", [picture(w, h, k) for w, h, k in sizes], train.labels, texts)
    report = skew.compare(training, alike, skew.Thresholds())
    assert report["moved"] == [] and report["request_rows"] == len(training)
    assert {m["feature"] for m in report["measurements"]} == {"picture_format", "label", "picture_width",
                                                              "picture_height", "text_length"}
    # One category flooding in, every picture three times larger.
    flooded = _log(tmp_path / "flooded", [picture(3 * w, 3 * h, k) for w, h, k in sizes],
                   [train.labels[0]] * len(sizes), texts)
    report = skew.compare(training, flooded, skew.Thresholds())
    moved = {m["feature"]: m for m in report["moved"]}
    assert {"label", "picture_width", "picture_height"} <= set(moved)
    assert moved["label"]["measure"] == "L-infinity" and moved["label"]["value"] > 0.5
    assert moved["picture_width"]["measure"] == "Jensen-Shannon divergence"
    assert "text_length" not in moved and "picture_format" not in moved


def test_no_log_is_a_clear_error(tmp_path):
    with pytest.raises(skew.SkewError, match="no request log .* serving.request_log_dir"):
        skew.request_rows(str(tmp_path))


def test_features_no_request_carried_are_left_out_not_moved(training, sample_examples, tmp_path):
    """An image-only model's requests carry no text: text length is not compared (it would be 'moved' at 1.0)."""
    train = train_lib.read_examples([str(sample_examples / "Split-train" / "*.gz")])
    pictures = []
    for r in training:
        out = io.BytesIO()
        Image.new("RGB", (r["picture_width"], r["picture_height"]), (9, 9, 9)).save(out, r["picture_format"])
        pictures.append(out.getvalue())
    log = log_lib.RequestLog(str(tmp_path), rate=1.0)
    for picture, label in zip(pictures, train.labels):
        log.record(1, "serving_default", {"images": np.array([picture], object)},
                   {"label": np.array([label.encode()]), "score": np.array([0.9], np.float32)})
    log.close()
    report = skew.compare(training, skew.request_rows(str(tmp_path)), skew.Thresholds())
    assert report["not_compared"] == {"text_length": "no logged request carried it"}
    assert "text_length" not in {m["feature"] for m in report["measurements"]} and report["moved"] == []


def test_a_truncated_log_keeps_its_complete_records(tmp_path):
    log = log_lib.RequestLog(str(tmp_path), rate=1.0)
    for _ in range(3):
        log.record(1, "serving_default", {"images": np.array([b"not a picture"], object)},
                   {"label": np.array([b"Watches"]), "score": np.array([0.9], np.float32)})
    log.close()
    data = open(log.path, "rb").read()
    open(log.path, "wb").write(data[:-10])  # a server killed while writing its last record
    rows = skew.request_rows(str(tmp_path))
    assert len(rows) == 2 and rows[0]["picture_format"] == "UNREADABLE" and rows[0]["label"] == "Watches"


def test_a_rotated_phone_photo_is_measured_as_ingestion_records_it():
    from placedemarche.components.catalogue_example_gen import images

    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    Image.new("RGB", (400, 300)).save(out, "JPEG", exif=exif.tobytes())
    assert images.header(out.getvalue()) == ("JPEG", 300, 400)
