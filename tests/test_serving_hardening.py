"""The local server (TF Serving stand-in) with models that read text, hardened against bad clients,
and handling versions as TF Serving does (complete versions only, availability preserving, retries).

One tiny image+text model (16x16 pictures, a TF-IDF text head) is exported once and served by a
module-scoped server; the version tests start servers of their own over copies of it.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from placedemarche.components.trainer import export as export_lib
from placedemarche.components.trainer import model as model_lib
from placedemarche.components.trainer import text as text_lib
from placedemarche.serving import client as client_lib
from placedemarche.serving import model_contract
from placedemarche.serving.server import LocalServer

NAME = "product_category"
LABELS = ["Baby Care", "Computers", "Watches"]
TEXTS = ["baby bottle milk soft", "baby diaper cotton soft", "gaming laptop keyboard", "laptop screen keyboard",
         "steel watch strap", "gold watch leather strap"] * 2
MAX_REQUEST_BYTES = 4 * 1024 * 1024
READ_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 4


def _export_text_model(path: Path, seed: int = 1) -> Path:
    extractor = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 255.0),
                                  keras.layers.GlobalAveragePooling2D()])
    settings = text_lib.TextSettings()
    featurizer = text_lib.TextFeaturizer(text_lib.fit_vocabulary(TEXTS, settings), settings)
    classifier = export_lib.Classifier(
        LABELS, 16, extractor=extractor, image_head=model_lib.build_head(3, len(LABELS), 8, 0.0, seed),
        featurizer=featurizer, text_head=model_lib.build_text_head(featurizer.size, len(LABELS), 0.0, seed),
        text_columns=("product_name", "description"))
    export_lib.export(classifier, str(path), {"backbone": "tiny"})
    return path


def _publish(model_dir: Path, base: Path, version: int, complete: bool = True) -> Path:
    """A version folder as the Pusher leaves it (with the completion marker unless told otherwise)."""
    target = base / str(version)
    shutil.copytree(model_dir, target)
    if complete:
        model_contract.write_complete_marker(str(target), {"version": version})
    return target


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return _export_text_model(tmp_path_factory.mktemp("export") / "text-model")


@pytest.fixture(scope="module")
def pictures():
    rng = np.random.default_rng(3)
    encoded = []
    for i in range(6):
        pixels = tf.constant(rng.integers(0, 256, (16, 16, 3)), tf.uint8)
        encoded.append((tf.io.encode_png if i % 2 else tf.io.encode_jpeg)(pixels).numpy())
    return encoded


@pytest.fixture(scope="module")
def reference(model_dir):
    """What the SavedModel itself answers for (pictures, texts)."""
    signature = tf.saved_model.load(str(model_dir)).signatures["serving_default"]

    def probabilities(images, texts=("",)):
        texts = [t.encode() if isinstance(t, str) else t for t in texts]
        return signature(images=tf.constant(list(images)), text=tf.constant(texts))["probabilities"].numpy()
    return probabilities


@pytest.fixture(scope="module")
def served(tmp_path_factory, model_dir):
    base = tmp_path_factory.mktemp("serving") / NAME
    _publish(model_dir, base, 1)
    server = LocalServer(NAME, str(base), rest_port=0, grpc_port=0, poll_seconds=0.2, batch_timeout_ms=20,
                         max_request_bytes=MAX_REQUEST_BYTES, max_connections=MAX_CONNECTIONS,
                         read_timeout_s=READ_TIMEOUT_S).start()
    yield server
    server.stop()


def _config(server, protocol, **kw):
    return client_lib.ClientConfig("127.0.0.1", server.rest_port if protocol == "rest" else server.grpc_port, NAME, **kw)


def _b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def _http(server, method: str, path: str, body=None, headers=None):
    """(status, JSON answer) over one HTTP/1.1 connection."""
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
    try:
        connection.request(method, path, body=data, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _raw(port: int, data: bytes, timeout: float = 5.0):
    """Sends raw bytes; returns (status, JSON answer or None, seconds until the answer, closed after?)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        started = time.monotonic()
        sock.sendall(data)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        elapsed = time.monotonic() - started
        if not received:
            return None, None, elapsed, True
        head, _, body = received.partition(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        while len(body) < length:
            body += sock.recv(65536)
        closed = sock.recv(1) == b""  # the server closes after its answer
        return int(head.split(b" ")[1]), json.loads(body[:length]), elapsed, closed


def _still_serves(server, pictures):
    status, answer = _http(server, "POST", f"/v1/models/{NAME}:predict",
                           {"inputs": {"images": [_b64(pictures[0])], "text": ["steel watch"]}})
    assert status == 200 and np.shape(answer["outputs"]["probabilities"]) == (1, 3), answer


# --- A. models that read text ------------------------------------------------------------------------------


def test_inputs_left_out_get_the_signature_default_and_missing_ones_are_named(served, pictures, reference):
    """A1: an image-only client of an image+text model gets the image-only answer (text defaults to [""])."""
    image_only = reference(pictures[:3])
    status, columns = _http(served, "POST", f"/v1/models/{NAME}:predict",
                            {"inputs": {"images": [_b64(p) for p in pictures[:3]]}})
    assert status == 200, columns
    np.testing.assert_allclose(columns["outputs"]["probabilities"], image_only, atol=1e-5)
    status, rows = _http(served, "POST", f"/v1/models/{NAME}:predict", {"instances": [_b64(p) for p in pictures[:3]]})
    assert status == 200, rows
    np.testing.assert_allclose([r["probabilities"] for r in rows["predictions"]], image_only, atol=1e-5)
    grpc_answer = client_lib.GrpcClient(_config(served, "grpc")).predict(pictures[:3])
    np.testing.assert_allclose(grpc_answer.probabilities, image_only, atol=1e-5)
    status, error = _http(served, "POST", f"/v1/models/{NAME}:predict", {"inputs": {"text": ["steel watch"]}})
    assert status == 400 and "missing input(s) ['images']" in error["error"], error


def test_concurrent_image_and_text_requests_are_merged_and_split_back(served, pictures, reference):
    """A2: requests with texts (one per picture, one for all, none) are merged and each gets its own answer."""
    batcher = served.store.get().batcher
    assert batcher is not None and batcher.input_names == ["images", "text"]
    requests = [
        (pictures[:2], ["steel watch strap", "baby bottle"]),
        (pictures[2:5], "gaming laptop keyboard"),
        (pictures[:1], None),
        (pictures[1:4], ["gold watch", "", "laptop screen"]),
        (pictures[3:6], "baby diaper cotton"),
        (pictures[4:6], None),
    ]
    expected = [reference(images, ([texts] if isinstance(texts, str) else texts) if texts is not None else [""])
                for images, texts in requests]
    assert not np.allclose(expected[0][0], reference(pictures[:1]), atol=1e-3)  # the text changes the answer
    clients = [client_lib.GrpcClient(_config(served, "grpc")) for _ in requests]
    barrier, answers, failures = threading.Barrier(len(requests)), {}, []
    before = batcher.calls

    def call(i):
        barrier.wait()
        try:
            for round_ in range(3):
                answers[(i, round_)] = clients[i].predict(*requests[i]).probabilities
        except Exception as e:  # reported below
            failures.append(e)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    for (i, _), answer in answers.items():
        np.testing.assert_allclose(answer, expected[i], atol=1e-5)
    assert 0 < batcher.calls - before < 3 * len(requests)  # some requests shared a model call


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_texts_that_do_not_line_up_with_the_pictures_are_refused(served, pictures, protocol):
    """A2: 2 texts for 3 pictures is INVALID_ARGUMENT naming both inputs and their lengths."""
    if protocol == "rest":
        status, error = _http(served, "POST", f"/v1/models/{NAME}:predict",
                              {"inputs": {"images": [_b64(p) for p in pictures[:3]], "text": ["a", "b"]}})
        assert status == 400
        message = error["error"]
    else:
        code, message, _ = _grpc_predict(served.grpc_port, {"images": tf.make_tensor_proto(pictures[:3]),
                                                            "text": tf.make_tensor_proto([b"a", b"b"])})
        assert code == "INVALID_ARGUMENT"
    assert "'text' has 2 values" in message and "'images' has 3" in message, message
    assert "Graph execution" not in message and "node" not in message
    _still_serves(served, pictures)


def test_a_bad_request_in_a_merged_batch_fails_alone(served, pictures, reference):
    """A2: concurrent good and bad requests: the good ones get their answers, the bad ones a clear error."""
    client = client_lib.GrpcClient(_config(served, "grpc"))
    barrier, results = threading.Barrier(6), {}

    def call(i):
        images = [pictures[i], b"not a picture"] if i % 2 else [pictures[i]]
        barrier.wait()
        try:
            results[i] = client.predict(images, texts="steel watch").probabilities
        except client_lib.InvalidRequestError as e:
            results[i] = e

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(6):
        if i % 2:
            assert isinstance(results[i], client_lib.InvalidRequestError)
            assert "instance 2 of 2 ('images'): not a JPEG, PNG, GIF or BMP picture" in results[i].message
        else:
            np.testing.assert_allclose(results[i], reference([pictures[i]], ["steel watch"]), atol=1e-5)


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_clients_send_one_text_for_all_pictures_or_one_per_picture(served, pictures, reference, protocol):
    """A3: ``predict(images, texts)``: a str for all, a list (split into batches with the pictures), or None."""
    client = client_lib.make_client(protocol, _config(served, protocol, max_batch_size=2))
    texts = ["steel watch strap", "baby bottle milk", "", "gaming laptop", "gold watch"]
    one = client.predict(pictures[:5], texts="gaming laptop keyboard")
    np.testing.assert_allclose(one.probabilities, reference(pictures[:5], ["gaming laptop keyboard"]), atol=1e-5)
    each = client.predict(pictures[:5], texts=texts)  # batches of 2, 2 and 1
    np.testing.assert_allclose(each.probabilities, reference(pictures[:5], texts), atol=1e-5)
    assert each.classes == LABELS
    none = client.predict(pictures[:5])
    np.testing.assert_allclose(none.probabilities, reference(pictures[:5]), atol=1e-5)
    with pytest.raises(ValueError, match="texts: 2 given for 5 pictures"):
        client.predict(pictures[:5], texts=texts[:2])


def test_predict_texts_for_a_text_only_model(tmp_path):
    """A3: ``predict_texts`` sends ``text`` alone (a text-only model)."""
    settings = text_lib.TextSettings()
    featurizer = text_lib.TextFeaturizer(text_lib.fit_vocabulary(TEXTS, settings), settings)
    classifier = export_lib.Classifier(LABELS, featurizer=featurizer, text_columns=("product_name",),
                                       text_head=model_lib.build_text_head(featurizer.size, len(LABELS), 0.0, 2))
    export_lib.export(classifier, str(tmp_path / "m"), {"backbone": "none"})
    _publish(tmp_path / "m", tmp_path / NAME, 1)
    expected = tf.saved_model.load(str(tmp_path / "m")).signatures["serving_default"](
        text=tf.constant(["steel watch", "baby bottle", "laptop"]))["probabilities"].numpy()
    server = LocalServer(NAME, str(tmp_path / NAME), rest_port=0, grpc_port=0).start()
    try:
        for protocol in ("rest", "grpc"):
            client = client_lib.make_client(protocol, _config(server, protocol, max_batch_size=2))
            result = client.predict_texts(["steel watch", "baby bottle", "laptop"])
            np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)
    finally:
        server.stop()


