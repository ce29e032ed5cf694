"""Categorising listings as a Beam job (RunInference), so that a cluster runner scales it out.

    result = categorize_with_beam(listings, "runs/demo/serving/product_category/1", options, scratch,
                                  beam_args=["--direct_num_workers=2", "--direct_running_mode=multi_threading"])

The same work as :func:`categorize.categorize`, as a Beam graph:

    listings (JSON lines in ``scratch``) → Prepare (read + decode + resize, ingestion's code; refusals tagged)
             → RunInference (a keyed handler over the pushed SavedModel's serving_default, batched)
             → JSON lines in ``scratch`` → read back, in the listings' order, into a ``Result``

On the DirectRunner with several workers, preparing one bundle overlaps the model's work on another.
The model is loaded once per worker process (RunInference shares it between threads). Not done: a
cluster runner (Dataflow / Flink / Spark) would need ``scratch``, the catalogue's pictures and the
model folder on a filesystem every worker reads; ``scratch`` is written and read back with local
file operations today.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference import base as inference
from apache_beam.options.pipeline_options import PipelineOptions

from placedemarche.components.categorizer import categorize as lib

REJECTED = "rejected"
_Item = Tuple[bytes, str]  # (prepared picture, text)


class SavedModelHandler(inference.ModelHandler[_Item, Any, Any]):
    """RunInference's view of a pushed model: ``(picture, text)`` in, probabilities (or why not) out."""

    def __init__(self, model_dir: str, batch_size: int):
        super().__init__()
        self._model_dir, self._batch_size = model_dir, batch_size

    def load_model(self) -> "lib.LocalModel":
        return lib.LocalModel.load(self._model_dir)

    def run_inference(self, batch: Sequence[_Item], model: "lib.LocalModel",
                      inference_args: Optional[Dict[str, Any]] = None) -> Iterable[inference.PredictionResult]:
        try:
            answers: List[Any] = list(model.predict([p for p, _ in batch], [t for _, t in batch]))
        except lib.Refused:  # one bad picture refuses the batch: ask row by row, only the bad one fails
            answers = []
            for item in batch:
                try:
                    answers.append(model.predict([item[0]], [item[1]])[0])
                except lib.Refused as e:
                    answers.append(e.message)
        return [inference.PredictionResult(item, answer) for item, answer in zip(batch, answers)]

    def batch_elements_kwargs(self) -> Dict[str, int]:
        # Full batches from the start (Beam's default grows them from 1, costly with a large model).
        return {"min_batch_size": self._batch_size, "max_batch_size": self._batch_size}


class _Prepare(beam.DoFn):
    def __init__(self, options: "lib.Options"):
        self._options = options

    def process(self, line: str) -> Iterator:
        entry = json.loads(line)
        listing = lib.Listing(entry["row"], entry["uniq_id"], entry["image"], "")
        picture, why = lib._prepare(listing, self._options)
        if why is not None:
            yield beam.pvalue.TaggedOutput(REJECTED, json.dumps({"index": entry["index"], "reason": why.reason,
                                                                 "detail": why.detail}))
        else:
            yield entry["index"], (picture, entry["text"])


def _write_listings(path: str, listings: Sequence["lib.Listing"], text_columns: Sequence[str]) -> None:
    """What the workers need of each listing, one JSON line each: the job reads them from the
    filesystem (streamed) instead of carrying them inside the pipeline graph, whose size would grow
    with the catalogue."""
    with open(path, "w", encoding="utf-8") as f:
        for index, x in enumerate(listings):
            f.write(json.dumps({"index": index, "row": x.row, "uniq_id": x.uniq_id, "image": x.image,
                                "text": lib._text(x, text_columns)}) + "\n")


def _answer_line(element: Tuple[int, inference.PredictionResult]) -> str:
    index, result = element
    answer = result.inference
    if isinstance(answer, str):
        return json.dumps({"index": index, "reason": "refused_by_model", "detail": answer})
    return json.dumps({"index": index, "probabilities": np.asarray(answer, np.float64).tolist()})


def _read_lines(pattern: str) -> Iterator[Dict[str, Any]]:
    import glob

    for path in sorted(glob.glob(pattern)):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def categorize_with_beam(listings: Sequence["lib.Listing"], model_dir: str, options: "lib.Options", scratch: str,
                         beam_args: Sequence[str] = ()) -> "lib.Result":
    """Categorises ``listings`` with the pushed model in ``model_dir`` (a version folder) as a Beam job."""
    from placedemarche.serving import model_contract

    metadata = model_contract.read_metadata(model_dir)
    labels = model_contract.read_labels(model_dir)
    text_columns = tuple(metadata.get("text_columns") or ())
    name, leaf = os.path.basename(os.path.dirname(model_dir.rstrip("/"))), os.path.basename(model_dir.rstrip("/"))
    version = int(leaf) if leaf.isdigit() else None
    os.makedirs(scratch, exist_ok=True)
    start = time.perf_counter()
    listings_file = os.path.join(scratch, "listings.jsonl")
    _write_listings(listings_file, listings, text_columns)
    with beam.Pipeline(options=PipelineOptions(list(beam_args))) as pipeline:
        prepared = (
            pipeline
            | "Listings" >> beam.io.ReadFromText(listings_file)
            | "Prepare" >> beam.ParDo(_Prepare(options)).with_outputs(REJECTED, main="ready")
        )
        answered = (
            prepared.ready
            | "Categorize" >> inference.RunInference(
                inference.KeyedModelHandler(SavedModelHandler(model_dir, options.batch_size)))
            | "AsJson" >> beam.Map(_answer_line)
        )
        _ = ((answered, prepared[REJECTED]) | "All" >> beam.Flatten()
             | "Write" >> beam.io.WriteToText(os.path.join(scratch, "answers"), file_name_suffix=".jsonl"))
    seconds = time.perf_counter() - start
    predictions: List[Dict[str, object]] = []
    rejected: List[lib.Rejection] = []
    answers = sorted(_read_lines(os.path.join(scratch, "answers*.jsonl")), key=lambda a: a["index"])
    for answer in answers:
        listing = listings[answer["index"]]
        if "probabilities" in answer:
            predictions.append(lib.prediction_row(listing, np.asarray(answer["probabilities"]), labels, name,
                                                  version, options.flag_threshold))
        else:
            rejected.append(lib.Rejection(listing.uniq_id, listing.row, listing.image, answer["reason"],
                                          answer["detail"]))
    return lib.Result(predictions, rejected, name, version, seconds, options)
