"""Categorising listings with a pushed model; plain Python (no TFX, no Beam).

    listings, rejected, total = read_listings(csv_text, columns, label_depth=1)
    model = LocalModel.load("runs/demo/serving/product_category")      # or ServedModel(client)
    result = categorize(listings, model, Options(images_dir=...), progress=tqdm_bar)
    result.rejected[:0] = rejected                                       # the CSV-level refusals first
    summary = write_outputs(out_dir, result, total)

Every listing ends in exactly one of two files: ``predictions.csv`` (its category, the top 3 with
their probabilities, the model's name and version, the seller's category when there is one) or
``rejected.csv`` (its CSV line and the reason: the same reasons, and the same containment, as
ingestion: pictures are read only inside the images folder, and prepared as ingestion prepares
them, so the model sees what it was trained on). ``review_queue.csv`` lists, highest stakes first,
the listings a person should look at (:func:`queue_order`).

Pictures are read and prepared by a pool of threads one batch ahead of the model, so decoding runs
while the model computes; only one batch ahead is held in memory, so memory does not grow with the
catalogue (the outputs are written row by row; the queue keeps a few fields per queued row).
"""

from __future__ import annotations

import concurrent.futures
import csv
import json
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from placedemarche.components.catalogue_example_gen import catalogue, images, pictures
from placedemarche.components.categorizer import constants as C

DEFAULT_TEXT_COLUMNS = ("product_name", "description")