BAD_TEXTS = {
    "empty": "",
    "one_megabyte": ("gold watch leather strap " * 42000)[:1_000_000],
    "not_utf8": b"\xff\xfe\x80 steel \xc3\x28 watch \xed\xa0\x80",
    "punctuation": "!!! ??? ... --- ((( ))) ;;; @@@ ###",
}


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
@pytest.mark.parametrize("kind", sorted(BAD_TEXTS))
def test_bad_text_gets_an_answer_and_the_server_keeps_serving(served, pictures, reference, protocol, kind):
    """A4: empty, 1 MB, non-UTF-8 (REST {"b64"}, gRPC raw bytes) and punctuation-only texts are answered."""
    text = BAD_TEXTS[kind]
    client = client_lib.make_client(protocol, _config(served, protocol))
    result = client.predict(pictures[:2], texts=text)
    np.testing.assert_allclose(result.probabilities, reference(pictures[:2], [text]), atol=1e-5)
    if kind in ("empty", "punctuation"):  # nothing the model knows: the picture's own answer
        np.testing.assert_allclose(result.probabilities, reference(pictures[:2]), atol=1e-5)
    np.testing.assert_allclose(client.predict(pictures[2:4], texts="steel watch").probabilities,
                               reference(pictures[2:4], ["steel watch"]), atol=1e-5)


