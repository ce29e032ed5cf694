"""Catalogue parsing, labels and splits (plain functions, no Beam)."""

from __future__ import annotations

import collections
import csv
import io

import pytest

from placedemarche.components.catalogue_example_gen import catalogue
from placedemarche.components.catalogue_example_gen.catalogue import Columns, assign_split, parse_category, read_catalogue


def test_parse_category_levels():
    tree = '["Home Furnishing >> Curtains & Accessories >> Curtains >> Elegance Polyester..."]'
    assert parse_category(tree)[:3] == ["Home Furnishing", "Curtains & Accessories", "Curtains"]
    assert parse_category("Toys > Puzzles") == ["Toys", "Puzzles"]
    assert parse_category('[""]') == [] and parse_category("") == []


def _csv(rows, header=("uniq_id", "image", "product_category_tree", "brand")) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def test_read_catalogue_refuses_bad_rows_with_row_numbers():
    text = _csv([
        ["a", "a.jpg", '["Watches >> Wrist Watches"]', "Titan"],
        ["b", "b.jpg", "", "x"],
        ["a", "c.jpg", '["Watches >> Clocks"]', "y"],
        ["d", "", '["Baby Care >> Bibs"]', "z"],
        ["e", "e.jpg", '["Computers"]', "w"],
        ["", "f.jpg", '["Computers >> Mice"]', "v"],
    ]) + 'g,g.jpg,"[""Watches >> X""]",brand,EXTRA\n'
    rows, refused, total = read_catalogue(text, label_depth=2)
    assert total == 7
    assert [(r.uniq_id, r.label, r.category_path) for r in rows] == [("a", "Wrist Watches", "Watches >> Wrist Watches")]
    assert rows[0].row == 2 and rows[0].fields == {"brand": "Titan"}
    assert [(q.row, q.uniq_id, q.reason) for q in refused] == [
        (3, "b", "missing_category"),
        (4, "a", "duplicate_id"),
        (5, "d", "missing_image_name"),
        (6, "e", "category_too_shallow"),
        (7, "", "missing_id"),
        (8, "g", "malformed_row"),
    ]
    assert refused[1].detail == "same uniq_id as row 2"
    assert refused[5].detail == "5 fields where the header has 4"
    assert set(q.reason for q in refused) <= set(catalogue.REASONS)


def test_other_column_names_and_missing_columns():
    text = _csv([["p1", "p1.png", "Toys > Puzzles"]], header=("sku", "photo", "category"))
    rows, _, _ = read_catalogue(text, Columns(id="sku", image="photo", category="category"))
    assert (rows[0].uniq_id, rows[0].image, rows[0].label) == ("p1", "p1.png", "Toys")
    with pytest.raises(ValueError, match=r"lacks the column\(s\) 'uniq_id', 'image', 'product_category_tree'; it has: sku, photo, category"):
        read_catalogue(text)


def test_splits_are_stable_when_rows_are_added():
    ids = [f"id{i}" for i in range(2000)]
    first = {i: assign_split(i, "salt", 0.2, 0.25) for i in ids[:1000]}
    again = {i: assign_split(i, "salt", 0.2, 0.25) for i in ids}
    assert all(again[i] == first[i] for i in first)
    assert {i: assign_split(i, "other", 0.2, 0.25) for i in ids[:1000]} != first  # the salt reshuffles


def test_split_ratios_hold_per_label():
    """Each label gets about 20 % test, 20 % eval (25 % of the rest), 60 % train."""
    counts = collections.Counter(assign_split(f"label{k}-{i}", "s", 0.2, 0.25) for k in range(7) for i in range(150))
    for k in range(7):
        per = collections.Counter(assign_split(f"label{k}-{i}", "s", 0.2, 0.25) for i in range(150))
        # 150 draws: a binomial standard deviation of about 5 for the 20 % splits; allow 3 of them.
        assert abs(per["test"] - 30) <= 15 and abs(per["eval"] - 30) <= 15 and abs(per["train"] - 90) <= 18
    total = sum(counts.values())
    assert abs(counts["test"] / total - 0.2) < 0.03 and abs(counts["eval"] / total - 0.2) < 0.03


def test_shared_pictures_same_label_stay_together_other_label_refused():
    kept, refused = catalogue.resolve_shared_pictures([(9, "z", "A"), (3, "x", "A"), (5, "y", "B")])
    assert kept == {3: "x", 9: "x"}  # grouped under the first row's id: one split for both
    assert refused == [(5, "same picture as row 3 (id x) labelled 'A', this row says 'B'")]


def test_parse_float_and_top_reasons():
    assert catalogue.parse_float("1,899.0") == 1899.0
    assert catalogue.parse_float("No rating available") is None
    assert catalogue.parse_float("nan") is None
    entries = [catalogue.QuarantineEntry(i, "", "", r, "") for i, r in enumerate("aabccc")]
    assert catalogue.top_reasons(entries, 2) == "c: 3, a: 2"


def test_small_classes_are_reported_not_a_crash():
    from placedemarche.components.catalogue_example_gen.executor import summarise

    counts = [["train", "Toys", 3], ["train", "Watches", 5], ["eval", "Watches", 2], ["test", "Watches", 2]]
    summary = summarise(12, counts, [], "x.csv")
    assert summary["examples"] == {"train": 8, "eval": 2, "test": 2}
    assert summary["labels"] == {"Toys": 3, "Watches": 9}
    assert summary["notices"] == [
        "category 'Toys' has 3 example(s) and none in the eval/test split(s): it cannot be trained "
        "and evaluated fairly; add products or lower data.label_depth"
    ]


@pytest.mark.realdata
def test_label_depth_two_gives_the_62_subcategories(flipkart_dir):
    """The often-quoted 63 comes from a naive split: 'Home Furnishing >> Living"]' (a two-level
    tree) then counts 'Living"]' apart from 'Living'. Parsed properly there are 62."""
    text = (flipkart_dir / "flipkart_com-ecommerce_sample_1050.csv").read_text(encoding="utf-8")
    rows, refused, total = read_catalogue(text, label_depth=2)
    assert total == 1050 and refused == []
    assert len({r.label for r in rows}) == 62
    assert sum(r.label == "Living" for r in rows) == 6  # 2 two-level trees + 4 deeper ones
    first_level, _, _ = read_catalogue(text)
    assert collections.Counter(r.label for r in first_level) == {
        name: 150 for name in (
            "Home Furnishing", "Baby Care", "Watches", "Home Decor & Festive Needs",
            "Kitchen & Dining", "Beauty and Personal Care", "Computers",
        )
    }