class Refused(Exception):
    """The model refused the input (a bad picture or text); ``message`` says why."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Options:
    """How listings are read and judged (from the config's ``data.*`` and ``categorize.*``)."""

    images_dir: str
    max_image_side: int = 600
    min_image_side: int = 32
    max_image_pixels: int = 60_000_000
    max_image_bytes: int = 50 * 1024 * 1024
    jpeg_quality: int = 90
    batch_size: int = 32
    flag_threshold: float = 0.9
    review_threshold: float = 0.6
    workers: int = 2


@dataclass(frozen=True)
class Listing:
    row: int  # its CSV line (the header is line 1)
    uniq_id: str
    image: str
    seller_category: str  # "" when the row has none
    fields: Dict[str, str] = field(default_factory=dict)
    picture: Optional[bytes] = None  # already prepared (ingested examples); None: read ``image`` from the folder


@dataclass(frozen=True)
class Rejection:
    uniq_id: str
    row: int
    image: str
    reason: str
    detail: str

    def to_dict(self) -> Dict[str, object]:
        return {"uniq_id": self.uniq_id, "row": self.row, "image": self.image, "reason": self.reason,
                "detail": self.detail}


@dataclass
class Result:
    predictions: List[Dict[str, object]]
    rejected: List[Rejection]
    model_name: str
    model_version: Optional[int]
    seconds: float
    options: Options


def read_listings(csv_text: str, columns: catalogue.Columns = catalogue.Columns(),
                  label_depth: int = 1) -> Tuple[List[Listing], List[Rejection], int]:
    """``(listings, rejected, rows read)`` from the catalogue CSV's text; the category column is optional.

    The CSV-level checks are ingestion's (malformed lines, duplicate or missing ids, no picture name):
    such rows are rejected with ingestion's reason and their line. A seller category that cannot be
    read (control characters, fewer levels than ``label_depth``) counts as none: the listing is still
    categorised. Raises ValueError for a header without the id or image column.
    """
    rows, quarantined, total = catalogue.read_catalogue(csv_text, columns, label_depth, require_category=False)
    listings = [Listing(r.row, r.uniq_id, r.image, r.label, dict(r.fields)) for r in rows]
    rejected = [Rejection(q.uniq_id, q.row, q.image, q.reason, q.detail) for q in quarantined]
    return listings, rejected, total


# --- models ------------------------------------------------------------------------------------------


class LocalModel:
    """A pushed model folder, called in this process (``serving_default``: pictures and, if it reads
    them, texts)."""

    def __init__(self, path: str, name: str, version: Optional[int]):
        import tensorflow as tf

        from placedemarche.serving import model_contract

        self.path, self.name, self.version = path, name, version
        self.labels = model_contract.read_labels(path)
        metadata = model_contract.read_metadata(path)
        self.text_columns: Tuple[str, ...] = tuple(metadata.get("text_columns") or ())
        self._signature = tf.saved_model.load(path).signatures[model_contract.SERVING_DEFAULT]
        self._tf, self._contract = tf, model_contract

    @staticmethod
    def resolve(folder: str) -> Tuple[str, str, Optional[int]]:
        """``(version folder, model name, version)`` of ``folder``, without loading the model: a version
        folder (``.../product_category/3``), or the model folder above the versions (its highest complete
        version). Local paths and ``gs://`` alike. Raises FileNotFoundError saying what was found."""
        import tensorflow as tf

        from placedemarche.components.serving_pusher import push as push_lib
        from placedemarche.serving import model_contract

        folder = folder.rstrip("/") if "://" in folder else os.path.abspath(folder)
        if not tf.io.gfile.isdir(folder):
            raise FileNotFoundError(f"--model '{folder}' is not a folder")
        if tf.io.gfile.exists(os.path.join(folder, model_contract.SAVED_MODEL_FILE)):
            base, leaf = folder.rsplit("/", 1)
            return folder, base.rsplit("/", 1)[-1], int(leaf) if leaf.isdigit() else None
        complete = push_lib.complete_versions(folder)
        if not complete:
            found = push_lib.versions(folder)
            raise FileNotFoundError(
                f"--model '{folder}' holds no complete pushed version (versions found: {found or 'none'}); give a "
                "version folder or <serving_root>/<model_name>, e.g. runs/demo/serving/product_category")
        return f"{folder}/{complete[-1]}", folder.rsplit("/", 1)[-1], complete[-1]

    @classmethod
    def load(cls, folder: str) -> "LocalModel":
        """The model of :meth:`resolve` (``folder``), loaded."""
        return cls(*cls.resolve(folder))

    def predict(self, pictures_: Sequence[bytes], texts: Optional[Sequence[str]]) -> np.ndarray:
        tf = self._tf
        inputs = {self._contract.IMAGES: tf.constant(list(pictures_), tf.string)}
        if self.text_columns:
            inputs[self._contract.TEXT] = tf.constant(list(texts or [""] * len(pictures_)), tf.string)
        try:
            return self._signature(**inputs)[self._contract.PROBABILITIES].numpy()
        except tf.errors.InvalidArgumentError as e:
            raise Refused(e.message.splitlines()[0] if e.message else "the model refused the input") from None

    @property
    def where(self) -> str:
        return self.path


class ServedModel:
    """A model served by TF Serving (or the local stand-in), through a client of ``serving.client``."""

    def __init__(self, client, text_columns: Sequence[str] = DEFAULT_TEXT_COLUMNS):
        from placedemarche.serving import client as client_lib

        self._client, self._errors = client, client_lib
        config = client.config
        self.name = config.model_name
        self.labels: List[str] = []
        self.text_columns: Tuple[str, ...] = tuple(text_columns) if "text" in client.input_names() else ()
        self.version = config.version
        if self.version is None:
            # The status of a label is its version's alone (TF Serving's GetModelStatus, REST .../labels/L).
            available = [s["version"] for s in client.status() if s["state"] == "AVAILABLE"]
            self.version = max(available) if available else None
        self.where = f"{config.host}:{config.port}"

    def predict(self, pictures_: Sequence[bytes], texts: Optional[Sequence[str]]) -> np.ndarray:
        try:
            result = self._client.predict(list(pictures_), texts=list(texts) if self.text_columns else None)
        except self._errors.InvalidRequestError as e:
            raise Refused(e.message) from None
        self.labels = list(result.classes)
        return result.probabilities


# --- categorising ------------------------------------------------------------------------------------


def _text(listing: Listing, columns: Sequence[str]) -> str:
    return " ".join((listing.fields.get(c) or "").strip() for c in columns).strip()


def _prepare(listing: Listing, options: Options) -> Tuple[Optional[bytes], Optional[Rejection]]:
    """The listing's picture as ingestion stores it (JPEG, longest side ``max_image_side``), or why not."""
    if listing.picture is not None:
        return listing.picture, None
    reader = pictures.PictureReader(options.images_dir, options.max_image_bytes)
    try:
        picture = images.normalise_image(reader.read(listing.image), options.max_image_side,
                                         options.min_image_side, options.max_image_pixels, options.jpeg_quality)
        return picture.jpeg, None
    except (images.ImageRejected, pictures.PictureRefused) as e:
        return None, Rejection(listing.uniq_id, listing.row, listing.image, e.reason, e.detail)
    except OSError as e:
        return None, Rejection(listing.uniq_id, listing.row, listing.image, "missing_image",
                               f"'{listing.image}' cannot be read ({type(e).__name__})")


def _batches(items: Sequence[Listing], size: int) -> Iterable[Sequence[Listing]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _answer(model, batch: List[Tuple[Listing, bytes]]) -> List[Tuple[Listing, Optional[np.ndarray], str]]:
    """``(listing, probabilities or None, why not)`` for each; a refused batch is asked row by row so
    that only the bad rows fail."""
    texts = [_text(listing, model.text_columns) for listing, _ in batch]
    try:
        probabilities = model.predict([p for _, p in batch], texts)
        return [(listing, probabilities[i], "") for i, (listing, _) in enumerate(batch)]
    except Refused as e:
        if len(batch) == 1:
            return [(batch[0][0], None, e.message)]
    return [answer for item in batch for answer in _answer(model, [item])]


def prediction_row(listing: Listing, probabilities: np.ndarray, labels: Sequence[str], model_name: str,
                   model_version: Optional[int], flag_threshold: float) -> Dict[str, object]:
    """One line of ``predictions.csv``; the seller's category is suspect when the model gives another
    category a probability of at least ``flag_threshold``."""
    order = np.argsort(-probabilities)[:C.TOP_K]
    top = [(labels[j], float(probabilities[j])) for j in order]
    row: Dict[str, object] = {"uniq_id": listing.uniq_id, "predicted_category": top[0][0],
                              "probability": round(top[0][1], 6)}
    for i in range(C.TOP_K):
        label, p = top[i] if i < len(top) else ("", None)
        row[f"top{i + 1}_category"], row[f"top{i + 1}_probability"] = label, "" if p is None else round(p, 6)
    row["model_name"], row["model_version"] = model_name, "" if model_version is None else model_version
    row["seller_category"] = listing.seller_category
    row[C.SUSPECT] = bool(listing.seller_category) and top[0][0] != listing.seller_category \
        and top[0][1] >= flag_threshold
    return row


def categorize(listings: Sequence[Listing], model, options: Options,
               progress: Optional[Callable[[int], None]] = None) -> Result:
    """Predicts every listing; pictures are prepared by ``options.workers`` threads one batch ahead."""
    start = time.perf_counter()
    predictions: List[Dict[str, object]] = []
    rejected: List[Rejection] = []
    batches = list(_batches(list(listings), options.batch_size))
    with concurrent.futures.ThreadPoolExecutor(max(1, options.workers)) as pool:
        def submit(batch):
            return [(listing, pool.submit(_prepare, listing, options)) for listing in batch]

        ahead = submit(batches[0]) if batches else []
        for k in range(len(batches)):
            current, ahead = ahead, (submit(batches[k + 1]) if k + 1 < len(batches) else [])
            ready: List[Tuple[Listing, bytes]] = []
            for listing, future in current:
                picture, why = future.result()
                if why is not None:
                    rejected.append(why)
                else:
                    ready.append((listing, picture))
            answers = _answer(model, ready) if ready else []
            for listing, probabilities, why_not in answers:
                if probabilities is None:
                    rejected.append(Rejection(listing.uniq_id, listing.row, listing.image, "refused_by_model",
                                              why_not))
                else:
                    predictions.append(prediction_row(listing, probabilities, model.labels, model.name,
                                                      model.version, options.flag_threshold))
            if progress:
                progress(len(current))
    return Result(predictions, rejected, model.name, model.version, time.perf_counter() - start, options)


def queue_order(entry: Dict[str, object]) -> Tuple[int, float]:
    """Highest stakes first: listings whose seller category the model confidently contradicts, the
    most confident contradiction first; then the uncertain ones, the least confident first."""
    p = float(entry["probability"])
    return (0, -p) if entry[C.SUSPECT] else (1, p)


def review_queue(predictions: Iterable[Dict[str, object]], review_threshold: float,
                 details: Optional[Dict[str, Dict[str, str]]] = None) -> List[Dict[str, object]]:
    """The rows a person should look at: below ``review_threshold``, and every suspect, sorted by
    :func:`queue_order`, with an empty ``reviewed_category`` to fill."""
    queue = []
    for p in predictions:
        reasons = [C.SUSPECT] if p[C.SUSPECT] else []
        if float(p["probability"]) < review_threshold:
            reasons.append(C.LOW_CONFIDENCE)
        if reasons:
            extra = (details or {}).get(str(p["uniq_id"]), {})
            entry = {k: p[k] for k in C.REVIEW_QUEUE_COLUMNS if k in p}
            entry.update(why="+".join(reasons), image=extra.get("image", ""),
                         product_name=extra.get("product_name", ""), **{C.REVIEWED_CATEGORY: ""})
            entry[C.SUSPECT] = p[C.SUSPECT]
            queue.append(entry)
    queue.sort(key=queue_order)
    return [{k: e.get(k, "") for k in C.REVIEW_QUEUE_COLUMNS} for e in queue]


def _write_csv(path: str, columns: Sequence[str], rows: Iterable[Dict[str, object]]) -> None:
    """Written under a staging name, then renamed (local folders and ``gs://`` alike)."""
    import tensorflow as tf

    staging = path + ".partial"
    with tf.io.gfile.GFile(staging, "w") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore", lineterminator="\r\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    tf.io.gfile.rename(staging, path, overwrite=True)


def existing_outputs(out_dir: str) -> List[str]:
    """The categoriser's files already in ``out_dir`` (a filled review queue must never be overwritten
    by accident)."""
    names = (C.PREDICTIONS_FILE, C.REJECTED_FILE, C.REVIEW_QUEUE_FILE, C.SUMMARY_FILE)
    return [n for n in names if os.path.exists(os.path.join(out_dir, n))]


def write_outputs(out_dir: str, result: Result, rows_read: int, listings: Sequence[Listing] = ()) -> Dict[str, object]:
    """Writes the three CSV files and ``summary.json``; returns the summary (counts, throughput, paths).

    Raises AssertionError if a row went missing (rows read != predicted + rejected): that is a bug."""
    import tensorflow as tf

    tf.io.gfile.makedirs(out_dir)
    details = {x.uniq_id: {"image": x.image, "product_name": (x.fields.get("product_name") or "").strip()}
               for x in listings}
    queue = review_queue(result.predictions, result.options.review_threshold, details)
    paths = {"predictions": os.path.join(out_dir, C.PREDICTIONS_FILE),
             "rejected": os.path.join(out_dir, C.REJECTED_FILE),
             "review_queue": os.path.join(out_dir, C.REVIEW_QUEUE_FILE)}
    if len(result.predictions) + len(result.rejected) != rows_read:
        raise AssertionError(f"{rows_read} rows read but {len(result.predictions)} predicted + "
                             f"{len(result.rejected)} rejected")
    _write_csv(paths["predictions"], C.PREDICTION_COLUMNS,
               ({**p, C.SUSPECT: "true" if p[C.SUSPECT] else "false"} for p in result.predictions))
    _write_csv(paths["rejected"], C.REJECTED_COLUMNS,
               (r.to_dict() for r in sorted(result.rejected, key=lambda r: r.row)))
    _write_csv(paths["review_queue"], C.REVIEW_QUEUE_COLUMNS, queue)
    reasons: Dict[str, int] = {}
    for r in result.rejected:
        reasons[r.reason] = reasons.get(r.reason, 0) + 1
    labelled = [p for p in result.predictions if p["seller_category"]]
    summary = {
        "rows": rows_read,
        "predicted": len(result.predictions),
        "rejected": len(result.rejected),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "with_seller_category": len(labelled),
        "agree_with_seller": sum(p["predicted_category"] == p["seller_category"] for p in labelled),
        "seller_category_suspect": sum(bool(p[C.SUSPECT]) for p in result.predictions),
        "review_queue": len(queue),
        "seconds": round(result.seconds, 2),
        "listings_per_s": round(len(result.predictions) / result.seconds, 2) if result.seconds > 0 else None,
        "model": {"name": result.model_name, "version": result.model_version},
        "thresholds": {"flag_threshold": result.options.flag_threshold,
                       "review_threshold": result.options.review_threshold},
        "outputs": paths,
    }
    with tf.io.gfile.GFile(os.path.join(out_dir, C.SUMMARY_FILE), "w") as f:
        f.write(json.dumps(summary, indent=2))
    return summary
