"""Sellers' original photos: bounded decoding inside the model, the pixel cap, ingestion = serving."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from placedemarche.components.catalogue_example_gen import images as ingestion
from placedemarche.components.infra_validator import warmup
from placedemarche.components.trainer import model as model_lib

SIZE = 64


def _decode(data: bytes, max_pixels: int = model_lib.DEFAULT_MAX_PIXELS) -> np.ndarray:
    return model_lib.decode_batch(tf.constant([data]), SIZE, max_pixels).numpy()[0]


def _png_header_only(width: int, height: int) -> bytes:
    """A 60-byte PNG whose header declares ``width`` x ``height`` (a decompression bomb's first bytes)."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _photo(width: int, height: int, fmt: str = "JPEG") -> bytes:
    """A natural-looking picture: a sample product drawn small, then enlarged (like an original)."""
    from placedemarche.pipeline import sample_data
    import random

    small = sample_data.draw_product(sample_data.CATEGORIES[2], random.Random(3), np.random.RandomState(3))
    out = io.BytesIO()
    small.resize((width, height), Image.Resampling.BICUBIC).save(out, format=fmt, quality=90)
    return out.getvalue()


def test_a_picture_over_the_cap_is_refused_before_decoding_naming_it_and_its_size():
    bomb = _png_header_only(100_000, 100_000)  # 60 bytes declaring 10 gigapixels
    start = time.perf_counter()
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
        model_lib.decode_batch(tf.constant([_photo(300, 200), bomb]), SIZE, 60_000_000)
    assert time.perf_counter() - start < 5
    assert "picture 2 of the request: 100000 x 100000 pixels (width x height) is over the 60000000-pixel limit" \
        in e.value.message
    with pytest.raises(tf.errors.InvalidArgumentError, match="picture 1 of the request: not a JPEG, PNG, GIF or BMP"):
        _decode(b"<html>404 not found</html>")
    # A cap of a few pixels refuses an ordinary PNG too: the cap is the model's, not a constant.
    with pytest.raises(tf.errors.InvalidArgumentError, match="300 x 200 pixels .* over the 1000-pixel limit"):
        _decode(_photo(300, 200, "PNG"), max_pixels=1000)


def test_a_15000_x_15000_jpeg_gets_an_answer_decoded_at_an_eighth():
    data = warmup.large_jpeg(15000, 15000)
    height, width = tf.io.extract_jpeg_shape(data).numpy()[:2]
    assert (height, width) == (15000, 15000)
    assert int(model_lib.jpeg_ratio(tf.constant(15000, tf.int64), tf.constant(15000, tf.int64), 224)) == 8
    start = time.perf_counter()
    pixels = model_lib.decode_batch(tf.constant([data]), 224).numpy()[0]
    assert time.perf_counter() - start < 10
    assert pixels.shape == (224, 224, 3) and np.isfinite(pixels).all() and pixels.std() > 10


def test_dct_downscaled_decoding_is_close_to_the_full_decoding():
    data = _photo(2400, 1800)
    assert int(model_lib.jpeg_ratio(tf.constant(1800, tf.int64), tf.constant(2400, tf.int64), SIZE)) == 8
    full = tf.image.resize(tf.cast(tf.io.decode_jpeg(data, channels=3), tf.float32), [SIZE, SIZE], antialias=True).numpy()
    assert np.abs(_decode(data) - full).mean() < 3.0


@pytest.mark.parametrize("width, height, fmt", [(4000, 3000, "JPEG"), (1200, 1600, "JPEG"), (2000, 1500, "PNG")])
def test_ingestion_and_serving_prepare_an_original_alike(width, height, fmt):
    """The same original, ingested (Pillow: DCT draft, longest side 600, JPEG) then decoded as training
    does, or sent to the served model as it is: the pixels the backbone sees differ by less than 3
    grey levels on average (stated tolerance; the README gives the measured figures)."""
    original = _photo(width, height, fmt)
    ingested = ingestion.normalise_image(original, max_side=600).jpeg
    via_ingestion, straight = _decode(ingested), _decode(original)
    assert np.abs(via_ingestion - straight).mean() < 3.0
    assert np.abs(via_ingestion - straight).max() < 60



def test_the_server_names_a_picture_over_the_cap_and_keeps_serving(tmp_path):
    """Through the local server: a PNG that declares 100000 x 100000 pixels is a 400 naming the instance
    and its dimensions; a 15000 x 15000 JPEG is answered; the server keeps serving."""
    import base64
    import http.client
    import json as json_lib

    from placedemarche.components.serving_pusher import push as push_lib
    from placedemarche.components.trainer import backbones, export as export_lib
    from placedemarche.serving.server import LocalServer

    extractor, _ = backbones.build("efficientnet_b0", SIZE, "none")
    head = model_lib.build_head(int(extractor.output_shape[-1]), 3, 8, 0.0, 1)
    export_lib.export(export_lib.ImageClassifier(extractor, head, ["a", "b", "c"], SIZE), str(tmp_path / "m"),
                      {"backbone": "efficientnet_b0", "image_size": SIZE})
    push_lib.push(str(tmp_path / "m"), str(tmp_path / "serving"), "pc")
    server = LocalServer("pc", str(tmp_path / "serving" / "pc"), rest_port=0, grpc_port=0,
                         max_request_bytes=32 * 1024 * 1024).start()

    def predict(*pictures):
        body = json_lib.dumps({"instances": [{"b64": base64.b64encode(p).decode()} for p in pictures]})
        connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=120)
        connection.request("POST", "/v1/models/pc:predict", body=body)
        response = connection.getresponse()
        return response.status, json_lib.loads(response.read())

    try:
        status, answer = predict(_photo(300, 200), _png_header_only(100_000, 100_000))
        assert status == 400
        assert answer["error"].startswith("instance 2 of 2 ('images'): 100000 x 100000 pixels (width x height) is "
                                          "over the 60000000-pixel limit")
        status, answer = predict(warmup.large_jpeg(15000, 15000))
        assert status == 200 and len(answer["predictions"]) == 1
        status, _ = predict(_photo(300, 200))
        assert status == 200
    finally:
        server.stop()
