"""Decoding and normalising one catalogue picture; plain Python, no TFX or Beam.

Any format Pillow reads (JPEG, PNG, WebP, GIF, BMP, ...) in any mode (CMYK, alpha, grayscale,
palette, 16-bit) becomes an RGB JPEG with EXIF orientation applied and the longest side capped.
Pictures that cannot be used raise :class:`ImageRejected` with a quarantine reason and a detail.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Tuple

from PIL import Image, ImageOps, UnidentifiedImageError

# Quarantine reasons of this module (see catalogue.REASONS for the full list).
UNREADABLE = "not_an_image"
TRUNCATED = "undecodable_image"
TOO_SMALL = "image_too_small"
BOMB = "decompression_bomb"

_EXIF_ORIENTATION = 0x0112


class ImageRejected(Exception):
    """A picture that cannot become an example; ``reason`` is a quarantine reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class NormalisedImage:
    """An RGB JPEG ready for the TFRecords, with what is known of the original."""

    jpeg: bytes
    width: int  # of the original, after EXIF orientation
    height: int
    source_format: str  # Pillow's name of the original format, e.g. "JPEG", "PNG"
    reencoded: bool  # False when the original bytes were already a conforming JPEG


def header(data: bytes) -> Tuple[str, int, int]:
    """``(format, width, height)`` of a picture from its header, without decoding it: the size as
    ingestion records it (after the EXIF orientation, whatever the pixel count).

    Raises:
      ImageRejected: not a picture, or an unreadable header.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.MAX_IMAGE_PIXELS = None  # type: ignore[attr-defined]
            width, height = img.size
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except UnidentifiedImageError:
        raise ImageRejected(UNREADABLE, f"not a picture Pillow can identify (starts with {data[:16]!r})")
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError) as e:
        raise ImageRejected(TRUNCATED, f"cannot read the header: {e}")
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return (img.format or "unknown"), width, height


def normalise_image(
    data: bytes,
    max_side: int = 600,
    min_side: int = 32,
    max_pixels: int = 60_000_000,
    quality: int = 90,
) -> NormalisedImage:
    """Decodes ``data`` and returns it as an RGB JPEG whose longest side is at most ``max_side``.

    JPEGs are decoded at reduced scale (libjpeg's DCT scaling) when they are much larger than
    ``max_side``, so a huge photo never allocates its full bitmap. Other formats are refused when
    their declared size exceeds ``max_pixels`` (a decompression bomb). A JPEG that is already RGB,
    upright and small enough keeps its original bytes (no second lossy encoding).

    Args:
      data: the file's bytes.
      max_side: longest side of the output, in pixels.
      min_side: pictures with a shorter side (after orientation) are rejected.
      max_pixels: largest width x height decoded in full for formats without scaled decoding.
      quality: JPEG quality of re-encoded pictures.

    Returns:
      The normalised picture.

    Raises:
      ImageRejected: not an image, undecodable or truncated, too small, or a decompression bomb.
    """
    try:
        with warnings.catch_warnings():
            # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that; we decide ourselves.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.MAX_IMAGE_PIXELS = None  # type: ignore[attr-defined]
    except UnidentifiedImageError:
        head = data[:16]
        raise ImageRejected(UNREADABLE, f"not a picture Pillow can identify (starts with {head!r})")
    except Image.DecompressionBombError as e:
        raise ImageRejected(BOMB, str(e))
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageRejected(TRUNCATED, f"cannot read the header: {e}")

    source_format = img.format or "unknown"
    width, height = img.size
    if width * height > max_pixels and source_format != "JPEG":
        raise ImageRejected(
            BOMB,
            f"{source_format} of {width} x {height} = {width * height} pixels is above the "
            f"{max_pixels}-pixel limit for full decoding",
        )
    try:
        if source_format == "JPEG":
            # Decode at the smallest DCT scale that still covers max_side (at most 8x smaller).
            img.draft("RGB", (max_side, max_side))
            if img.size[0] * img.size[1] > max_pixels:
                raise ImageRejected(
                    BOMB, f"JPEG of {width} x {height} is too large even at 1/8 scale"
                )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
    except ImageRejected:
        raise
    except Image.DecompressionBombError as e:
        raise ImageRejected(BOMB, str(e))
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageRejected(TRUNCATED, f"{source_format} cannot be decoded: {e}")

    orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    if orientation in (5, 6, 7, 8):  # these turn the picture by 90 degrees
        width, height = height, width
    if min(width, height) < min_side:
        raise ImageRejected(
            TOO_SMALL, f"{width} x {height} pixels; the shorter side must be at least {min_side}"
        )

    if (
        source_format == "JPEG"
        and img.mode == "RGB"
        and orientation == 1
        and max(width, height) <= max_side
        and img.size == (width, height)
    ):
        return NormalisedImage(data, width, height, source_format, reencoded=False)

    img = ImageOps.exif_transpose(img)
    img = _to_rgb(img)
    if max(img.size) > max_side:
        scale = max_side / max(img.size)
        size = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
        img = img.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality)
    return NormalisedImage(out.getvalue(), width, height, source_format, reencoded=True)


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB, with transparency composited over white (how a product page shows a cut-out)."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits before the RGB conversion (Pillow would clip).
        img = img.point(lambda v: v / 256).convert("L")
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, CMYK, YCbCr, 1, F ...
    return img
