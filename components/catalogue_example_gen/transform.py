"""The Beam part of ingestion: catalogue rows in, serialized tf.Examples per split out.

Stages (memory stays flat in the number of rows: picture bytes never cross a shuffle):

1. ``HashPictures``: read each row's file once to hash it (missing files are quarantined here).
2. ``GroupByKey`` on the hash, ``ResolveSharedPictures``: products sharing one picture with the same
   label stay together (one split); a later product whose label differs is quarantined.
3. ``MakeExamples``: read, decode and normalise the picture, build the ``tf.Example`` and route it to
   its split, or quarantine the row with the decoder's reason.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, Optional, Tuple

import apache_beam as beam
import tensorflow as tf

from placedemarche.components.catalogue_example_gen import catalogue, images, pictures

logger = logging.getLogger(__name__)

QUARANTINE = "quarantine"
COUNTS = "counts"
UNLABELLED = "unlabelled"  # listings without a category: examples without a label, for categorising
MISSING_TEXT = "missing_text"  # (text column, 1) for each example without it
TEXT_COLUMNS = ("product_name", "description")  # what the text candidates read by default

# Feature names of the examples; the trainer, schema and tests use these constants.
IMAGE = "image_bytes"
LABEL = "label"
FEATURES: Tuple[str, ...] = (
    IMAGE, LABEL, "category_path", "uniq_id", "product_name", "image_file", "source_format",
    "width", "height", "retail_price", "discounted_price", "brand", "description",
)


@dataclass(frozen=True)
class IngestOptions:
    """What the transform needs to know besides the rows."""

    images_dir: str
    max_image_side: int = 600
    min_image_side: int = 32
    max_image_pixels: int = 60_000_000
    max_image_bytes: int = 50 * 1024 * 1024
    jpeg_quality: int = 90
    test_fraction: float = 0.2
    eval_fraction: float = 0.25
    split_salt: str = "placedemarche"
    # A catalogue of batch folders: (batch name, its images folder) for each batch read.
    batch_images: Tuple[Tuple[str, str], ...] = ()

    def images_dir_of(self, batch: str) -> str:
        """The images folder of a row's batch (``images_dir`` for a one-folder catalogue)."""
        return dict(self.batch_images).get(batch, self.images_dir) if batch else self.images_dir


def _reader(options: "IngestOptions", row: catalogue.CatalogueRow) -> pictures.PictureReader:
    return pictures.PictureReader(options.images_dir_of(row.batch), options.max_image_bytes)


def _quarantine(row: catalogue.CatalogueRow, reason: str, detail: str) -> beam.pvalue.TaggedOutput:
    return beam.pvalue.TaggedOutput(
        QUARANTINE,
        catalogue.QuarantineEntry(row.row, row.uniq_id, row.image, reason, detail, row.batch).to_dict(),
    )


class _HashPicture(beam.DoFn):
    def __init__(self, options: "IngestOptions"):
        self._options = options

    def process(self, row: catalogue.CatalogueRow) -> Iterator:
        try:
            data = _reader(self._options, row).read(row.image)
        except pictures.PictureRefused as e:
            yield _quarantine(row, e.reason, e.detail)
            return
        except (IOError, OSError, beam.io.filesystem.BeamIOError) as e:
            yield _quarantine(row, "undecodable_image", f"'{row.image}' cannot be read ({type(e).__name__})")
            return
        yield hashlib.sha256(data).hexdigest(), row


class _ResolveSharedPictures(beam.DoFn):
    def process(self, group: Tuple[str, Iterable[catalogue.CatalogueRow]]) -> Iterator:
        _, rows = group
        by_row = {r.key: r for r in rows}
        kept, refused = catalogue.resolve_shared_pictures(
            [(r.key, r.uniq_id, r.label) for r in by_row.values()], describe=lambda key: by_row[key].where,
        )
        for number, split_key in kept.items():
            yield by_row[number], split_key
        for number, detail in refused:
            yield _quarantine(by_row[number], "duplicate_picture", detail)


def _bytes(value: str) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode("utf-8")]))


