"""Categorising a catalogue (``placedemarche categorize``): counts, rejections, flags, the review queue,
the local model and the served one.

The model is tiny (pixels averaged, a random head, TF-IDF on the sample's words) and exported once per
module: these tests are about what is done with its answers, not about its accuracy. The thresholds
are tested with a fake model whose probabilities are chosen.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from placedemarche.components.catalogue_example_gen import catalogue
from placedemarche.components.categorizer import categorize as lib
from placedemarche.components.categorizer import constants as C
from placedemarche.components.trainer import export as export_lib
from placedemarche.components.trainer import model as model_lib
from placedemarche.components.trainer import text as text_lib
from placedemarche.pipeline import sample_data
from placedemarche.pipeline.cli import main
from placedemarche.serving import model_contract

LABELS = sorted(c.name for c in sample_data.CATEGORIES)
NAME = "product_category"


def _cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["-q", *argv])
    return status, out.getvalue(), err.getvalue()


def _read(path: Path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def catalogue_dir(tmp_path_factory) -> Path:
    """7 x 4 clean rows and one row of every defect kind."""
    root = tmp_path_factory.mktemp("categorize") / "data"
    sample_data.make_sample(root, per_class=4, seed=5, defects=True, show_progress=False)
    return root


@pytest.fixture(scope="module")
def served_models(tmp_path_factory, catalogue_dir) -> Path:
    """``<root>/product_category/1``: a pushed image + text model over the sample's 7 categories."""
    rows = _read(catalogue_dir / sample_data.CSV_NAME)
    texts = [f"{r['product_name']} {r['description']}" for r in rows]
    settings = text_lib.TextSettings()
    featurizer = text_lib.TextFeaturizer(text_lib.fit_vocabulary(texts, settings), settings)
    extractor = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 255.0),
                                  keras.layers.GlobalAveragePooling2D()])
    classifier = export_lib.Classifier(
        LABELS, 16, extractor=extractor, image_head=model_lib.build_head(3, len(LABELS), 8, 0.0, 1),
        featurizer=featurizer, text_head=model_lib.build_text_head(featurizer.size, len(LABELS), 0.0, 1),
        text_columns=("product_name", "description"))
    root = tmp_path_factory.mktemp("serving")
    export_lib.export(classifier, str(root / "export"), {"backbone": "tiny"})
    version = root / NAME / "1"
    shutil.copytree(root / "export", version)
    model_contract.write_complete_marker(str(version), {"version": 1})
    return root / NAME


def _categorize(data: Path, out: Path, *extra):
    status, stdout, stderr = _cli("categorize", "--data", str(data), "--out", str(out), "--json", *extra)
    assert status == 0, stderr
    return json.loads(stdout)


def test_every_row_is_predicted_or_rejected_with_its_reason(catalogue_dir, served_models, tmp_path):
    summary = _categorize(catalogue_dir, tmp_path / "out", "--model", str(served_models))
    manifest = json.loads((catalogue_dir / sample_data.MANIFEST_NAME).read_text())
    rows_in = len(_read(catalogue_dir / sample_data.CSV_NAME))
    predictions, rejected = _read(tmp_path / "out" / C.PREDICTIONS_FILE), _read(tmp_path / "out" / C.REJECTED_FILE)
    assert summary["rows"] == rows_in == len(predictions) + len(rejected)
    assert (summary["predicted"], summary["rejected"]) == (len(predictions), len(rejected))
    assert summary["model"] == {"name": NAME, "version": 1}
    # Pictures that cannot be read are rejected with ingestion's reasons and their CSV line; a row
    # without a category, a duplicate picture or an unusual format is still categorised.
    by_row = {int(r["row"]): r for r in rejected}
    for defect in manifest["defects"]:
        expected = defect["expected"]
        if expected in ("missing_image", "undecodable_image", "not_an_image", "image_too_small", "duplicate_id"):
            assert by_row[defect["row"]]["reason"] == expected, defect
        else:
            assert defect["row"] not in by_row, defect
    assert set(by_row) == {d["row"] for d in manifest["defects"] if d["expected"] in (
        "missing_image", "undecodable_image", "not_an_image", "image_too_small", "duplicate_id")}
    empty = next(d for d in manifest["defects"] if d["kind"] == "empty_category")
    row = next(p for p in predictions if p["uniq_id"] == empty["uniq_id"])
    assert row["seller_category"] == "" and row[C.SUSPECT] == "false"
    for p in predictions:
        assert list(p) == C.PREDICTION_COLUMNS
        assert p["predicted_category"] == p["top1_category"] in LABELS
        assert float(p["top1_probability"]) >= float(p["top2_probability"]) >= float(p["top3_probability"])
        assert p["model_name"] == NAME and p["model_version"] == "1"


