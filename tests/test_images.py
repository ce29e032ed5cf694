"""normalise_image: every input form becomes an upright RGB JPEG within the size cap, or a reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from placedemarche.components.catalogue_example_gen.images import ImageRejected, normalise_image


def _picture(width=120, height=80) -> Image.Image:
    """Left half red, right half blue: orientation and colour are easy to check."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (220, 20, 20)
    pixels[:, width // 2 :] = (20, 20, 220)
    return Image.fromarray(pixels, "RGB")


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    assert img.format == "JPEG"
    img.load()
    return img


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_other_formats_become_rgb_jpeg(fmt):
    out = normalise_image(_encode(_picture(), fmt), max_side=600)
    img = _decode(out.jpeg)
    assert img.mode == "RGB" and img.size == (120, 80)
    assert out.source_format == fmt and out.reencoded
    left, right = np.asarray(img)[40, 10], np.asarray(img)[40, 110]
    assert left[0] > 150 and left[2] < 100  # red stays red (GIF's palette included)
    assert right[2] > 150 and right[0] < 100


def test_conforming_jpeg_keeps_its_bytes():
    data = _encode(_picture(), "JPEG", quality=95)
    out = normalise_image(data, max_side=600)
    assert out.jpeg == data and not out.reencoded


def test_cmyk_grayscale_and_palette_become_rgb():
    for img in (_picture().convert("CMYK"), _picture().convert("L"), _picture().convert("P")):
        fmt = "JPEG" if img.mode in ("CMYK", "L") else "PNG"
        out = _decode(normalise_image(_encode(img, fmt)).jpeg)
        assert out.mode == "RGB"


def test_alpha_is_composited_over_white():
    rgba = _picture().convert("RGBA")
    alpha = np.full((80, 120), 255, np.uint8)
    alpha[:20] = 0  # transparent top band
    rgba.putalpha(Image.fromarray(alpha, "L"))
    out = np.asarray(_decode(normalise_image(_encode(rgba, "PNG")).jpeg)).astype(int)
    assert (out[5, 5] > 240).all()  # white where transparent
    assert out[60, 10, 0] > 150 and out[60, 10, 2] < 100  # red where opaque


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to display
    data = _encode(_picture(120, 80), "JPEG", exif=exif.tobytes())
    out = normalise_image(data)
    img = _decode(out.jpeg)
    assert img.size == (80, 120) and (out.width, out.height) == (80, 120)
    pixels = np.asarray(img).astype(int)
    assert pixels[10, 40, 0] > 150  # the red (left) half is now on top
    assert pixels[110, 40, 2] > 150


def test_longest_side_is_capped_and_original_size_recorded():
    out = normalise_image(_encode(_picture(1500, 900), "PNG"), max_side=600)
    assert _decode(out.jpeg).size == (600, 360)
    assert (out.width, out.height) == (1500, 900)


def test_huge_jpeg_is_decoded_downscaled_not_refused():
    # 4000 x 4000 = 16 M pixels, above the 1 M limit: only scaled JPEG decoding can accept it.
    data = _encode(_picture(4000, 4000), "JPEG", quality=50)
    out = normalise_image(data, max_side=500, max_pixels=1_000_000)
    assert max(_decode(out.jpeg).size) == 500
    assert (out.width, out.height) == (4000, 4000)


def test_decompression_bomb_is_refused_before_decoding():
    data = _encode(Image.new("1", (5000, 5000)), "PNG")  # tiny file, 25 M pixels declared
    assert len(data) < 100_000
    with pytest.raises(ImageRejected) as e:
        normalise_image(data, max_pixels=10_000_000)
    assert e.value.reason == "decompression_bomb"
    assert "5000 x 5000" in e.value.detail


@pytest.mark.parametrize(
    "data, reason, detail",
    [
        (b"<html>404</html>", "not_an_image", "not a picture Pillow can identify"),
        (b"", "not_an_image", "not a picture"),
        (_encode(_picture(), "JPEG")[:300], "undecodable_image", "Truncated"),
        (_encode(_picture(), "JPEG")[:-200], "undecodable_image", "JPEG cannot be decoded"),
        (_encode(_picture(), "PNG")[:200], "undecodable_image", ""),
        (_encode(_picture(20, 200), "PNG"), "image_too_small", "20 x 200 pixels"),
    ],
    ids=["html", "empty", "jpeg-header-cut", "jpeg-data-cut", "png-cut", "too-small"],
)
def test_unusable_pictures_are_rejected_with_a_reason(data, reason, detail):
    with pytest.raises(ImageRejected) as e:
        normalise_image(data, min_side=32)
    assert e.value.reason == reason
    assert detail in e.value.detail
