"""Training the head on cached backbone features.

The backbone is frozen, so each picture's features are computed once (``extract_features``) and the
head is trained on them for as many epochs as early stopping allows. With augmentation on, a
configurable number of augmented views of each training picture is cached instead of recomputing
the backbone every epoch.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from placedemarche.components.trainer import model as model_lib

logger = logging.getLogger(__name__)

IMAGE_FEATURE = "image_bytes"
ID_FEATURE = "uniq_id"
LABEL_FEATURE = "label"
# Set (to anything) by ``placedemarche -q``: the Trainers run in the CLI's process and draw no bars.
NO_PROGRESS_ENV = "PLACEDEMARCHE_NO_PROGRESS"


@dataclass
class Examples:
    """One split's examples as the Trainers use them, in file order."""

    ids: List[str]
    labels: List[str]  # "" where the example has no label
    images: List[bytes]
    texts: Dict[str, List[str]] = field(default_factory=dict)  # text column -> one string per example ("" if absent)

    def text(self, columns: Sequence[str]) -> List[str]:
        """Per example, ``columns`` joined by a space (what a text candidate reads)."""
        from placedemarche.components.trainer import text as text_lib

        return text_lib.join_columns([self.texts[c] for c in columns])


def read_examples(file_patterns: Sequence[str], text_columns: Sequence[str] = ()) -> Examples:
    """Ids, labels, image bytes and ``text_columns`` of the GZIP TFRecords matching ``file_patterns``.

    Raises:
      FileNotFoundError: no file matches.
    """
    files = sorted(f for p in file_patterns for f in glob.glob(p))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {list(file_patterns)}")
    spec = {
        ID_FEATURE: tf.io.FixedLenFeature([], tf.string, default_value=""),
        IMAGE_FEATURE: tf.io.FixedLenFeature([], tf.string, default_value=""),
        LABEL_FEATURE: tf.io.FixedLenFeature([], tf.string, default_value=""),
        **{c: tf.io.FixedLenFeature([], tf.string, default_value="") for c in text_columns},
    }
    out = Examples([], [], [], {c: [] for c in text_columns})
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(256):
        parsed = tf.io.parse_example(batch, spec)
        out.ids.extend(v.decode("utf-8") for v in parsed[ID_FEATURE].numpy())
        out.images.extend(parsed[IMAGE_FEATURE].numpy().tolist())
        out.labels.extend(v.decode("utf-8") for v in parsed[LABEL_FEATURE].numpy())
        for c in text_columns:
            out.texts[c].extend(v.decode("utf-8", "replace") for v in parsed[c].numpy())
    return out


def read_split(file_patterns: Sequence[str]) -> Tuple[List[bytes], List[str]]:
    """Image bytes and labels of the GZIP TFRecords matching ``file_patterns``."""
    examples = read_examples(file_patterns)
    return examples.images, examples.labels


def feature_step(extractor: keras.Model, image_size: int, augmenter: Optional[keras.Model] = None):
    """A compiled pixels → features function, traced once for any batch size.

    Build it once per backbone (and augmentation setting) and reuse it for every split: tracing a
    large backbone like EfficientNet-B7 takes seconds, and a fresh function per call would repeat it.
    """

    @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32)])
    def step(pixels):
        if augmenter is not None:
            pixels = augmenter(pixels, training=True)
        return extractor(pixels, training=False)

    return step