class _MakeExample(beam.DoFn):
    def __init__(self, options: IngestOptions):
        self._options = options

    def process(self, element: Tuple[catalogue.CatalogueRow, str]) -> Iterator:
        row, split_key = element
        o = self._options
        try:
            picture = images.normalise_image(
                _reader(o, row).read(row.image), o.max_image_side, o.min_image_side, o.max_image_pixels, o.jpeg_quality
            )
        except (images.ImageRejected, pictures.PictureRefused) as e:
            yield _quarantine(row, e.reason, e.detail)
            return
        except (IOError, OSError) as e:  # the file vanished between the two reads
            yield _quarantine(row, "missing_image", f"'{row.image}' cannot be read ({type(e).__name__})")
            return
        feature: Dict[str, tf.train.Feature] = {
            IMAGE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[picture.jpeg])),
            "uniq_id": _bytes(row.uniq_id),
            "image_file": _bytes(row.image),
            "source_format": _bytes(picture.source_format),
            "width": tf.train.Feature(int64_list=tf.train.Int64List(value=[picture.width])),
            "height": tf.train.Feature(int64_list=tf.train.Int64List(value=[picture.height])),
        }
        for name in ("product_name", "brand", "description"):
            text = (row.fields.get(name) or "").strip()
            if text:  # absent, not empty, when unknown: TFDV then counts it as missing
                feature[name] = _bytes(text)
        if not row.label:  # no category: the unlabelled split, categorised by the pushed model
            feature["row"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[row.row]))  # its CSV line
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            yield beam.pvalue.TaggedOutput(COUNTS, ((UNLABELLED, "", row.batch), 1))
            yield beam.pvalue.TaggedOutput(UNLABELLED, example.SerializeToString(deterministic=True))
            return
        feature[LABEL] = _bytes(row.label)
        feature["category_path"] = _bytes(row.category_path)
        missing = [c for c in TEXT_COLUMNS if c not in feature]
        for name in missing:  # kept: text is optional (the model answers from the picture)
            yield beam.pvalue.TaggedOutput(MISSING_TEXT, (name, 1))
        if len(missing) == len(TEXT_COLUMNS):
            yield beam.pvalue.TaggedOutput(MISSING_TEXT, ("no_text", 1))
        for name in ("retail_price", "discounted_price"):
            value = catalogue.parse_float(row.fields.get(name))
            if value is not None:
                feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        split = catalogue.assign_split(split_key, o.split_salt, o.test_fraction, o.eval_fraction)
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        yield beam.pvalue.TaggedOutput(COUNTS, ((split, row.label, row.batch), 1))
        yield beam.pvalue.TaggedOutput(split, example.SerializeToString(deterministic=True))


class IngestCatalogue(beam.PTransform):
    """``PCollection[CatalogueRow]`` → dict of ``PCollection``s: one of serialized examples per split
    (``train``, ``eval``, ``test``), ``quarantine`` (QuarantineEntry dicts), ``counts``
    (``((split, label, batch), n)`` summed; ``(("unlabelled", "", batch), n)`` for the rows without a
    category),
    ``missing_text`` (``(column or "no_text", n)``: examples kept without a product name and / or
    description) and ``unlabelled`` (serialized examples of the rows without a category: no label, no
    split; they skip the shared-picture check, which compares categories)."""

    def __init__(self, options: IngestOptions, label: Optional[str] = None):
        super().__init__(label)
        self._options = options

    def expand(self, rows: beam.PCollection) -> Dict[str, beam.PCollection]:
        labelled, unlabelled = rows | "SplitOffUnlabelled" >> beam.Partition(lambda row, n: 0 if row.label else 1, 2)
        # Listings without a category skip the shared-picture check (it compares categories).
        unlabelled_made = (
            unlabelled
            | "ReshuffleUnlabelled" >> beam.Reshuffle()
            | "NoSplitKey" >> beam.Map(lambda row: (row, ""))
            | "MakeUnlabelled" >> beam.ParDo(_MakeExample(self._options)).with_outputs(
                QUARANTINE, COUNTS, UNLABELLED)
        )
        hashed = labelled | "HashPictures" >> beam.ParDo(
            _HashPicture(self._options)
        ).with_outputs(QUARANTINE, main="hashed")
        resolved = (
            hashed.hashed
            | "GroupByPicture" >> beam.GroupByKey()
            | "ResolveSharedPictures" >> beam.ParDo(_ResolveSharedPictures()).with_outputs(
                QUARANTINE, main="kept"
            )
        )
        made = (
            resolved.kept
            # Spread the decoding over workers (GroupByKey output can be lumpy).
            | "Reshuffle" >> beam.Reshuffle()
            | "MakeExamples" >> beam.ParDo(_MakeExample(self._options)).with_outputs(
                QUARANTINE, COUNTS, MISSING_TEXT, *catalogue.SPLITS
            )
        )
        outputs: Dict[str, beam.PCollection] = {s: made[s] for s in catalogue.SPLITS}
        outputs[UNLABELLED] = unlabelled_made[UNLABELLED]
        outputs[QUARANTINE] = (
            hashed[QUARANTINE],
            resolved[QUARANTINE],
            made[QUARANTINE],
            unlabelled_made[QUARANTINE],
        ) | "AllQuarantined" >> beam.Flatten()
        outputs[COUNTS] = ((made[COUNTS], unlabelled_made[COUNTS]) | "AllCounts" >> beam.Flatten()
                           | "CountPerSplitAndLabel" >> beam.CombinePerKey(sum))
        outputs[MISSING_TEXT] = made[MISSING_TEXT] | "CountMissingText" >> beam.CombinePerKey(sum)
        return outputs