def test_rest_text_in_the_row_format(served, pictures, reference):
    """A3/A4: {"images": {"b64"}, "text": "..."} instances, text as a JSON string or as {"b64"}."""
    rows = [{"images": _b64(pictures[0]), "text": "steel watch"}, {"images": _b64(pictures[1]), "text": _b64(b"\xff\xfe")}]
    status, answer = _http(served, "POST", f"/v1/models/{NAME}:predict", {"instances": rows})
    assert status == 200, answer
    np.testing.assert_allclose([r["probabilities"] for r in answer["predictions"]],
                               reference(pictures[:2], ["steel watch", b"\xff\xfe"]), atol=1e-5)


# --- B. hardening ---------------------------------------------------------------------------------------------


def _png_b64(pictures):
    return _b64(pictures[1])["b64"]


@pytest.mark.parametrize("body,message", [
    (b"{not json", "JSON Parse error"),
    (b'{"instances": ["\\ud800"]}', "lone surrogate"),
    (b"[" * 100000, "nested more than"),
    (b'{"instances": {"b64": "AAAA"}}', '"instances" must be a non-empty list, not an object'),
    (b'{"instances": [{"b64": 5}]}', '"b64" must be a string, not a number'),
    (b'{"inputs": {"images": [1, 2]}}', "input 'images' takes strings (DT_STRING), got numbers"),
    (b'{"inputs": {"images": [{"b64": "AAAA"}], "text": [5]}}', "input 'text' takes strings (DT_STRING), got numbers"),
    (b'{"inputs": {"images": [{"b64": "AAAA"}, 1.5]}}', "input 'images' mixes strings and numbers"),
    (b'{"signature_name": 5, "inputs": {"images": []}}', '"signature_name" must be a string'),
    (b'\xff\xfe{"inputs": 1}', "not UTF-8"),
    (b'{"inputs": {"images": [[{"b64": "AAAA"}], {"b64": "AAAA"}]}}', "ragged"),
])
def test_malformed_json_is_a_400_with_a_clear_message(served, pictures, body, message):
    """B1: never a 500, and the server keeps serving."""
    status, answer = _http(served, "POST", f"/v1/models/{NAME}:predict", body, {"Content-Type": "application/json"})
    assert status == 400 and message in answer["error"], answer
    _still_serves(served, pictures)


