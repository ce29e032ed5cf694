"""Serving end to end: push a model, serve it (local stand-in), call it over gRPC and REST."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from placedemarche.components.infra_validator import warmup
from placedemarche.components.serving_pusher import push as push_lib
from placedemarche.pipeline.cli import main
from placedemarche.components.trainer import export as export_lib
from placedemarche.components.trainer import model as model_lib
from placedemarche.serving import client as client_lib
from placedemarche.serving.server import LocalServer

NAME = "product_category"
LABELS = ["Baby Care", "Computers", "Watches"]


def _export(path: Path, seed: int) -> Path:
    extractor = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 255.0),
                                  keras.layers.GlobalAveragePooling2D()])
    head = model_lib.build_head(3, len(LABELS), 8, 0.0, seed)
    export_lib.export(export_lib.ImageClassifier(extractor, head, LABELS, 16), str(path), {"backbone": "tiny"})
    return path


@pytest.fixture(scope="module")
def pictures(sample_examples):
    records = warmup.read_examples([str(sample_examples / "Split-test" / "*.gz")], 12)
    return [tf.train.Example.FromString(r).features.feature["image_bytes"].bytes_list.value[0] for r in records]


@pytest.fixture(scope="module")
def served(tmp_path_factory, pictures):
    root = tmp_path_factory.mktemp("serving")
    models = [_export(root / f"model-{seed}", seed) for seed in (1, 2)]
    # The pushed copy carries TF Serving warm-up requests, as the pipeline's push does.
    warmup.write(str(models[0] / "assets.extra" / warmup.WARMUP_FILE),
                 [warmup._predict_log(NAME, "serving_default", {"images": pictures[:2]})])
    push_lib.push(str(models[0]), str(root / "serving"), NAME)
    server = LocalServer(NAME, str(root / "serving" / NAME), rest_port=0, grpc_port=0, host="127.0.0.1",
                         poll_seconds=0.2, max_request_bytes=2 * 1024 * 1024).start()
    yield root, models, server
    server.stop()


def _direct(model_dir: Path, pictures) -> np.ndarray:
    signature = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    return signature(images=tf.constant(pictures))["probabilities"].numpy()


def _config(server, protocol, **kw):
    port = server.rest_port if protocol == "rest" else server.grpc_port
    return client_lib.ClientConfig("127.0.0.1", port, NAME, **kw)


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_both_protocols_answer_like_the_saved_model(served, pictures, protocol):
    root, models, server = served
    client = client_lib.make_client(protocol, _config(server, protocol, max_batch_size=5))
    assert client.wait_until_ready(10)[0]["state"] == "AVAILABLE"
    result = client.predict(pictures)  # 12 pictures: batches of 5, 5 and 2
    np.testing.assert_allclose(result.probabilities, _direct(root / "serving" / NAME / "1", pictures), atol=1e-5)
    assert result.classes == LABELS
    assert len(result.top_k(2)[0]) == 2


def _post(server, path, body) -> tuple:
    import http.client

    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    try:
        try:
            connection.request("POST", path, body=data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered (413) without reading the body; its answer is still readable
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_rest_row_and_columnar_formats_status_and_metadata(served, pictures):
    root, _, server = served
    b64 = [{"b64": base64.b64encode(p).decode()} for p in pictures[:2]]
    status, rows = _post(server, f"/v1/models/{NAME}:predict", {"instances": b64})
    assert status == 200 and len(rows["predictions"]) == 2
    assert rows["predictions"][0]["label"] in LABELS and len(rows["predictions"][0]["probabilities"]) == 3
    status, named = _post(server, f"/v1/models/{NAME}/versions/1:predict", {"instances": [{"images": v} for v in b64]})
    assert status == 200 and named["predictions"] == rows["predictions"]
    status, columns = _post(server, f"/v1/models/{NAME}:predict", {"inputs": {"images": b64}})
    np.testing.assert_allclose(columns["outputs"]["probabilities"], [r["probabilities"] for r in rows["predictions"]])
    with urllib.request.urlopen(f"http://127.0.0.1:{server.rest_port}/v1/models/{NAME}") as r:
        assert json.loads(r.read())["model_version_status"][0]["state"] == "AVAILABLE"
    with urllib.request.urlopen(f"http://127.0.0.1:{server.rest_port}/v1/models/{NAME}/metadata") as r:
        signatures = json.loads(r.read())["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "serving_examples", "serving_pixels"} <= set(signatures)
    assert signatures["serving_default"]["inputs"]["images"]["dtype"] == "DT_STRING"
    metadata = client_lib.GrpcClient(_config(served[2], "grpc")).metadata()
    assert metadata.model_spec.version.value == 1


@pytest.mark.parametrize("path,body,status,message", [
    (f"/v1/models/{NAME}:predict", {"instances": [{"b64": "not base64!"}]}, 400, "Unable to base64 decode"),
    (f"/v1/models/{NAME}:predict", {"inputs": {"images": [[{"b64": "AAAA"}]]}}, 400, "must have rank 1"),
    (f"/v1/models/{NAME}:predict", {"instances": [{"b64": base64.b64encode(b"plain text").decode()}]}, 400, "image"),
    (f"/v1/models/{NAME}:predict", {"nothing": 1}, 400, 'exactly one of "instances"'),
    (f"/v1/models/{NAME}:predict", b"{not json", 400, "JSON Parse error"),
    ("/v1/models/other_model:predict", {"instances": [{"b64": "AAAA"}]}, 404, "Servable not found"),
    (f"/v1/models/{NAME}/versions/7:predict", {"instances": [{"b64": "AAAA"}]}, 404, "Specific(product_category, 7)"),
    (f"/v1/models/{NAME}:predict", {"signature_name": "nope", "instances": [{"b64": "AAAA"}]}, 400, "not found in signature"),
])
def test_malformed_rest_requests_get_a_clear_error_and_the_server_keeps_serving(served, pictures, path, body, status, message):
    _, _, server = served
    code, payload = _post(server, path, body)
    assert code == status and message in payload["error"], payload
    assert client_lib.RestClient(_config(server, "rest")).predict(pictures[:1]).probabilities.shape == (1, 3)


def test_oversized_requests_are_refused(served, pictures):
    _, _, server = served
    code, payload = _post(server, f"/v1/models/{NAME}:predict",
                          {"instances": [{"b64": base64.b64encode(b"x" * (3 * 1024 * 1024)).decode()}]})
    assert code == 413 and "--max-request-bytes" in payload["error"]
    assert client_lib.RestClient(_config(server, "rest")).predict(pictures[:1]).probabilities.shape == (1, 3)


def test_malformed_grpc_requests_get_typed_errors(served, pictures):
    _, _, server = served
    with pytest.raises(client_lib.ModelNotFoundError, match="NOT_FOUND"):
        client_lib.GrpcClient(client_lib.ClientConfig("127.0.0.1", server.grpc_port, "other")).predict(pictures[:1])
    with pytest.raises(client_lib.ModelNotFoundError):
        client_lib.GrpcClient(_config(server, "grpc", version=9)).predict(pictures[:1])
    with pytest.raises(client_lib.InvalidRequestError, match="INVALID_ARGUMENT"):
        client_lib.GrpcClient(_config(server, "grpc")).predict([b"not a picture"])
    with pytest.raises(client_lib.InvalidRequestError, match="INVALID_ARGUMENT.*must have rank 4"):
        client_lib.GrpcClient(_config(server, "grpc", signature_name="serving_pixels", input_name="pixels")).predict(pictures[:1])
    assert client_lib.GrpcClient(_config(server, "grpc")).predict(pictures[:1]).probabilities.shape == (1, 3)


def test_clients_retry_transient_failures_only():
    waits = []
    client = client_lib.RestClient(client_lib.ClientConfig("127.0.0.1", 9, NAME, retries=2, timeout_s=2), sleep=waits.append)
    with pytest.raises(client_lib.UnavailableError):
        client.predict([b"x"])
    assert waits == [0.2, 0.4]  # backoff doubles; 3 attempts in all


def test_refused_requests_are_not_retried(served):
    waits = []
    client = client_lib.RestClient(_config(served[2], "rest", retries=3), sleep=waits.append)
    with pytest.raises(client_lib.InvalidRequestError):
        client.predict([b"not a picture"])
    assert waits == []


def test_concurrent_requests_are_batched(served, pictures):
    _, _, server = served
    batcher = server.store.get().batcher
    before = batcher.calls
    clients = [client_lib.GrpcClient(_config(server, "grpc")) for _ in range(8)]
    threads = [threading.Thread(target=lambda c=c: [c.predict(pictures[:1]) for _ in range(5)]) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 0 < batcher.calls - before < 40  # 40 requests took fewer model calls


def test_predict_command(served, pictures, tmp_path):
    _, _, server = served
    image = tmp_path / "p.jpg"
    image.write_bytes(pictures[0])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["-q", "predict", str(image), "--server", f"127.0.0.1:{server.rest_port}", "--protocol", "rest",
                       "--top-k", "2", "--json"])
    assert status == 0
    (answer,) = json.loads(out.getvalue())
    assert [t["label"] for t in answer["top_k"]][0] in LABELS and len(answer["top_k"]) == 2


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_predict_a_catalogue_answers_every_row_or_says_why_not(served, pictures, tmp_path, protocol):
    """Rows in the catalogue's format; a missing picture, a file that is not a picture and a name leaving the
    images folder are listed with their reason, every other row is answered (exit status 1)."""
    _, _, server = served
    (tmp_path / "Images").mkdir()
    for i, picture in enumerate(pictures[:3]):
        (tmp_path / "Images" / f"{i}.jpg").write_bytes(picture)
    (tmp_path / "Images" / "broken.jpg").write_bytes(b"<html>not found</html>")
    (tmp_path / "secret.jpg").write_bytes(pictures[0])
    rows = [("a", "0.jpg"), ("b", "broken.jpg"), ("c", "1.jpg"), ("d", "missing.jpg"), ("e", "../secret.jpg"),
            ("f", "2.jpg")]
    (tmp_path / "catalogue.csv").write_text(
        "uniq_id,image,product_name,description\n" + "".join(f"{u},{f},Name {u},Words {u}\n" for u, f in rows))
    out = io.StringIO()
    port = server.grpc_port if protocol == "grpc" else server.rest_port
    with contextlib.redirect_stdout(out):
        status = main(["-q", "predict", "--catalogue", str(tmp_path / "catalogue.csv"), "--server",
                       f"127.0.0.1:{port}", "--protocol", protocol, "--json"])
    answers = {a["id"]: a for a in json.loads(out.getvalue())}
    assert status == 1, answers
    assert sorted(answers) == ["a", "b", "c", "d", "e", "f"]
    assert all("top_k" in answers[u] and answers[u]["top_k"][0]["label"] in LABELS for u in "acf"), answers
    assert answers["b"]["error"].startswith("not a JPEG, PNG, GIF or BMP picture")
    assert "is not a file in Images/" in answers["d"]["error"] and "is not a file in Images/" in answers["e"]["error"]
    assert answers["b"]["row"] == 3


def test_a_new_version_is_picked_up_while_clients_loop_and_no_request_fails(served, pictures):
    """Last: it pushes version 2."""
    root, models, server = served
    client = client_lib.GrpcClient(_config(server, "grpc", retries=0))
    failures, answers, stop = [], [], threading.Event()

    def loop():
        while not stop.is_set():
            try:
                answers.append(client.predict(pictures[:2]).probabilities)
            except Exception as e:  # any failure is a dropped request
                failures.append(e)

    thread = threading.Thread(target=loop)
    thread.start()
    time.sleep(0.5)
    push_lib.push(str(models[1]), str(root / "serving"), NAME)
    deadline = time.time() + 60
    while time.time() < deadline and server.store.loaded_versions() != [2]:
        time.sleep(0.1)
    time.sleep(0.5)
    stop.set()
    thread.join()
    assert server.store.loaded_versions() == [2]
    assert failures == []
    expected = {v: _direct(root / "serving" / NAME / str(v), pictures[:2]) for v in (1, 2)}
    assert not np.allclose(expected[1], expected[2], atol=1e-3)  # the versions differ
    np.testing.assert_allclose(answers[0], expected[1], atol=1e-5)
    np.testing.assert_allclose(answers[-1], expected[2], atol=1e-5)
    assert all(np.allclose(a, expected[1], atol=1e-5) or np.allclose(a, expected[2], atol=1e-5) for a in answers)
    status = client_lib.RestClient(_config(server, "rest")).status()
    assert [(s["version"], s["state"]) for s in status] == [(2, "AVAILABLE"), (1, "END")]
