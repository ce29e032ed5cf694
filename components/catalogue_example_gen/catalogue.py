"""Reading a catalogue CSV into rows, labels and splits; plain Python, no TFX or Beam.

Row-level checks that need the whole file (duplicate ids) or no picture (malformed lines, missing
categories) happen here; checks that need the picture happen in ``images`` and the Beam transform.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

# Every reason a row can be quarantined for, with what a person should do about it.
REASONS: Dict[str, str] = {
    "malformed_row": "the CSV line does not have the header's number of fields, has an unbalanced quote or a NUL "
                     "byte: fix its quoting",
    "field_too_long": "a field of the line is longer than the parser's limit (1 MiB): shorten it",
    "bad_category": "the category contains control characters (line breaks, tabs, ...): clean it",
    "unsafe_image_path": "the image name is not a plain file name inside the images folder: fix the name",
    "not_a_regular_file": "the image name is a folder, pipe or device, not a picture file: replace it",
    "image_too_large": "the picture file is larger than data.max_image_bytes: use a smaller file",
    "missing_id": "the id column is empty: give the product its id",
    "duplicate_id": "an earlier row has the same id: remove or re-id one of them",
    "missing_category": "the category column is empty: categorise the product",
    "category_too_shallow": "the category tree has fewer levels than data.label_depth",
    "missing_image_name": "the image column is empty: name the product's photo",
    "missing_image": "the image file is not in the images folder: add it or fix the name",
    "not_an_image": "the file is not a picture (HTML error page, text, ...): replace it",
    "undecodable_image": "the picture is truncated or corrupt: re-export it",
    "image_too_small": "the picture is smaller than data.min_image_side: use a larger photo",
    "decompression_bomb": "the picture declares more pixels than data.max_image_pixels",
    "duplicate_picture": "an earlier product has the same picture under another category",
}

SPLITS: Tuple[str, ...] = ("train", "eval", "test")


@dataclass(frozen=True)
class QuarantineEntry:
    """One refused row: where it is, what it is and why it was refused."""

    row: int  # the line of the CSV file where the record starts, the header being line 1
    uniq_id: str
    image: str
    reason: str
    detail: str
    batch: str = ""  # the batch folder the row came from ("" for a one-folder catalogue)

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class CatalogueRow:
    """A row that passed the CSV-level checks; its picture is checked later."""

    row: int
    uniq_id: str
    image: str
    label: str
    category_path: str  # every level, joined with " >> "
    fields: Dict[str, str] = field(default_factory=dict)  # the other CSV columns, raw text
    batch: str = ""  # the batch folder the row came from ("" for a one-folder catalogue)
    span: int = 0  # that batch's span (its position in name order)

    @property
    def key(self) -> Tuple[int, int]:
        """Where the row is in the whole catalogue: (span, CSV line); unique across batches."""
        return self.span, self.row

    @property
    def where(self) -> str:
        """``row 17`` or ``row 17 of batch '2026-12-01'``."""
        return f"row {self.row}" + (f" of batch '{self.batch}'" if self.batch else "")


@dataclass(frozen=True)
class Columns:
    """Which CSV columns hold the id, the image file name and the category tree."""

    id: str = "uniq_id"
    image: str = "image"
    category: str = "product_category_tree"


def parse_category(tree: str) -> List[str]:
    """Splits a Flipkart category tree into its levels.

    ``'["Home Furnishing >> Curtains & Accessories >> Curtains"]'`` gives
    ``["Home Furnishing", "Curtains & Accessories", "Curtains"]``. A plain ``"A > B"`` or ``"A >> B"``
    string (other catalogues) works too. Empty levels are dropped.
    """
    text = tree.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1].strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1]
    separator = ">>" if ">>" in text else ">"
    return [level.strip() for level in text.split(separator) if level.strip()]


def split_position(key: str, salt: str) -> float:
    """A stable position in [0, 1) for ``key``: the same key and salt always give the same value."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(key: str, salt: str, test_fraction: float, eval_fraction: float) -> str:
    """The split of a product from its key alone (its uniq_id, or its picture group's first id).

    ``test_fraction`` of positions go to test; ``eval_fraction`` of the rest to eval. A product's
    split depends on nothing else, so adding rows never moves existing products, and each category
    gets the ratios in expectation (the draw is independent of the label).
    """
    p = split_position(key, salt)
    if p < test_fraction:
        return "test"
    if p < test_fraction + (1.0 - test_fraction) * eval_fraction:
        return "eval"
    return "train"