def _post_head(length_header: str) -> bytes:
    return (f"POST /v1/models/{NAME}:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"{length_header}\r\n").encode()


@pytest.mark.parametrize("header,status,message", [
    ("", 411, "Content-Length"),
    ("Content-Length: -5\r\n", 400, "Content-Length must be one non-negative integer"),
    ("Content-Length: abc\r\n", 400, "Content-Length must be one non-negative integer"),
    ("Content-Length: 99999999999999999999999\r\n", 400, "Content-Length must be one non-negative integer"),
    ("Content-Length: 12\r\nContent-Length: 13\r\n", 400, "Content-Length must be one"),
    (f"Content-Length: {MAX_REQUEST_BYTES + 1}\r\n", 413, "exceeds the 4194304-byte limit"),
    ("Content-Length: 9223372036854775807\r\n", 413, "exceeds the 4194304-byte limit"),
])
def test_content_length_is_checked_at_once_without_reading_the_body(served, pictures, header, status, message):
    """B2: missing → 411; negative / not a number / absurd → 400; over the limit → 413; no body is sent
    and the answer comes at once (well before the read timeout), then the connection is closed."""
    code, answer, elapsed, closed = _raw(served.rest_port, _post_head(header))
    assert code == status and message in answer["error"], answer
    assert elapsed < READ_TIMEOUT_S / 2 and closed
    _still_serves(served, pictures)


def test_an_oversized_request_gets_413_through_the_client_and_is_not_retried(served):
    """B2: the REST client reads the server's 413 even though the server closed without reading the body."""
    waits = []
    client = client_lib.RestClient(_config(served, "rest", retries=3), sleep=waits.append)
    started = time.monotonic()
    with pytest.raises(client_lib.InvalidRequestError, match="HTTP 413.*exceeds the 4194304-byte limit"):
        client.predict([b"x" * (5 * 1024 * 1024)])
    assert waits == [] and time.monotonic() - started < 5


def test_idle_and_slow_clients_neither_starve_others_nor_hold_threads_and_are_dropped(served, pictures):
    """B3: 50 idle or half-sent connections: predicts still succeed quickly, no thread per connection,
    and the server drops them after its read timeout; keep-alive still works."""
    before = threading.active_count()
    held = []
    for i in range(50):
        sock = socket.create_connection(("127.0.0.1", served.rest_port), timeout=5)
        if i % 2:
            sock.sendall(f"POST /v1/models/{NAME}:predict HTTP/1.1\r\nHost: x\r\nContent-Le".encode())
        held.append(sock)
    try:
        started = time.monotonic()
        for _ in range(4):
            _still_serves(served, pictures)
        assert time.monotonic() - started < 2.0
        assert threading.active_count() - before <= MAX_CONNECTIONS
        time.sleep(READ_TIMEOUT_S + 1.0)
        for i, sock in enumerate(held):
            data = sock.recv(4096)  # the server closed it (after a 408 for a half-sent request)
            assert data == b"" or data.startswith(b"HTTP/1.1 408"), (i, data[:80])
    finally:
        for sock in held:
            sock.close()
    connection = http.client.HTTPConnection("127.0.0.1", served.rest_port, timeout=5)
    for _ in range(2):  # two requests on one kept-alive connection
        connection.request("GET", f"/v1/models/{NAME}")
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read())["model_version_status"][0]["state"] == "AVAILABLE"
    connection.close()


