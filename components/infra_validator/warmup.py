"""TF Serving warm-up requests built from real test examples.

TF Serving replays ``assets.extra/tf_serving_warmup_requests`` (a TFRecord of ``PredictionLog``) when
it loads a version, before the version takes traffic. The same records are what infra validation
sends, so what was validated is what warms the server up.
"""

from __future__ import annotations

import glob
from typing import Dict, Iterator, List, Sequence

import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from placedemarche.serving import model_contract as contract

SERVING_DEFAULT = contract.SERVING_DEFAULT
SERVING_EXAMPLES = contract.SERVING_EXAMPLES
WARMUP_FILE = contract.WARMUP_FILE  # under assets.extra/, TF Serving's fixed name
MAX_BATCH = 8
# TF Serving reads at most 1000 warm-up records.
MAX_RECORDS = 1000


def read_examples(file_patterns: Sequence[str], limit: int) -> List[bytes]:
    """Up to ``limit`` serialized tf.Examples from the (GZIP) TFRecord files, in file order."""
    files = sorted(f for p in file_patterns for f in glob.glob(p))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {list(file_patterns)}")
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(limit)]


# A seller's original photo, as the served model must take it: 12000 x 9000 pixels (108 megapixels).
LARGE_ORIGINAL = (12000, 9000)


def large_jpeg(width: int = LARGE_ORIGINAL[0], height: int = LARGE_ORIGINAL[1], quality: int = 70) -> bytes:
    """A smooth generated JPEG of ``width`` x ``height`` (about 1.8 MB at the default size)."""
    import io

    import numpy as np
    from PIL import Image

    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = x, y, (x + y) / 2
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def build_requests(examples: Sequence[bytes], model_name: str, text_columns: Sequence[str] = (),
                   large_original: bytes = b"", reads_images: bool = True) -> List[prediction_log_pb2.PredictionLog]:
    """Requests through both signatures: one per example at batch 1, and one batch of up to 8.

    ``serving_default`` gets the examples' ``image_bytes`` (what a client sends) and, for a model
    that reads ``text_columns``, their text; one more request leaves the text out (the signature's
    default: an image-only client), and, when given, one sends ``large_original`` (a seller's
    full-size photo: a model that cannot take it fails validation and is not pushed).
    ``serving_examples`` gets the serialized examples.
    """
    if not examples:
        raise ValueError("no examples to build warm-up requests from")
    parsed = [tf.train.Example.FromString(e).features.feature for e in examples]
    images = [f[contract.IMAGE_FEATURE].bytes_list.value[0] if f[contract.IMAGE_FEATURE].bytes_list.value else b""
              for f in parsed]
    texts = [" ".join(f[c].bytes_list.value[0].decode("utf-8", "replace") if f[c].bytes_list.value else ""
                      for c in text_columns).strip().encode("utf-8") for f in parsed]

    def default(values_images, values_texts):
        inputs = {contract.IMAGES: values_images} if reads_images else {}
        if text_columns:
            inputs[contract.TEXT] = values_texts
        return _predict_log(model_name, SERVING_DEFAULT, inputs)

    logs = []
    for i, (example, image, text) in enumerate(zip(examples, images, texts)):
        if i % 2 == 0:
            logs.append(default([image], [text]))
        else:
            logs.append(_predict_log(model_name, SERVING_EXAMPLES, {contract.EXAMPLES: [example]}))
    logs.append(default(images[:MAX_BATCH], texts[:MAX_BATCH]))
    logs.append(_predict_log(model_name, SERVING_EXAMPLES, {contract.EXAMPLES: list(examples[:MAX_BATCH])}))
    if text_columns and reads_images:  # an image-only client of a model that reads text
        logs.append(_predict_log(model_name, SERVING_DEFAULT, {contract.IMAGES: images[:2]}))
    if large_original and reads_images:
        logs.append(default([large_original], [texts[0]]))
    return logs[:MAX_RECORDS]


def _predict_log(model_name: str, signature: str, inputs: Dict[str, List[bytes]]):
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
    )
    for name, values in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(values, dtype=tf.string, shape=[len(values)]))
    return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))


def write(path: str, logs: Sequence[prediction_log_pb2.PredictionLog]) -> None:
    """Writes the uncompressed TFRecord file TF Serving expects. Deterministically: a request's
    inputs are a protobuf map, whose order may otherwise change from one process to the next, and
    then re-validating the same model would give its copy another digest and push it again as a
    new version."""
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString(deterministic=True))


def read(path: str) -> Iterator[prediction_log_pb2.PredictionLog]:
    for record in tf.data.TFRecordDataset([path]):
        yield prediction_log_pb2.PredictionLog.FromString(record.numpy())