def read_catalogue(
    text: str,
    columns: Columns = Columns(),
    label_depth: int = 1,
    require_category: bool = True,
    keep_unlabelled: bool = False,
) -> Tuple[List[CatalogueRow], List[QuarantineEntry], int]:
    """Parses the CSV text and applies the checks that need no picture.

    Args:
      text: the CSV file's content (UTF-8 decoded, header first).
      columns: which columns hold the id, image name and category tree.
      label_depth: which level of the category tree is the label (1-based).
      require_category: False for listings to categorise: the category column may be absent, and a
        row without a category, or with one that cannot be read (control characters, fewer levels
        than ``label_depth``), is kept without a category.
      keep_unlabelled: a row whose category is empty is kept with ``label`` and ``category_path``
        empty (ingestion's unlabelled split) instead of being quarantined as ``missing_category``;
        a category that is present is still checked.

    Returns:
      ``(rows, quarantined, total)``: the rows to look at further, the refused ones and the number
      of data records read.

    Raises:
      ValueError: the header lacks one of ``columns`` (names the missing and the present ones).
    """
    lines = io.StringIO(text, newline="").readlines()  # as csv reads them: \n, \r\n or \r end a line
    if not lines:
        raise ValueError("the CSV file is empty (no header line)")
    try:
        header = next(csv.reader([lines[0]]))
    except csv.Error as e:
        raise ValueError(f"the CSV header (line 1) cannot be parsed: {e}") from None
    header = [h.strip() for h in header]
    if header and header[0].startswith("\ufeff"):
        header[0] = header[0][1:]
    required = (columns.id, columns.image, columns.category) if require_category else (columns.id, columns.image)
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(
            f"the CSV header lacks the column(s) {', '.join(repr(m) for m in missing)}; it has: "
            f"{', '.join(header)}. Set data.id_column / data.image_column / data.category_column."
        )
    rows: List[CatalogueRow] = []
    quarantined: List[QuarantineEntry] = []
    seen: Dict[str, int] = {}
    total = 0
    for line_number, record, problem in _records(lines, len(header)):
        if problem is None and (not record or (len(record) == 1 and not record[0].strip())):
            continue  # blank line
        total += 1
        if problem is not None:
            reason, detail = problem
            quarantined.append(QuarantineEntry(line_number, (record or [""])[0][:64], "", reason, detail))
            continue
        if len(record) != len(header):
            quarantined.append(
                QuarantineEntry(
                    line_number, record[0][:64] if record else "", "", "malformed_row",
                    f"{len(record)} fields where the header has {len(header)}",
                )
            )
            continue
        values = dict(zip(header, record))
        uniq_id = values[columns.id].strip()
        image = values[columns.image].strip()

        def refuse(reason: str, detail: str) -> None:
            quarantined.append(QuarantineEntry(line_number, uniq_id, image, reason, detail))

        if not uniq_id:
            refuse("missing_id", f"column '{columns.id}' is empty")
            continue
        if uniq_id in seen:
            refuse("duplicate_id", f"same {columns.id} as row {seen[uniq_id]}")
            continue
        seen[uniq_id] = line_number
        levels = parse_category(values.get(columns.category, ""))
        if not require_category and levels and (
                _CONTROL.search(values[columns.category]) or len(levels) < label_depth):
            levels = []  # listings to categorise: a seller category that cannot be read counts as none
        if not levels and (keep_unlabelled or not require_category):
            if not image:
                refuse("missing_image_name", f"column '{columns.image}' is empty")
                continue
            others = {k: v for k, v in values.items() if k not in (columns.id, columns.image, columns.category)}
            rows.append(CatalogueRow(line_number, uniq_id, image, "", "", others))
            continue
        if not levels:
            refuse("missing_category", f"column '{columns.category}' is empty")
            continue
        if _CONTROL.search(values[columns.category]):  # a label with a line break would shift labels.txt
            refuse("bad_category", f"column '{columns.category}' holds control characters (line breaks, tabs, ...)")
            continue
        if len(levels) < label_depth:
            refuse(
                "category_too_shallow",
                f"'{' >> '.join(levels)}' has {len(levels)} level(s); label_depth is {label_depth}",
            )
            continue
        if not image:
            refuse("missing_image_name", f"column '{columns.image}' is empty")
            continue
        others = {k: v for k, v in values.items() if k not in (columns.id, columns.image, columns.category)}
        rows.append(
            CatalogueRow(line_number, uniq_id, image, levels[label_depth - 1], " >> ".join(levels), others)
        )
    return rows, quarantined, total


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_FIELD_BYTES = 1024 * 1024


