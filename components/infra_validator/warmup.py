"""TF Serving warm-up requests built from real test examples.

TF Serving replays ``assets.extra/tf_serving_warmup_requests`` (a TFRecord of ``PredictionLog``) when
it loads a version, before the version takes traffic. The same records are what infra validation
sends, so what was validated is what warms the server up.
"""

from __future__ import annotations

import glob
from typing import Iterator, List, Sequence

import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

SERVING_DEFAULT = "serving_default"
SERVING_EXAMPLES = "serving_examples"
WARMUP_FILE = "tf_serving_warmup_requests"  # under assets.extra/, TF Serving's fixed name
MAX_BATCH = 8
# TF Serving reads at most 1000 warm-up records.
MAX_RECORDS = 1000


def read_examples(file_patterns: Sequence[str], limit: int) -> List[bytes]:
    """Up to ``limit`` serialized tf.Examples from the (GZIP) TFRecord files, in file order."""
    files = sorted(f for p in file_patterns for f in glob.glob(p))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {list(file_patterns)}")
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(limit)]


def build_requests(examples: Sequence[bytes], model_name: str) -> List[prediction_log_pb2.PredictionLog]:
    """Requests through both signatures: one per example at batch 1, and one batch of up to 8.

    ``serving_default`` gets the examples' ``image_bytes`` (what a client sends);
    ``serving_examples`` gets the serialized examples.
    """
    if not examples:
        raise ValueError("no examples to build warm-up requests from")
    images = [tf.train.Example.FromString(e).features.feature["image_bytes"].bytes_list.value[0] for e in examples]
    logs = []
    for i, (example, image) in enumerate(zip(examples, images)):
        if i % 2 == 0:
            logs.append(_predict_log(model_name, SERVING_DEFAULT, "images", [image]))
        else:
            logs.append(_predict_log(model_name, SERVING_EXAMPLES, "examples", [example]))
    logs.append(_predict_log(model_name, SERVING_DEFAULT, "images", images[:MAX_BATCH]))
    logs.append(_predict_log(model_name, SERVING_EXAMPLES, "examples", list(examples[:MAX_BATCH])))
    return logs[:MAX_RECORDS]


def _predict_log(model_name: str, signature: str, input_name: str, values: List[bytes]):
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
    )
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto(values, dtype=tf.string, shape=[len(values)]))
    return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))


def write(path: str, logs: Sequence[prediction_log_pb2.PredictionLog]) -> None:
    """Writes the uncompressed TFRecord file TF Serving expects."""
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())


def read(path: str) -> Iterator[prediction_log_pb2.PredictionLog]:
    for record in tf.data.TFRecordDataset([path]):
        yield prediction_log_pb2.PredictionLog.FromString(record.numpy())
