"""CatalogueExampleGen: a TFX component that turns a product catalogue into split TFRecords.

Inputs: none (the catalogue is named by parameters). Outputs: ``examples`` (standard ``Examples``,
splits train / eval / test, GZIP TFRecords of ``tf.Example``), ``quarantine`` (a
``QuarantineReport``) and ``unlabelled`` (``Examples`` with one split, ``unlabelled``: the rows
without a category, no label, for the BatchCategorizer). See ``transform`` for the stages and
``catalogue.REASONS`` for every quarantine reason. ``reviews`` (reviewed categories, see
``categorizer.reviews``) relabel rows before anything else.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Optional, Tuple

from apache_beam.io.filesystems import FileSystems
from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from placedemarche.components.catalogue_example_gen import artifacts, executor
from placedemarche.components.catalogue_example_gen import batches as batches_lib


# Where the catalogue is and how to read its rows: also the DriftGate's parameters (it reads the batches).
CATALOGUE_PARAMETERS = {
    "data_dir": ExecutionParameter(type=str),
    "csv_file": ExecutionParameter(type=str, optional=True),
    "images_dir": ExecutionParameter(type=str),
    "columns": ExecutionParameter(type=str),  # JSON {"id", "image", "category"}
    "label_depth": ExecutionParameter(type=int),
    "max_image_bytes": ExecutionParameter(type=int, optional=True),
    # Changes when the catalogue's files change, so TFX's cache is not stale (see fingerprint()).
    "input_fingerprint": ExecutionParameter(type=str, optional=True),
}


class CatalogueExampleGenSpec(ComponentSpec):
    """Parameters mirror ``DataConfig``; they are stored in the metadata store with the run."""

    PARAMETERS = {
        **CATALOGUE_PARAMETERS,
        "max_image_side": ExecutionParameter(type=int),
        "min_image_side": ExecutionParameter(type=int),
        "max_image_pixels": ExecutionParameter(type=int),
        "jpeg_quality": ExecutionParameter(type=int),
        "test_fraction": ExecutionParameter(type=float),
        "eval_fraction": ExecutionParameter(type=float),
        "split_salt": ExecutionParameter(type=str),
        "max_quarantine_fraction": ExecutionParameter(type=float),
        # A catalogue of batch folders: how many of the newest batches to read (0: all).
        "window_batches": ExecutionParameter(type=int, optional=True),
        # Reviewed categories to apply (categorizer.reviews.load, as JSON): recorded with the run.
        "reviews": ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {}
    OUTPUTS = {
        executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        executor.QUARANTINE_KEY: ChannelParameter(type=artifacts.QuarantineReport),
        executor.UNLABELLED_KEY: ChannelParameter(type=standard_artifacts.Examples),
    }


class CatalogueExampleGen(base_beam_component.BaseBeamComponent):
    """Reads ``<data_dir>/<csv>`` and ``<data_dir>/<images_dir>/`` into examples and a quarantine report."""

    SPEC_CLASS = CatalogueExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self,
        data_dir: str,
        csv_file: Optional[str] = None,
        images_dir: str = "Images",
        id_column: str = "uniq_id",
        image_column: str = "image",
        category_column: str = "product_category_tree",
        label_depth: int = 1,
        max_image_side: int = 600,
        min_image_side: int = 32,
        max_image_pixels: int = 60_000_000,
        max_image_bytes: int = 50 * 1024 * 1024,
        jpeg_quality: int = 90,
        test_fraction: float = 0.2,
        eval_fraction: float = 0.25,
        split_salt: str = "placedemarche",
        max_quarantine_fraction: float = 0.05,
        window_batches: int = 0,
        input_fingerprint: Optional[str] = None,
        reviews: Optional[str] = None,
    ):
        """See ``pipeline.config.DataConfig`` for the meaning of each argument."""
        spec = CatalogueExampleGenSpec(
            data_dir=data_dir,
            csv_file=csv_file or "",
            images_dir=images_dir,
            columns=json.dumps({"id": id_column, "image": image_column, "category": category_column}),
            label_depth=label_depth,
            max_image_side=max_image_side,
            min_image_side=min_image_side,
            max_image_pixels=max_image_pixels,
            max_image_bytes=max_image_bytes,
            jpeg_quality=jpeg_quality,
            test_fraction=test_fraction,
            eval_fraction=eval_fraction,
            split_salt=split_salt,
            max_quarantine_fraction=max_quarantine_fraction,
            window_batches=window_batches,
            input_fingerprint=input_fingerprint or "",
            reviews=reviews or "",
            examples=types.Channel(type=standard_artifacts.Examples),
            quarantine=types.Channel(type=artifacts.QuarantineReport),
            unlabelled=types.Channel(type=standard_artifacts.Examples),
        )
        super().__init__(spec=spec)



def fingerprint(data_dir: str, csv_file: Optional[str] = None, images_dir: str = "Images") -> str:
    """A digest of the catalogue: each batch's name, its CSV's bytes and each image's name, size and
    modification time (a one-folder catalogue is one batch).

    Passed as ``input_fingerprint`` so that TFX's cache reruns ingestion (and the drift gate) when
    the catalogue changes: a new batch, or a changed one.
    """
    digest = hashlib.sha256()
    for batch in batches_lib.list_batches(data_dir, csv_file or "", images_dir):
        digest.update(f"batch\x00{batch.name}\n".encode())
        with FileSystems.open(batch.csv) as f:
            digest.update(f.read())
        pattern = FileSystems.join(batch.images_dir, "*")
        for m in sorted(FileSystems.match([pattern])[0].metadata_list, key=lambda m: m.path):
            digest.update(f"{os.path.basename(m.path)}\x00{m.size_in_bytes}\x00{m.last_updated_in_seconds}\n".encode())
    return digest.hexdigest()


def run_executor(data_dir: str, out_dir: str, **parameters) -> Tuple[str, str]:
    """Runs the executor once without orchestration (no metadata store, no cache).

    For benchmarks and tests that need TFRecords fast; ``parameters`` are those of
    :class:`CatalogueExampleGen`. Returns the ``(examples, quarantine)`` artifact folders.
    """
    from tfx.types import standard_artifacts

    examples = standard_artifacts.Examples()
    examples.uri = os.path.join(out_dir, "examples")
    unlabelled = standard_artifacts.Examples()
    unlabelled.uri = os.path.join(out_dir, "unlabelled")
    report = artifacts.QuarantineReport()
    report.uri = os.path.join(out_dir, "quarantine")
    os.makedirs(report.uri, exist_ok=True)
    props = dict(CatalogueExampleGen(data_dir=data_dir, **parameters).exec_properties)
    executor.Executor().Do({}, {executor.EXAMPLES_KEY: [examples], executor.QUARANTINE_KEY: [report],
                                executor.UNLABELLED_KEY: [unlabelled]}, props)
    return examples.uri, report.uri