def _records(lines: Sequence[str], fields: int) -> Iterator[Tuple[int, List[str], Optional[Tuple[str, str]]]]:
    """``(line number, fields, problem)`` for each CSV record after the header; nothing is lost.

    Each record is parsed from the physical line where it starts. A quoted field may span lines; but
    one whose continuation lines are themselves whole records (an unbalanced quote swallowing the
    rest of the catalogue) is refused at its own line, and parsing goes on at the next line, so the
    rows after it are read. A NUL byte or an over-long field refuses that record only.
    """
    csv.field_size_limit(MAX_FIELD_BYTES)
    i = 1
    while i < len(lines):
        reader = csv.reader(iter(lines[i:]))
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            message = str(e)
            problem = ("field_too_long", f"a field is over {MAX_FIELD_BYTES} bytes") if "field larger" in message \
                else ("malformed_row", f"cannot be parsed ({message})")
            yield i + 1, [], problem
            i += 1
            continue
        span = max(1, reader.line_num)
        if span > 1 and _swallows_records(lines[i + 1:i + span], fields):
            yield i + 1, record[:1], ("malformed_row", "unbalanced quote: its field runs over the following "
                                      f"{span - 1} line(s), which hold rows of their own; they are read as such")
            i += 1
            continue
        yield i + 1, record, None
        i += span


def _swallows_records(continuation: Sequence[str], fields: int) -> bool:
    """Whether continuation lines of a multi-line field look like CSV records of their own."""
    for line in continuation:
        try:
            parsed = next(csv.reader([line]))
        except (csv.Error, StopIteration):
            continue
        if len(parsed) == fields:
            return True
    return False


def resolve_shared_pictures(
    members: Sequence[Tuple[object, str, str]], describe=lambda row: f"row {row}",
) -> Tuple[Dict[object, str], List[Tuple[object, str]]]:
    """Decides what happens to rows that share the exact same picture.

    Args:
      members: ``(row, uniq_id, label)`` of every row whose image file has the same content; ``row``
        is any sortable key in catalogue order (a CSV line, or ``(span, line)`` across batches).
      describe: how a detail names a row.

    Returns:
      ``(kept, refused)``: ``kept`` maps each kept row to its split key (the first row's uniq_id, so
      the whole group lands in one split and test pictures never leak into training); ``refused``
      lists ``(row, detail)`` for rows whose label differs from the first row's (a picture cannot
      show two categories).
    """
    ordered = sorted(members)
    first_row, first_id, first_label = ordered[0]
    kept: Dict[int, str] = {}
    refused: List[Tuple[int, str]] = []
    for row, uniq_id, label in ordered:
        if label == first_label:
            kept[row] = first_id
        else:
            refused.append(
                (row, f"same picture as {describe(first_row)} (id {first_id}) labelled '{first_label}', "
                      f"this row says '{label}'")
            )
    return kept, refused


def top_reasons(entries: Iterable[QuarantineEntry], n: int = 3) -> str:
    """``"missing_image: 3, duplicate_id: 1"`` for the ``n`` most frequent reasons."""
    counts: Dict[str, int] = {}
    for e in entries:
        counts[e.reason] = counts.get(e.reason, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return ", ".join(f"{reason}: {count}" for reason, count in ranked)


def parse_float(text: Optional[str]) -> Optional[float]:
    """A price or rating as float, or None for empty / non-numeric text ("No rating available")."""
    if text is None:
        return None
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        return None
    return value if value == value else None  # NaN is "missing"
