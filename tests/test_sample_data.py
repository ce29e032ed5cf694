"""make-sample writes a catalogue in the real one's format, with the intended content and defects."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, UnidentifiedImageError

from placedemarche.pipeline import sample_data
from placedemarche.pipeline.cli import main

# The pandas dtypes of flipkart_com-ecommerce_sample_1050.csv, read with plain pd.read_csv.
REAL_DTYPES = {
    "uniq_id": "object", "crawl_timestamp": "object", "product_url": "object",
    "product_name": "object", "product_category_tree": "object", "pid": "object",
    "retail_price": "float64", "discounted_price": "float64", "image": "object",
    "is_FK_Advantage_product": "bool", "description": "object", "product_rating": "object",
    "overall_rating": "object", "brand": "object", "product_specifications": "object",
}


def _top_level(tree: str) -> str:
    return tree.split(" >> ")[0].lstrip('["')


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The issue's example: make-sample OUT --per-class 20 --defects, through the CLI."""
    out = tmp_path_factory.mktemp("s")
    assert main(["-q", "make-sample", str(out), "--per-class", "20", "--defects"]) == 0
    frame = pd.read_csv(out / sample_data.CSV_NAME)
    manifest = json.loads((out / sample_data.MANIFEST_NAME).read_text())
    return out, frame, manifest


def test_columns_and_dtypes_match_the_real_catalogue(sample):
    _, frame, _ = sample
    assert len(frame) >= 140
    assert list(frame.columns) == list(sample_data.CSV_COLUMNS) == list(REAL_DTYPES)
    assert {c: str(t) for c, t in frame.dtypes.items()} == REAL_DTYPES


def test_columns_and_dtypes_match_the_shared_file_when_present(sample, flipkart_dir):
    _, frame, _ = sample
    real = pd.read_csv(flipkart_dir / "flipkart_com-ecommerce_sample_1050.csv")
    assert list(frame.columns) == list(real.columns)
    assert (frame.dtypes == real.dtypes).all()


def test_label_distribution_is_per_class_plus_the_defect_rows(sample):
    _, frame, manifest = sample
    assert manifest["clean_rows"] == 140
    assert len(frame) == 140 + len(sample_data.DEFECTS)
    clean = frame.iloc[:140]
    counts = clean["product_category_tree"].map(_top_level).value_counts().to_dict()
    assert counts == {c.name: 20 for c in sample_data.CATEGORIES}
    # Defect rows name their category in the manifest (or none for the empty-category row).
    for entry in manifest["defects"]:
        row = frame.iloc[entry["row"] - 2]
        assert row["uniq_id"] == entry["uniq_id"]
        if entry["category"] is None:
            assert pd.isna(row["product_category_tree"])
        else:
            assert _top_level(row["product_category_tree"]) == entry["category"]


def test_every_defect_is_present_as_intended(sample):
    out, frame, manifest = sample
    images = out / sample_data.IMAGES_DIR
    by_kind = {e["kind"]: e for e in manifest["defects"]}
    assert set(by_kind) == set(sample_data.DEFECTS)

    assert not (images / by_kind["missing_image"]["image"]).exists()
    with pytest.raises(OSError):  # truncated: the header parses, the pixels do not
        Image.open(images / by_kind["truncated_jpeg"]["image"]).load()
    with pytest.raises(UnidentifiedImageError):
        Image.open(images / by_kind["not_an_image"]["image"])
    assert Image.open(images / by_kind["tiny_image"]["image"]).size == (8, 8)
    assert Image.open(images / by_kind["grayscale"]["image"]).mode == "L"
    rgba = Image.open(images / by_kind["png_alpha"]["image"])
    assert rgba.format == "PNG" and rgba.mode == "RGBA"
    assert np.asarray(rgba)[..., 3].min() == 0  # some pixels really are transparent
    cmyk = Image.open(images / by_kind["cmyk_jpeg"]["image"])
    assert cmyk.format == "JPEG" and cmyk.mode == "CMYK"

    ids = frame["uniq_id"].tolist()
    assert ids.count(by_kind["duplicate_id"]["uniq_id"]) == 2
    dup_pic = by_kind["duplicate_picture"]["image"]
    original = frame.iloc[1]["image"]
    assert dup_pic != original
    assert (images / dup_pic).read_bytes() == (images / original).read_bytes()
    assert frame["product_category_tree"].isna().sum() == 1

    # Every row except the missing one has its file.
    missing = [f for f in frame["image"] if not (images / f).exists()]
    assert missing == [by_kind["missing_image"]["image"]]


def test_clean_pictures_are_valid_varied_jpeg_and_png(sample):
    out, frame, _ = sample
    formats, sizes = set(), set()
    for name in frame["image"].iloc[:140]:
        with Image.open(out / sample_data.IMAGES_DIR / name) as img:
            img.load()
            assert img.mode == "RGB"
            formats.add(img.format)
            sizes.add(img.size)
            assert name.endswith(".jpg" if img.format == "JPEG" else ".png")
    assert formats == {"JPEG", "PNG"}
    assert len(sizes) > 100  # varied sizes and aspect ratios
    ratios = [w / h for w, h in sizes]
    assert min(ratios) < 0.8 and max(ratios) > 1.2


def _colour_features(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        hsv = np.asarray(img.convert("RGB").resize((48, 48)).convert("HSV"), dtype=np.float32)
    saturated = hsv[..., 1] > 80  # the product, not the pale background
    hist, _ = np.histogram(hsv[..., 0][saturated], bins=24, range=(0, 256))
    return hist / max(1, hist.sum())


def test_category_is_learnable_from_pixels(sample):
    """A nearest-centroid classifier on colour histograms alone beats chance (1/7) by far."""
    out, frame, _ = sample
    clean = frame.iloc[:140]
    x = np.stack([_colour_features(out / sample_data.IMAGES_DIR / f) for f in clean["image"]])
    y = clean["product_category_tree"].map(_top_level).to_numpy()
    train = np.arange(len(y)) % 2 == 0
    labels = sorted(set(y))
    centroids = np.stack([x[train & (y == lab)].mean(axis=0) for lab in labels])
    pred = np.array(labels)[np.argmin(((x[~train, None, :] - centroids) ** 2).sum(-1), axis=1)]
    assert (pred == y[~train]).mean() > 0.6


def _digest(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_other_catalogue(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        sample_data.make_sample(tmp_path / name, per_class=2, seed=seed, defects=True, show_progress=False)
    a, b, c = (_digest(tmp_path / n) for n in "abc")
    assert a == b
    assert a[sample_data.CSV_NAME] != c[sample_data.CSV_NAME]


def test_refuses_to_overwrite_a_catalogue(tmp_path, capsys):
    sample_data.make_sample(tmp_path, per_class=1, show_progress=False)
    before = _digest(tmp_path)
    assert main(["-q", "make-sample", str(tmp_path), "--per-class", "1", "--seed", "9"]) == 2
    assert "already holds a catalogue" in capsys.readouterr().err
    assert _digest(tmp_path) == before  # nothing lost


def test_refuses_bad_arguments(tmp_path, capsys):
    assert main(["-q", "make-sample", str(tmp_path / "x"), "--per-class", "0"]) == 2
    assert "per_class must be at least 1, got 0" in capsys.readouterr().err
