"""A hostile or broken catalogue: ingestion reads nothing outside it, loses no row, and says why.

Each test is a small catalogue in the real format (the generated sample's rows, with one row or file
changed) run through the ExampleGen's executor; every assertion would fail on the code before these
protections (files outside the images folder were read, rows vanished, one bad line aborted it all).
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
from pathlib import Path

import pytest
import tensorflow as tf

from placedemarche.components.catalogue_example_gen import catalogue, component
from placedemarche.pipeline import sample_data

SECRET = b"TOP-SECRET-OUTSIDE-THE-CATALOGUE-42"


@pytest.fixture
def base(tmp_path):
    """A 7 x 3 generated catalogue, a secret file beside it, and helpers to edit its rows."""
    data = tmp_path / "data"
    sample_data.make_sample(data, per_class=3, seed=2, show_progress=False)
    (tmp_path / "outside.jpg").write_bytes(SECRET)
    return data


def _csv(data: Path) -> Path:
    return data / sample_data.CSV_NAME


def _rows(data: Path):
    with _csv(data).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _write(data: Path, rows) -> None:
    with _csv(data).open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _ingest(data: Path, out: Path, **params):
    from placedemarche.components.catalogue_example_gen import executor

    try:
        examples, quarantine = component.run_executor(str(data), str(out), max_quarantine_fraction=1.0, **params)
    except executor.NoLabelledRows:  # every row refused: ingestion fails, its report is written all the same
        examples, quarantine = str(out / "examples"), str(out / "quarantine")
    report = json.loads((Path(quarantine) / "quarantine.json").read_text())
    summary = json.loads((Path(quarantine) / "summary.json").read_text())
    records = [r.numpy() for r in tf.data.TFRecordDataset(
        sorted(str(p) for p in Path(examples).glob("Split-*/*.gz")), compression_type="GZIP")]
    return report, summary, records


def _no_secret_anywhere(out: Path) -> None:
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SECRET not in data and (b"TOP-SECRET" not in gzip.decompress(data) if path.suffix == ".gz" else True), path


@pytest.mark.parametrize("name", ["../../outside.jpg", "../outside.jpg", "/etc/hostname", "Images/../../outside.jpg",
                                  "sub//x.jpg", "gs://bucket/x.jpg"])
def test_image_names_that_leave_the_catalogue_are_refused_unread(base, tmp_path, name):
    rows = _rows(base)
    rows[0]["image"] = name
    _write(base, rows)
    report, summary, records = _ingest(base, tmp_path / "out")
    entry = next(q for q in report if q["uniq_id"] == rows[0]["uniq_id"])
    assert entry["reason"] == "unsafe_image_path"
    assert "inside the images folder" in entry["detail"]
    assert summary["examples"]["train"] + summary["examples"]["eval"] + summary["examples"]["test"] == len(rows) - 1
    _no_secret_anywhere(tmp_path / "out")
    hostname = Path("/etc/hostname").read_bytes().strip() if Path("/etc/hostname").exists() else b""
    if hostname:
        assert hostname not in (tmp_path / "out" / "quarantine" / "quarantine.json").read_bytes()


def test_a_symlink_out_of_the_images_folder_is_refused(base, tmp_path):
    rows = _rows(base)
    os.symlink(tmp_path / "outside.jpg", base / "Images" / "link.jpg")
    rows[1]["image"] = "link.jpg"
    _write(base, rows)
    report, _, _ = _ingest(base, tmp_path / "out")
    entry = next(q for q in report if q["uniq_id"] == rows[1]["uniq_id"])
    assert entry["reason"] == "unsafe_image_path" and "symbolic link" in entry["detail"]
    _no_secret_anywhere(tmp_path / "out")


def test_a_fifo_and_a_folder_are_not_read(base, tmp_path):
    rows = _rows(base)
    os.mkfifo(base / "Images" / "pipe.jpg")
    (base / "Images" / "folder.jpg").mkdir()
    rows[0]["image"], rows[1]["image"] = "pipe.jpg", "folder.jpg"
    _write(base, rows)
    signal.alarm(60)  # a blocking read of the FIFO would hang the test: fail it instead
    try:
        report, _, _ = _ingest(base, tmp_path / "out")
    finally:
        signal.alarm(0)
    reasons = {q["uniq_id"]: q["reason"] for q in report}
    assert reasons[rows[0]["uniq_id"]] == "not_a_regular_file"
    assert reasons[rows[1]["uniq_id"]] == "not_a_regular_file"


def test_compressed_files_are_not_decompressed_by_extension(base, tmp_path):
    rows = _rows(base)
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))  # 64 MB of zeros in about 64 KB
    (base / "Images" / "bomb.gz").write_bytes(bomb)
    (base / "Images" / "bomb.bz2").write_bytes(gzip.compress(b"\0" * (32 * 1024 * 1024)))  # another picture
    rows[0]["image"], rows[1]["image"] = "bomb.gz", "bomb.bz2"
    _write(base, rows)
    report, _, _ = _ingest(base, tmp_path / "out")
    for row in rows[:2]:
        entry = next(q for q in report if q["uniq_id"] == row["uniq_id"])
        assert entry["reason"] == "not_an_image"
        assert "\\x1f\\x8b" in entry["detail"]  # it read the gzip bytes as they are, not 64 MB of zeros


def test_a_file_over_the_size_limit_is_refused_without_reading_it(base, tmp_path):
    rows = _rows(base)
    (base / "Images" / "huge.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 3000)
    rows[0]["image"] = "huge.jpg"
    _write(base, rows)
    report, _, _ = _ingest(base, tmp_path / "out", max_image_bytes=2000)
    entry = next(q for q in report if q["uniq_id"] == rows[0]["uniq_id"])
    assert entry["reason"] == "image_too_large" and "3003 bytes" in entry["detail"]


def test_an_unbalanced_quote_loses_no_row(base, tmp_path):
    text = _csv(base).read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    header, body = lines[0], lines[1:]
    # Line 3 (the second row) gets a quote opened inside a quoted field and never closed.
    broken = body[1].replace(',"Key Features', ',"Key "Features', 1) if ',"Key Features' in body[1] else \
        body[1].replace(",", ',"', 3)
    assert broken != body[1]
    _csv(base).write_text(header + body[0] + broken + "".join(body[2:]), encoding="utf-8")
    rows_in = len(body)
    report, summary, records = _ingest(base, tmp_path / "out")
    examples = sum(summary["examples"].values())
    assert examples + len(report) == rows_in  # every row is an example or quarantined, none vanished
    assert any(q["row"] == 3 and q["reason"] == "malformed_row" for q in report)
    assert examples >= rows_in - 2  # the rows after the bad line are read


def test_nul_bytes_and_over_long_fields_refuse_their_row_only(base, tmp_path):
    rows = _rows(base)
    rows[1]["description"] = "x" * 200_000  # over csv's default 128 KiB field limit: accepted
    rows[2]["description"] = "y" * (catalogue.MAX_FIELD_BYTES + 10)  # over the parser's limit: refused
    rows[0]["description"] = "NUL-HERE"
    _write(base, rows)
    _csv(base).write_bytes(_csv(base).read_bytes().replace(b"NUL-HERE", b"nice\x00shoe"))  # csv cannot write one
    report, summary, _ = _ingest(base, tmp_path / "out")
    by_line = {q["row"]: q for q in report}
    assert by_line[2]["reason"] == "malformed_row" and "NUL" in by_line[2]["detail"]
    assert by_line[4]["reason"] == "field_too_long"
    assert 3 not in by_line
    assert sum(summary["examples"].values()) == len(rows) - 2


@pytest.mark.parametrize("category", ['["Watches\\r\\n >> Wrist"]', '["Wat\\tches >> Wrist"]'])
def test_category_names_with_control_characters_are_refused(base, tmp_path, category):
    rows = _rows(base)
    rows[0]["product_category_tree"] = category.encode().decode("unicode_escape")
    _write(base, rows)
    report, _, _ = _ingest(base, tmp_path / "out")
    entry = next(q for q in report if q["uniq_id"] == rows[0]["uniq_id"])
    assert entry["reason"] == "bad_category"


def test_a_catalogue_that_is_not_utf8_names_the_byte(base, tmp_path):
    _csv(base).write_bytes(_csv(base).read_bytes() + b"\xff\xfe broken\n")
    with pytest.raises(ValueError, match=r"is not UTF-8 text: byte \d+ \(line \d+\)"):
        _ingest(base, tmp_path / "out")
