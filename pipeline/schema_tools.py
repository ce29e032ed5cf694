"""Inferring and curating the TFDV schema that ingestion is validated against.

The curated schema is kept in the repository (``pipeline/schema/schema.pbtxt``) and imported by
ImportSchemaGen, so a change of the data shows up as an anomaly instead of silently becoming the new
normal. ``placedemarche schema`` regenerates it from a catalogue with these rules.
"""

from __future__ import annotations

from typing import Iterable

import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

from placedemarche.components.catalogue_example_gen import transform

# Every example has exactly one value of these; the others may be absent (no brand, no price).
REQUIRED = (
    transform.IMAGE, transform.LABEL, "category_path", "uniq_id", "image_file", "source_format",
    "width", "height",
)


def curate(schema: schema_pb2.Schema, labels: Iterable[str]) -> schema_pb2.Schema:
    """Applies the project's rules to an inferred schema (in place) and returns it.

    - required features: present in every example with exactly one value;
    - optional features: may be missing;
    - the label's domain is exactly ``labels`` (a new category is an anomaly: retrain on purpose);
    - no other string domain (brands, product names and source formats vary between catalogues).
    """
    for feature in schema.feature:
        if feature.name in REQUIRED:
            feature.presence.min_fraction = 1.0
            feature.presence.min_count = 1
            feature.value_count.min = 1
            feature.value_count.max = 1
        else:
            feature.presence.min_fraction = 0.0
            feature.presence.min_count = 0
        if feature.name == transform.LABEL:
            feature.domain = transform.LABEL
        elif feature.HasField("domain"):
            feature.ClearField("domain")
        if feature.HasField("string_domain"):
            feature.ClearField("string_domain")
    del schema.string_domain[:]
    schema.string_domain.add(name=transform.LABEL).value.extend(sorted(set(labels)))
    missing = set(REQUIRED) - {f.name for f in schema.feature}
    if missing:
        raise ValueError(f"the statistics lack required feature(s): {', '.join(sorted(missing))}")
    return schema


def infer_curated_schema(
    statistics: statistics_pb2.DatasetFeatureStatisticsList, labels: Iterable[str]
) -> schema_pb2.Schema:
    """Infers a schema from ``statistics`` (the train split) and curates it."""
    return curate(tfdv.infer_schema(statistics, infer_feature_shape=False), labels)


def write_schema(schema: schema_pb2.Schema, path: str) -> None:
    tfdv.write_schema_text(schema, path)