def extract_features(
    step,
    images: Sequence[bytes],
    image_size: int,
    batch_size: int = 32,
    description: str = "features",
) -> np.ndarray:
    """Features of each picture (``step`` from :func:`feature_step`), decoded exactly as the served
    model decodes them. Decoding runs in parallel in tf.data while the backbone computes the
    previous batch.

    The input pipeline has fixed parallelism (one decoder per core, one batch ahead) and tf.data's
    autotuning off: decoding a batch takes milliseconds next to the backbone's seconds, and on 2
    cores AUTOTUNE's own threads slowed EfficientNet-B7's extraction measurably
    (``benchmarks/train_benchmark.py`` compares extraction with the raw forward pass).
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    dataset = (
        tf.data.Dataset.from_tensor_slices(tf.constant(list(images), dtype=tf.string))
        .map(lambda b: model_lib.decode_and_resize(b, image_size), num_parallel_calls=os.cpu_count() or 1)
        .batch(batch_size)
        .prefetch(1)
        .with_options(options)
    )
    out = []
    with tqdm(total=len(images), desc=description, unit="img", leave=False,
              disable=bool(os.environ.get(NO_PROGRESS_ENV))) as bar:
        for pixels in dataset:
            out.append(step(pixels).numpy())
            bar.update(int(pixels.shape[0]))
    if not out:
        raise ValueError(f"no pictures to compute {description} from")
    return np.concatenate(out, axis=0)


@dataclass
class TrainResult:
    """The trained head and what happened while training it."""

    head: keras.Model
    history: Dict[str, List[float]]
    best_epoch: int  # 1-based; 0 when no epoch ran
    seconds_per_epoch: float
    stopped_early: bool
    timings: Dict[str, float] = field(default_factory=dict)


def train_head(
    head: keras.Model,
    train_x: np.ndarray,
    train_y: np.ndarray,
    eval_x: np.ndarray,
    eval_y: np.ndarray,
    epochs: int,
    batch_size: int,
    optimizer: str,
    learning_rate: float,
    patience: int,
    checkpoint_path: Optional[str],
    seed: int,
    log_epochs: bool = True,
) -> TrainResult:
    """Fits ``head`` with early stopping on validation loss; the best epoch's weights are kept.

    The best epoch is also written to ``checkpoint_path`` (``.weights.h5``) as it happens, so an
    interrupted run keeps its best head; None (a tuning trial) keeps it in memory only.
    """
    keras.utils.set_random_seed(seed)
    head.compile(
        optimizer=OPTIMIZERS[optimizer](learning_rate=learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    if epochs == 0:
        return TrainResult(head, {}, 0, 0.0, False)
    early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
    callbacks: List[keras.callbacks.Callback] = [early]
    if checkpoint_path:
        callbacks.append(keras.callbacks.ModelCheckpoint(
            checkpoint_path, monitor="val_loss", save_best_only=True, save_weights_only=True))
    if log_epochs:
        callbacks.append(_LogEpoch())
    start = time.perf_counter()
    # Tensors once, not NumPy arrays Keras would convert batch by batch every epoch (a text head's
    # 20000-wide TF-IDF rows made that a fifth of its training time on 2 cores).
    train_x, train_y, eval_x, eval_y = (tf.convert_to_tensor(a) for a in (train_x, train_y, eval_x, eval_y))
    fit = head.fit(
        train_x, train_y, validation_data=(eval_x, eval_y), epochs=epochs, batch_size=batch_size,
        validation_batch_size=256,  # the same validation loss in fewer steps
        shuffle=True, verbose=0, callbacks=callbacks,
    )
    elapsed = time.perf_counter() - start
    history = {k: [float(v) for v in vs] for k, vs in fit.history.items()}
    ran = len(history.get("loss", []))
    best = int(np.argmin(history["val_loss"])) + 1 if ran else 0
    return TrainResult(head, history, best, elapsed / max(1, ran), early.stopped_epoch > 0)


OPTIMIZERS = {"rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}


def train_head_fast(
    head: keras.Model,
    train_x: np.ndarray,
    train_y: np.ndarray,
    eval_x: Optional[np.ndarray],
    eval_y: Optional[np.ndarray],
    epochs: int,
    batch_size: int,
    optimizer: str,
    learning_rate: float,
    patience: int,
    seed: int,
) -> TrainResult:
    """What :func:`train_head` does, for a tuning trial: the same head, loss, optimizer, learning rate,
    batch size and early stopping on validation loss (best epoch's weights restored), with each epoch
    one compiled function instead of Keras ``fit``'s step-by-step loop (3x faster on these small heads:
    a search trains dozens of them). Batches are drawn in another shuffled order than ``fit``'s, so a
    trial's eval accuracy can differ slightly from the Trainer's for the same values; no checkpoint
    file is written.

    Without eval examples (``eval_x`` None: the text classifier trained again on train + eval for
    the epoch count early stopping found) every one of the ``epochs`` runs and the last weights are
    kept; the history then has no ``val_*`` entries.
    """
    keras.utils.set_random_seed(seed)
    opt = OPTIMIZERS[optimizer](learning_rate=learning_rate)
    loss_fn = keras.losses.CategoricalCrossentropy()
    variables = head.trainable_variables
    opt.build(variables)
    validate = eval_x is not None
    x, y = tf.convert_to_tensor(train_x, tf.float32), tf.convert_to_tensor(train_y, tf.float32)
    vx, vy = ((tf.convert_to_tensor(eval_x, tf.float32), tf.convert_to_tensor(eval_y, tf.float32)) if validate
              else (None, None))
    n = int(x.shape[0])
    steps = -(-n // batch_size)

    @tf.function
    def epoch(order):
        total = tf.constant(0.0)
        right = tf.constant(0.0)
        for i in tf.range(steps):
            rows = order[i * batch_size:(i + 1) * batch_size]
            xb, yb = tf.gather(x, rows), tf.gather(y, rows)
            with tf.GradientTape() as tape:
                p = head(xb, training=True)
                loss = loss_fn(yb, p)
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
            total += loss * tf.cast(tf.shape(rows)[0], tf.float32)
            right += tf.reduce_sum(tf.cast(tf.argmax(p, 1) == tf.argmax(yb, 1), tf.float32))
        if not validate:
            return total / n, right / n
        vp = head(vx, training=False)
        val_right = tf.reduce_mean(tf.cast(tf.argmax(vp, 1) == tf.argmax(vy, 1), tf.float32))
        return total / n, right / n, loss_fn(vy, vp), val_right

    history: Dict[str, List[float]] = {"loss": [], "accuracy": []}
    if validate:
        history.update(val_loss=[], val_accuracy=[])
    rng = np.random.RandomState(seed)
    best_loss, best_weights, best, waited = float("inf"), None, 0, 0
    start = time.perf_counter()
    for e in range(epochs):
        values = [float(v) for v in epoch(tf.constant(rng.permutation(n)))]
        for key, value in zip(history, values):
            history[key].append(value)
        if not validate:
            best = e + 1
            continue
        if values[2] < best_loss:
            best_loss, best_weights, best, waited = values[2], head.get_weights(), e + 1, 0
        else:
            waited += 1
            if waited >= patience:
                break
    if best_weights is not None:
        head.set_weights(best_weights)
    ran = len(history["loss"])
    return TrainResult(head, history, best, (time.perf_counter() - start) / max(1, ran), ran < epochs)


class _LogEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        logger.info(
            "epoch %d: loss %.4f accuracy %.4f val_loss %.4f val_accuracy %.4f", epoch + 1,
            logs.get("loss", float("nan")), logs.get("accuracy", float("nan")),
            logs.get("val_loss", float("nan")), logs.get("val_accuracy", float("nan")),
        )


def one_hot(labels: Sequence[str], vocabulary: Sequence[str]) -> np.ndarray:
    """One-hot rows; a label outside ``vocabulary`` is an error naming it."""
    index = {v: i for i, v in enumerate(vocabulary)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ValueError(f"labels {unknown} are not in the vocabulary {list(vocabulary)}")
    out = np.zeros((len(labels), len(vocabulary)), np.float32)
    out[np.arange(len(labels)), [index[l] for l in labels]] = 1.0
    return out


def save_history(results: Dict[str, TrainResult], out_dir: str, timings: Optional[Dict[str, object]] = None) -> None:
    """``history.json`` and ``history.png``: per-epoch loss / accuracy, train and validation, of each
    classifier (``image``, ``text``). ``history`` holds the main one's (the image head's when there is one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    main = results.get("image") or next(iter(results.values()))
    with open(os.path.join(out_dir, "history.json"), "w", encoding="utf-8") as f:
        json.dump({"history": main.history, "best_epoch": main.best_epoch,
                   "stopped_early": main.stopped_early, "seconds_per_epoch": main.seconds_per_epoch,
                   "branches": {name: {"history": r.history, "best_epoch": r.best_epoch, "stopped_early": r.stopped_early,
                                       "seconds_per_epoch": r.seconds_per_epoch} for name, r in results.items()},
                   "timings": timings or {}}, f, indent=2)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for name, result in results.items():
            epochs = range(1, len(result.history.get(metric, [])) + 1)
            ax.plot(epochs, result.history.get(metric, []), label=f"{name} train {metric}")
            ax.plot(epochs, result.history.get(f"val_{metric}", []), "--", label=f"{name} validation {metric}")
            if result.best_epoch:
                ax.axvline(result.best_epoch, color="grey", linestyle=":", label=f"{name} best epoch")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "history.png"), dpi=80)
    plt.close(fig)