def test_a_client_that_declares_a_body_and_sends_nothing_is_dropped(served, pictures):
    """B3: headers with Content-Length: 100 and no body: 408 after the read timeout, connection closed."""
    code, answer, elapsed, closed = _raw(served.rest_port, _post_head("Content-Length: 100\r\n") + b"\r\n{",
                                         timeout=READ_TIMEOUT_S * 5)
    assert code == 408 and "stalled" in answer["error"] and closed
    assert READ_TIMEOUT_S * 0.8 < elapsed < READ_TIMEOUT_S * 3
    _still_serves(served, pictures)


def test_undecodable_pictures_are_named_without_a_tensorflow_trace(served, pictures):
    """B4: REST 400 / gRPC INVALID_ARGUMENT naming the instance and the input."""
    expected = ("instance 2 of 3 ('images'): not a JPEG, PNG, GIF or BMP picture"
                " (its first bytes are not one of their signatures)")  # the model's own words
    body = {"inputs": {"images": [_b64(pictures[0]), _b64(b"plain text"), _b64(pictures[1])], "text": [""]}}
    status, answer = _http(served, "POST", f"/v1/models/{NAME}:predict", body)
    assert status == 400 and answer["error"] == expected, answer
    with pytest.raises(client_lib.InvalidRequestError) as caught:
        client_lib.GrpcClient(_config(served, "grpc")).predict([pictures[0], b"plain text", pictures[1]],
                                                               texts="steel watch")
    assert caught.value.code == "INVALID_ARGUMENT" and caught.value.message == expected
    status, answer = _http(served, "POST", f"/v1/models/{NAME}:predict",
                           {"inputs": {"images": [_b64(b"x"), _b64(pictures[0]), _b64(b"y")]}})
    assert answer["error"].startswith("instance 1 of 3 ('images'): not a JPEG, PNG, GIF or BMP picture") and "also instance(s) 3" in answer["error"]
    for message in (answer["error"], caught.value.message):
        assert "Graph execution" not in message and "node" not in message and "Op:" not in message