def test_a_catalogue_without_categories(catalogue_dir, served_models, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(catalogue_dir / "Images", data / "Images")
    with open(catalogue_dir / sample_data.CSV_NAME, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    columns = [c for c in rows[0] if c != "product_category_tree"]
    with open(data / "new.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    summary = _categorize(data, tmp_path / "out", "--model", str(served_models / "1"))
    assert summary["rows"] == len(rows) == summary["predicted"] + summary["rejected"]
    assert summary["predicted"] == len(rows) - 5  # the 5 unreadable pictures and duplicate id: rejected
    assert summary["with_seller_category"] == 0 and summary["seller_category_suspect"] == 0
    assert all(p["seller_category"] == "" for p in _read(tmp_path / "out" / C.PREDICTIONS_FILE))


class _Chosen:
    """A model answering chosen probabilities per listing (by the product name)."""

    name, version, labels, text_columns = NAME, 7, ["A", "B", "C"], ("product_name",)
    where = "test"

    def __init__(self, answers):
        self.answers = answers

    def predict(self, pictures, texts):
        return np.array([self.answers[t] for t in texts], np.float32)


def test_flags_and_the_queue_follow_the_thresholds(tmp_path):
    answers = {
        "sure-agree": [0.97, 0.02, 0.01],   # seller A, model A: nothing to do
        "sure-other": [0.02, 0.95, 0.03],   # seller A, model B at 0.95: suspect at 0.9, not at 0.96
        "very-sure-other": [0.01, 0.01, 0.98],  # seller A, model C at 0.98: suspect, first in the queue
        "unsure": [0.40, 0.35, 0.25],       # low confidence (0.40 < 0.6)
        "quite-unsure": [0.55, 0.30, 0.15],  # low confidence, after "unsure"
        "no-seller": [0.10, 0.85, 0.05],    # no seller category: never suspect
        "other-below": [0.05, 0.80, 0.15],  # seller A, model B at 0.80 < 0.9: not suspect, not low
    }
    images = tmp_path / "Images"
    images.mkdir()
    pixels = (np.random.default_rng(0).random((40, 40, 3)) * 255).astype("uint8")
    from PIL import Image

    Image.fromarray(pixels).save(images / "p.jpg")
    listings = [lib.Listing(i + 2, name, "p.jpg", "" if name == "no-seller" else "A", {"product_name": name})
                for i, name in enumerate(answers)]

    def run(flag, review):
        options = lib.Options(images_dir=str(images), flag_threshold=flag, review_threshold=review, batch_size=3)
        result = lib.categorize(listings, _Chosen(answers), options)
        return {p["uniq_id"]: p for p in result.predictions}, lib.review_queue(result.predictions, review)

    predictions, queue = run(0.9, 0.6)
    assert {k for k, p in predictions.items() if p[C.SUSPECT]} == {"sure-other", "very-sure-other"}
    assert [q["uniq_id"] for q in queue] == ["very-sure-other", "sure-other", "unsure", "quite-unsure"]
    assert [q["why"] for q in queue] == [C.SUSPECT, C.SUSPECT, C.LOW_CONFIDENCE, C.LOW_CONFIDENCE]
    assert queue[0]["top1_category"] == "C" and queue[0]["top2_category"] in ("A", "B")
    assert all(q[C.REVIEWED_CATEGORY] == "" for q in queue)
    assert predictions["sure-other"]["model_version"] == 7

    predictions, queue = run(0.96, 0.5)
    assert {k for k, p in predictions.items() if p[C.SUSPECT]} == {"very-sure-other"}
    assert [q["uniq_id"] for q in queue] == ["very-sure-other", "unsure"]


def test_a_picture_the_model_refuses_is_rejected_alone(tmp_path):
    """A batch the model refuses is asked row by row: only the bad row fails."""
    images = tmp_path / "Images"
    images.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((40, 40, 3), "uint8")).save(images / "p.jpg")

    class Refusing(_Chosen):
        def predict(self, pictures, texts):
            if "bad" in texts:
                raise lib.Refused("picture 2 of the request: too odd")
            return super().predict(pictures, texts)

    listings = [lib.Listing(i + 2, n, "p.jpg", "A", {"product_name": n}) for i, n in enumerate(["ok", "bad", "ok2"])]
    model = Refusing({"ok": [1.0, 0.0, 0.0], "ok2": [0.0, 1.0, 0.0]})
    result = lib.categorize(listings, model, lib.Options(images_dir=str(images)))
    assert [p["uniq_id"] for p in result.predictions] == ["ok", "ok2"]
    assert [(r.uniq_id, r.reason, r.row) for r in result.rejected] == [("bad", "refused_by_model", 3)]
    # A batch of one that the model refuses (here the last one) is that row's rejection, not a crash.
    listings = [lib.Listing(i + 2, n, "p.jpg", "A", {"product_name": n}) for i, n in enumerate(["ok", "ok2", "bad"])]
    result = lib.categorize(listings, model, lib.Options(images_dir=str(images), batch_size=2))
    assert [p["uniq_id"] for p in result.predictions] == ["ok", "ok2"]
    assert [(r.uniq_id, r.reason) for r in result.rejected] == [("bad", "refused_by_model")]


def test_served_and_local_predictions_agree(catalogue_dir, served_models, tmp_path):
    from placedemarche.serving.server import LocalServer

    local = _categorize(catalogue_dir, tmp_path / "local", "--model", str(served_models))
    assert local["predicted"] > 0
    server = LocalServer(NAME, str(served_models), rest_port=0, grpc_port=0, labels={"stable": 1}).start()
    try:
        answers = {"local": _read(tmp_path / "local" / C.PREDICTIONS_FILE)}
        for protocol, port in (("grpc", server.grpc_port), ("rest", server.rest_port)):
            summary = _categorize(catalogue_dir, tmp_path / protocol, "--server", f"127.0.0.1:{port}",
                                  "--protocol", protocol)
            assert (summary["predicted"], summary["rejected"]) == (local["predicted"], local["rejected"])
            assert summary["model"] == {"name": NAME, "version": 1}
            answers[protocol] = _read(tmp_path / protocol / C.PREDICTIONS_FILE)
        labelled = _categorize(catalogue_dir, tmp_path / "label", "--server", f"127.0.0.1:{server.rest_port}",
                               "--protocol", "rest", "--label", "stable")
        assert labelled["model"] == {"name": NAME, "version": 1}  # a label's answers name its version
        status, _, err = _cli("categorize", "--data", str(catalogue_dir), "--out", str(tmp_path / "both"), "--server",
                              f"127.0.0.1:{server.rest_port}", "--label", "stable", "--version", "1")
        assert status == 2 and "a version or a label, not both" in err
    finally:
        server.stop()
    for protocol in ("grpc", "rest"):
        assert [p["uniq_id"] for p in answers[protocol]] == [p["uniq_id"] for p in answers["local"]]
        for a, b in zip(answers[protocol], answers["local"]):
            assert a["predicted_category"] == b["predicted_category"]
            for k in range(1, 4):
                assert abs(float(a[f"top{k}_probability"]) - float(b[f"top{k}_probability"])) <= 1e-5


def test_clear_errors_and_nothing_overwritten(catalogue_dir, served_models, tmp_path):
    status, _, err = _cli("categorize", "--data", str(catalogue_dir), "--out", str(tmp_path / "o"))
    assert status == 2 and "give --model DIR" in err
    status, _, err = _cli("categorize", "--data", str(catalogue_dir), "--out", str(tmp_path / "o"),
                          "--model", str(tmp_path))
    assert status == 2 and "holds no complete pushed version" in err
    status, _, err = _cli("categorize", "--data", str(catalogue_dir), "--out", str(tmp_path / "o"),
                          "--server", "nohost")
    assert status == 2 and "HOST:PORT" in err
    bad = tmp_path / "bad"
    (bad / "Images").mkdir(parents=True)
    (bad / "x.csv").write_text("name,image\na,b.jpg\n")
    status, _, err = _cli("categorize", "--data", str(bad), "--out", str(tmp_path / "o"), "--model", str(served_models))
    assert status == 2 and "lacks the column(s) 'uniq_id'" in err

    _categorize(catalogue_dir, tmp_path / "out", "--model", str(served_models))
    queue = tmp_path / "out" / C.REVIEW_QUEUE_FILE
    queue.write_text(queue.read_text() + "filled by a reviewer\n")
    status, _, err = _cli("categorize", "--data", str(catalogue_dir), "--out", str(tmp_path / "out"),
                          "--model", str(served_models))
    assert status == 2 and "already holds" in err and "--overwrite" in err
    assert queue.read_text().endswith("filled by a reviewer\n")
    _categorize(catalogue_dir, tmp_path / "out", "--model", str(served_models), "--overwrite")
    assert not queue.read_text().endswith("filled by a reviewer\n")


def test_read_listings_keeps_rows_without_a_category():
    text = ("uniq_id,image,product_category_tree,product_name\n"
            "a,a.jpg,\"[\"\"Watches >> Wrist\"\"]\",Watch\n"
            "b,b.jpg,,Cup\n"
            "c,,,Nothing\n"
            "d,d.jpg,\"Bad\tcategory\",Bowl\n")
    listings, rejected, total = lib.read_listings(text, catalogue.Columns())
    assert total == 4
    # A seller category that cannot be read counts as none: the listing is still categorised.
    assert [(x.uniq_id, x.seller_category) for x in listings] == [("a", "Watches"), ("b", ""), ("d", "")]
    assert [(r.uniq_id, r.row, r.reason) for r in rejected] == [("c", 4, "missing_image_name")]


# --- reviews: a filled queue labels the next ingestion ------------------------------------------------

from placedemarche.components.categorizer import reviews as reviews_lib  # noqa: E402


def _queue(path: Path, rows):
    columns = ["uniq_id", "why", C.REVIEWED_CATEGORY]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for uid, category in rows:
            writer.writerow({"uniq_id": uid, "why": C.LOW_CONFIDENCE, C.REVIEWED_CATEGORY: category})
    return str(path)


def test_reviews_are_read_with_their_conflicts(tmp_path):
    first = _queue(tmp_path / "a.csv", [("p1", "Watches"), ("p2", ""), ("p3", "Baby Care"), ("p4", "Bad\tname"),
                                         ("p5", "Watches"), ("p5", "Watches")])
    second = _queue(tmp_path / "b.csv", [("p3", "Computers"), ("p6", "Kitchen & Dining")])
    loaded = reviews_lib.load([first, second])
    assert loaded["reviewed"] == {"p1": "Watches", "p5": "Watches", "p6": "Kitchen & Dining"}
    assert loaded["unreviewed"] == 1
    assert [(c["uniq_id"], c["kind"]) for c in loaded["conflicts"]] == [("p4", "bad_category"),
                                                                        ("p3", "conflicting_reviews")]
    assert loaded["conflicts"][1]["where"].endswith("b.csv:2")
    assert [f["reviewed_rows"] for f in loaded["files"]] == [5, 2] and len(loaded["files"][0]["sha256"]) == 64

    rows = [catalogue.CatalogueRow(2, "p1", "1.jpg", "Baby Care", "Baby Care"),  # overridden
            catalogue.CatalogueRow(3, "p5", "5.jpg", "Watches", "Watches"),  # confirmed
            catalogue.CatalogueRow(4, "p6", "6.jpg", "", ""),  # labelled... but no row is Kitchen & Dining
            catalogue.CatalogueRow(5, "p7", "7.jpg", "", "")]  # no category, no review: left unlabelled
    labelled, done = reviews_lib.apply(rows, loaded)
    assert [r.label for r in labelled] == ["Watches", "Watches", "", ""]
    assert (done["applied"], done["overrode_seller"], done["confirmed_seller"]) == (2, 1, 1)
    assert [(c["uniq_id"], c["kind"]) for c in done["conflicts"][2:]] == [("p6", "unknown_category")]

    with pytest.raises(reviews_lib.ReviewsError, match="has no column"):
        reviews_lib.load([str(_write(tmp_path / "c.csv", "uniq_id,category\na,b\n"))])
    with pytest.raises(reviews_lib.ReviewsError, match="cannot be read"):
        reviews_lib.load([str(tmp_path / "absent.csv")])


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_a_filled_queue_changes_the_labels_of_the_next_ingestion(catalogue_dir, served_models, tmp_path):
    """categorize → a reviewer fills the queue → ingest --reviews: the reviewed labels are in the
    examples, the report counts them and lists conflicts, the metadata store records the file."""
    import tensorflow as tf
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    manifest = json.loads((catalogue_dir / sample_data.MANIFEST_NAME).read_text())
    rows = _read(catalogue_dir / sample_data.CSV_NAME)
    empty = next(d for d in manifest["defects"] if d["kind"] == "empty_category")["uniq_id"]
    watch = next(r["uniq_id"] for r in rows if r["product_category_tree"].startswith('["Watches'))
    queue = _queue(tmp_path / "queue.csv", [(watch, "Computers"), (empty, "Baby Care"), ("no-such-id", "Watches"),
                                            (rows[0]["uniq_id"], "")])
    status, stdout, stderr = _cli("ingest", "--data", str(catalogue_dir), "--output", str(tmp_path / "run"),
                                  "--reviews", queue, "--json", "--set", "data.max_quarantine_fraction=0.5")
    report = json.loads(stdout)
    assert report["failure"] is None, report["failure"]
    reviews = report["reviews"]
    assert (reviews["reviewed"], reviews["applied"], reviews["overrode_seller"],
            reviews["labelled_without_category"], reviews["unreviewed"]) == (3, 2, 1, 1, 1)
    assert [(c["uniq_id"], c["kind"]) for c in reviews["conflicts"]] == [("no-such-id", "unknown_id")]
    assert any("no-such-id" in n for n in report["notices"])
    assert empty not in {q["uniq_id"] for q in report["quarantined"]}  # labelled by its review, not quarantined

    labels = {}
    for path in tf.io.gfile.glob(report["artifacts"]["examples"] + "/Split-*/*.gz"):
        for record in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            example = tf.train.Example.FromString(record.numpy())
            f = example.features.feature
            labels[f["uniq_id"].bytes_list.value[0].decode()] = f["label"].bytes_list.value[0].decode()
    assert labels[watch] == "Computers" and labels[empty] == "Baby Care"

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(tmp_path / "run" / "metadata.sqlite")
    store = metadata_store.MetadataStore(config)
    recorded = [e.custom_properties["reviews"].string_value for e in store.get_executions()
                if "reviews" in e.custom_properties]
    assert recorded and json.loads(recorded[-1])["files"][0]["path"] == queue

    status, _, err = _cli("ingest", "--data", str(catalogue_dir), "--output", str(tmp_path / "run2"),
                          "--reviews", str(tmp_path / "absent.csv"))
    assert status == 2 and "cannot be read" in err


# --- in the pipeline: BatchCategorizer's executor on fake artifacts ------------------------------------


def _pushed_artifact(destination: str = "", reason: str = ""):
    from tfx.types import standard_artifacts

    pushed = standard_artifacts.PushedModel()
    pushed.set_int_custom_property("pushed", 1 if destination else 0)
    if destination:
        pushed.set_string_custom_property("pushed_destination", destination)
    else:
        pushed.set_string_custom_property("reason", reason)
    return pushed


def test_the_pipeline_categorises_the_listings_without_a_category(catalogue_dir, served_models, tmp_path):
    """Ingestion keeps the row without a category apart (unlabelled split); BatchCategorizer's executor
    categorises it with the pushed model, and says so, categorising nothing, when nothing was pushed."""
    from tfx.types import standard_artifacts

    from placedemarche.components.catalogue_example_gen import component as example_gen
    from placedemarche.components.categorizer import component, executor

    example_gen.run_executor(str(catalogue_dir), str(tmp_path / "ingested"), max_quarantine_fraction=0.5)
    unlabelled = standard_artifacts.Examples()
    unlabelled.uri = str(tmp_path / "ingested" / "unlabelled")
    manifest = json.loads((catalogue_dir / sample_data.MANIFEST_NAME).read_text())
    empty = next(d for d in manifest["defects"] if d["kind"] == "empty_category")
    listings = executor.read_unlabelled(unlabelled.uri)
    assert [(x.uniq_id, x.row, x.image) for x in listings] == [(empty["uniq_id"], empty["row"], empty["image"])]

    def run(pushed):
        out = component.Categorization()
        out.uri = str(tmp_path / f"out-{len(list(tmp_path.iterdir()))}")
        executor.Executor().Do({executor.UNLABELLED_KEY: [unlabelled], executor.PUSHED_KEY: [pushed]},
                               {executor.CATEGORIZED_KEY: [out]},
                               {"flag_threshold": 0.9, "review_threshold": 0.6, "batch_size": 8})
        return out

    out = run(_pushed_artifact(str(served_models / "1")))
    predictions = _read(Path(out.uri) / C.PREDICTIONS_FILE)
    assert [p["uniq_id"] for p in predictions] == [empty["uniq_id"]]
    assert predictions[0]["model_version"] == "1" and predictions[0]["predicted_category"] in LABELS
    local = lib.LocalModel.load(str(served_models))  # the same answer as the model asked directly
    expected = local.predict([listings[0].picture], [f"{listings[0].fields['product_name']} "
                                                      f"{listings[0].fields['description']}".strip()])[0]
    assert abs(float(predictions[0]["probability"]) - float(expected.max())) <= 1e-5
    assert out.get_int_custom_property("categorized") == 1

    out = run(_pushed_artifact(reason="no candidate is both blessed and infra-validated"))
    assert not (Path(out.uri) / C.PREDICTIONS_FILE).exists()
    assert "nothing was pushed in this run (no candidate is both blessed" in (Path(out.uri) / C.SKIPPED_FILE).read_text()
    assert out.get_int_custom_property("categorized") == 0


def test_the_beam_job_answers_as_the_threads_do(catalogue_dir, served_models, tmp_path):
    """--runner beam (RunInference on the DirectRunner, 2 threads): the same rows, the same answers."""
    threads = _categorize(catalogue_dir, tmp_path / "threads", "--model", str(served_models))
    beam = _categorize(catalogue_dir, tmp_path / "beam", "--model", str(served_models), "--runner", "beam")
    for key in ("rows", "predicted", "rejected", "rejected_by_reason", "seller_category_suspect", "review_queue"):
        assert beam[key] == threads[key], key
    a, b = (_read(tmp_path / k / C.PREDICTIONS_FILE) for k in ("threads", "beam"))
    assert [p["uniq_id"] for p in a] == [p["uniq_id"] for p in b]
    for x, y in zip(a, b):
        assert x["predicted_category"] == y["predicted_category"]
        assert abs(float(x["probability"]) - float(y["probability"])) <= 1e-5
    assert _read(tmp_path / "threads" / C.REJECTED_FILE) == _read(tmp_path / "beam" / C.REJECTED_FILE)
    status, _, err = _cli("categorize", "--data", str(catalogue_dir), "--out", str(tmp_path / "x"),
                          "--server", "localhost:1", "--runner", "beam")
    assert status == 2 and "--runner beam goes with --model" in err


def test_the_beam_handler_rejects_only_the_refused_row():
    from placedemarche.components.categorizer import beam_job

    class Model:
        def predict(self, pictures, texts):
            if b"bad" in pictures:
                raise lib.Refused("picture 1 of the request: not a JPEG, PNG, GIF or BMP picture")
            return np.ones((len(pictures), 2)) / 2

    results = beam_job.SavedModelHandler("unused", 8).run_inference([(b"ok", ""), (b"bad", ""), (b"ok2", "")], Model())
    answers = [r.inference for r in results]
    assert isinstance(answers[1], str) and "not a JPEG" in answers[1]
    assert np.allclose(answers[0], 0.5) and np.allclose(answers[2], 0.5)


def test_ingestion_refuses_a_catalogue_with_nothing_to_train_on(catalogue_dir, tmp_path):
    from placedemarche.components.catalogue_example_gen import component as example_gen
    from placedemarche.components.catalogue_example_gen import executor as example_gen_executor

    data = tmp_path / "data"
    shutil.copytree(catalogue_dir / "Images", data / "Images")
    rows = _read(catalogue_dir / sample_data.CSV_NAME)
    with open(data / "new.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "product_category_tree": ""} for r in rows)
    with pytest.raises(example_gen_executor.NoLabelledRows, match="no row of .* can be trained on: .* have no category"):
        example_gen.run_executor(str(data), str(tmp_path / "out"), max_quarantine_fraction=1.0)
