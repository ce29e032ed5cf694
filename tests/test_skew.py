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