def test_unexpected_failures_carry_no_internal_details(served, pictures, monkeypatch):
    """B5: an unexpected error is INTERNAL with a reference, not the exception's text (logged instead)."""
    loaded = served.store.get()

    def broken(*args, **kwargs):
        raise RuntimeError("secret detail at /srv/models/internal/path.py line 3")

    monkeypatch.setattr(loaded, "run", broken)
    status, answer = _http(served, "POST", f"/v1/models/{NAME}:predict", {"inputs": {"images": [_b64(pictures[0])]}})
    assert status == 500 and "reference" in answer["error"]
    with pytest.raises(client_lib.InvalidRequestError) as caught:
        client_lib.GrpcClient(_config(served, "grpc")).predict(pictures[:1])
    assert caught.value.code == "INTERNAL"
    for message in (answer["error"], caught.value.message):
        assert "secret" not in message and "/srv" not in message and "RuntimeError" not in message
    monkeypatch.undo()
    _still_serves(served, pictures)


def _grpc_predict(port, inputs, signature="serving_default"):
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = NAME
    request.model_spec.signature_name = signature
    for key, proto in inputs.items():
        request.inputs[key].CopyFrom(proto)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=20)
        except grpc.RpcError as e:
            return e.code().name, e.details(), request.ByteSize()
    return "OK", "", request.ByteSize()


def _proto(dtype, dims, **values):
    from tensorflow.core.framework import tensor_pb2

    proto = tensor_pb2.TensorProto(dtype=dtype, **values)
    for d in dims:
        proto.tensor_shape.dim.add(size=d)
    return proto


def test_grpc_tensor_protos_that_do_not_match_their_shape_are_refused(served, pictures):
    """B6: negative dims, short tensor_content, more values than elements, too many strings."""
    from tensorflow.core.framework import types_pb2 as t

    cases = [
        ({"images": _proto(t.DT_STRING, [-1], string_val=[pictures[0]])}, "serving_default", "negative"),
        ({"images": _proto(t.DT_STRING, [1], string_val=[pictures[0], pictures[1]])}, "serving_default",
         "2 values for shape [1]"),
        ({"images": _proto(t.DT_STRING, [200000])}, "serving_default", "over the limit of 100000"),
        ({"pixels": _proto(t.DT_FLOAT, [1, 16, 16, 3], tensor_content=b"\0" * 10)}, "serving_pixels",
         "tensor_content holds 10 bytes, shape [1, 16, 16, 3] needs 3072"),
        ({"pixels": _proto(t.DT_FLOAT, [4000, 16, 16, 3], float_val=[1.0])}, "serving_pixels",
         "declares 3072000 elements for 1 value(s), over the limit"),
        ({"pixels": _proto(t.DT_VARIANT, [1])}, "serving_pixels", "dtype DT_VARIANT is not supported"),
    ]
    text = _proto(t.DT_STRING, [1], string_val=[b""])
    for inputs, signature, message in cases:
        code, details, _ = _grpc_predict(served.grpc_port, {**inputs, "text": text}, signature)
        assert code == "INVALID_ARGUMENT" and message in details, (message, details)
    code, _, _ = _grpc_predict(served.grpc_port, {"images": _proto(t.DT_STRING, [2], string_val=[pictures[0]]),
                                                  "text": text})
    assert code == "OK"  # one value repeated to a small shape, as TensorFlow does
    _still_serves(served, pictures)


_BOMB_SERVER = r"""
import json, os, resource, sys, time
from placedemarche.serving.server import LocalServer

server = LocalServer(sys.argv[1], sys.argv[2], rest_port=0, grpc_port=0).start()
size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + 3 * 1024 ** 3, resource.RLIM_INFINITY))
print(json.dumps({"rest": server.rest_port, "grpc": server.grpc_port}), flush=True)
time.sleep(600)
"""


def _memory_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(f.read().split(f"{field}:")[1].split()[0])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and sets RLIMIT_AS")
def test_a_30_byte_shape_bomb_is_refused_before_anything_is_materialised(served, pictures):
    """B6: one string with a declared shape of [2**31], against a server limited to 3 GB more address
    space than it started with: INVALID_ARGUMENT at once, no memory growth, and it keeps serving."""
    from tensorflow.core.framework import types_pb2 as t

    process = subprocess.Popen([sys.executable, "-c", _BOMB_SERVER, NAME, served.store.base_path],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ports = json.loads(process.stdout.readline())
        text = _proto(t.DT_STRING, [1], string_val=[b""])
        ok, _, _ = _grpc_predict(ports["grpc"], {"images": _proto(t.DT_STRING, [1], string_val=[pictures[0]]), "text": text})
        assert ok == "OK"
        peak = _memory_kb(process.pid, "VmHWM")
        started = time.monotonic()
        bomb = _proto(t.DT_STRING, [2 ** 31], string_val=[b"x"])
        assert bomb.ByteSize() <= 30
        code, details, _ = _grpc_predict(ports["grpc"], {"images": bomb, "text": text})
        assert code == "INVALID_ARGUMENT" and "2147483648" in details and "over the limit" in details, details
        assert time.monotonic() - started < 5
        assert _memory_kb(process.pid, "VmHWM") - peak < 100 * 1024
        ok, _, _ = _grpc_predict(ports["grpc"], {"images": _proto(t.DT_STRING, [1], string_val=[pictures[1]]),
                                                 "text": text})
        assert ok == "OK" and process.poll() is None
    finally:
        process.kill()
        process.wait()


def _listening_addresses(port: int):
    """The local addresses of the sockets listening on ``port`` (Linux /proc/net/tcp, tcp6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:
                    found.append(address)
    return found


def _loopback(address_hex: str) -> bool:
    if len(address_hex) == 8:
        return address_hex.endswith("7F")  # 127.x.x.x, little-endian
    return address_hex in ("00000000000000000000000001000000", "0000000000000000FFFF00000100007F")


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads /proc/net/tcp")
def test_both_protocols_bind_to_loopback_by_default(served):
    """B7: the module's server was started without ``host``."""
    assert served.host == "127.0.0.1"
    for port in (served.rest_port, served.grpc_port):
        addresses = _listening_addresses(port)
        assert addresses and all(_loopback(a) for a in addresses), (port, addresses)


# --- C. versions -------------------------------------------------------------------------------------------


def _wait(condition, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_only_complete_versions_are_loaded_and_host_0000_is_possible(tmp_path, model_dir, pictures):
    """C1: version 2 without the completion marker is ignored until the marker is written; B7: an
    explicit 0.0.0.0 binds every interface."""
    base = tmp_path / NAME
    _publish(model_dir, base, 1)
    _publish(model_dir, base, 2, complete=False)
    server = LocalServer(NAME, str(base), rest_port=0, grpc_port=0, host="0.0.0.0", poll_seconds=0.05).start()
    try:
        if os.path.exists("/proc/net/tcp"):
            assert "00000000" in _listening_addresses(server.rest_port)
        time.sleep(0.3)
        assert server.store.loaded_versions() == [1]
        status, answer = _http(server, "GET", f"/v1/models/{NAME}")
        assert [s["version"] for s in answer["model_version_status"]] == ["1"]
        model_contract.write_complete_marker(str(base / "2"), {"version": 2})
        assert _wait(lambda: server.store.loaded_versions() == [2])
        _still_serves(server, pictures)
    finally:
        server.stop()


def _attempt(server, version: int) -> int:
    status, answer = _http(server, "GET", f"/v1/models/{NAME}/versions/{version}")
    message = answer["model_version_status"][0]["status"]["error_message"]
    match = re.search(r"attempt (\d+)", message)
    return int(match.group(1)) if match else 0


def test_a_corrupt_newer_version_never_takes_traffic_and_loads_once_repaired(tmp_path, model_dir, pictures):
    """C2: stable=1, version 2 serving, corrupt version 3: default traffic stays on 2. C3: version 3 is
    retried with backoff and served once repaired. B5: its status names no server path."""
    base = tmp_path / NAME
    for version in (1, 2):
        _publish(model_dir, base, version)
    corrupt = _publish(model_dir, base, 3)
    (corrupt / "saved_model.pb").write_bytes(b"\x08garbage, not a SavedModel" * 10)
    server = LocalServer(NAME, str(base), rest_port=0, grpc_port=0, labels={"stable": 1}, poll_seconds=0.05,
                         retry_base_s=0.2, retry_max_s=60).start()
    try:
        assert server.store.loaded_versions() == [1, 2]
        status, metadata = _http(server, "GET", f"/v1/models/{NAME}/metadata")
        assert status == 200 and metadata["model_spec"]["version"] == "2"
        status, answer = _http(server, "GET", f"/v1/models/{NAME}/versions/3")
        entry = answer["model_version_status"][0]
        assert entry["state"] == "END" and entry["status"]["error_code"] == "UNKNOWN"
        message = entry["status"]["error_message"]
        assert message.startswith("version 3 could not be loaded"), message
        assert str(tmp_path) not in message and not re.search(r"/\w+/", message), message
        time.sleep(1.6)  # attempts at about 0, 0.2, 0.6 and 1.4 s (every poll would be 30)
        assert 3 <= _attempt(server, 3) <= 6
        assert server.store.loaded_versions() == [1, 2]
        status, answer = _http(server, "POST", f"/v1/models/{NAME}/labels/stable:predict",
                               {"inputs": {"images": [_b64(pictures[0])], "text": [""]}})
        assert status == 200 and np.shape(answer["outputs"]["probabilities"]) == (1, 3)
        _, metadata = _http(server, "GET", f"/v1/models/{NAME}/metadata")
        assert metadata["model_spec"]["version"] == "2"
        shutil.rmtree(corrupt)  # an operator repairs version 3
        _publish(model_dir, base, 3)
        assert _wait(lambda: server.store.loaded_versions() == [1, 3], timeout=10)
        _, metadata = _http(server, "GET", f"/v1/models/{NAME}/metadata")
        assert metadata["model_spec"]["version"] == "3"
        _, answer = _http(server, "GET", f"/v1/models/{NAME}/versions/3")
        assert answer["model_version_status"][0]["state"] == "AVAILABLE"
        _still_serves(server, pictures)
    finally:
        server.stop()
