"""Image decoding shared by training and serving, the classification heads and the augmenter.

``decode_and_resize`` is the one definition of how bytes become pixels: the features the heads are
trained on and the requests TF Serving answers go through the same ops, so there is no skew.

Decoding is bounded, whatever the original's size (sellers send 100-megapixel studio photos, and a
tiny file can declare enormous dimensions):

- the picture's dimensions are read from its header first (JPEG: ``extract_jpeg_shape``; PNG, GIF,
  BMP: the width and height fields of their headers), nothing is decoded yet;
- a JPEG is decoded **downscaled by its DCT**, by the largest factor (1/2, 1/4, 1/8) that still leaves
  both sides at least twice the backbone's input size (``JPEG_MARGIN``: the final antialiased resize
  then still filters), so time and memory stop growing with the original (a 15000 x 15000 JPEG is
  decoded at 1875 x 1875);
- whatever the format, a picture whose decoded size would exceed ``max_pixels`` (the config's
  ``data.max_image_pixels``, which ingestion applies too) is refused before decoding with an
  INVALID_ARGUMENT naming the picture's position in the request and its dimensions;
- bytes that are not a JPEG, PNG, GIF or BMP picture are refused by name, not with a decoder trace.
"""

from __future__ import annotations

import keras
import tensorflow as tf

DEFAULT_MAX_PIXELS = 60_000_000  # the config's data.max_image_pixels default
# DCT scaling factors libjpeg decodes at (decode_jpeg's ``ratio``), largest first.
JPEG_RATIOS = (8, 4, 2, 1)
_JPEG, _PNG, _GIF, _BMP = 0, 1, 2, 3


def _le(data: tf.Tensor, start: int, length: int) -> tf.Tensor:
    """Little-endian unsigned integer of ``length`` bytes at ``start`` (int64)."""
    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(data, start, length), tf.uint8), tf.int64)
    return tf.reduce_sum(raw * tf.constant([256 ** i for i in range(length)], tf.int64))


def _be(data: tf.Tensor, start: int, length: int) -> tf.Tensor:
    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(data, start, length), tf.uint8), tf.int64)
    return tf.reduce_sum(raw * tf.constant([256 ** i for i in reversed(range(length))], tf.int64))


def picture_format(image_bytes: tf.Tensor) -> tf.Tensor:
    """0 JPEG, 1 PNG, 2 GIF, 3 BMP, -1 anything else (from the first bytes)."""
    head = tf.strings.substr(image_bytes, 0, 4)
    return tf.case([
        (tf.equal(tf.strings.substr(head, 0, 3), b"\xff\xd8\xff"), lambda: tf.constant(_JPEG)),
        (tf.equal(head, b"\x89PNG"), lambda: tf.constant(_PNG)),
        (tf.equal(tf.strings.substr(head, 0, 3), b"GIF"), lambda: tf.constant(_GIF)),
        (tf.equal(tf.strings.substr(head, 0, 2), b"BM"), lambda: tf.constant(_BMP)),
    ], default=lambda: tf.constant(-1))


def picture_size(image_bytes: tf.Tensor, kind: tf.Tensor) -> tf.Tensor:
    """``[height, width]`` (int64) from the picture's header, without decoding it."""
    padded = tf.strings.join([image_bytes, tf.constant(b"\0" * 32)])  # a truncated header reads as zeros

    def jpeg():
        return tf.cast(tf.io.extract_jpeg_shape(image_bytes)[:2], tf.int64)

    def png():  # IHDR: width, height as 4-byte big-endian at 16 and 20
        return tf.stack([_be(padded, 20, 4), _be(padded, 16, 4)])

    def gif():  # logical screen: width, height as 2-byte little-endian at 6 and 8
        return tf.stack([_le(padded, 8, 2), _le(padded, 6, 2)])

    def bmp():  # BITMAPINFOHEADER: width, height as 4-byte little-endian at 18 and 22 (height may be negative)
        height = _le(padded, 22, 4)
        height = tf.where(height >= 2 ** 31, 2 ** 32 - height, height)
        return tf.stack([height, _le(padded, 18, 4)])

    return tf.switch_case(tf.maximum(kind, 0), [jpeg, png, gif, bmp])


# The DCT-scaled decode keeps both sides at least this many times the backbone's input, so the final
# antialiased resize still filters: decoded just above the input size, a 1/8 DCT decode differs from
# the full decode by about 4 grey levels on average (real catalogue photos), with this margin by
# about 1.4.
JPEG_MARGIN = 2


def jpeg_ratio(height: tf.Tensor, width: tf.Tensor, image_size: int) -> tf.Tensor:
    """The largest DCT factor that keeps both sides at least ``JPEG_MARGIN * image_size`` (else 1)."""
    side = tf.minimum(height, width)
    ratio = tf.constant(1, tf.int64)
    for r in reversed(JPEG_RATIOS[:-1]):  # 2, 4, 8: the last that fits wins
        ratio = tf.where(side >= r * JPEG_MARGIN * image_size, tf.constant(r, tf.int64), ratio)
    return ratio


def decode_and_resize(image_bytes: tf.Tensor, image_size: int, max_pixels: int = DEFAULT_MAX_PIXELS,
                      index: tf.Tensor | int = 0) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP bytes (one picture) → float32 ``[size, size, 3]`` pixels in 0..255.

    ``index`` is the picture's position in its batch (from 0; errors name it from 1). Raises (in the graph)
    InvalidArgumentError for bytes that are not a picture and for one over ``max_pixels``.
    """
    kind = picture_format(image_bytes)
    where = tf.strings.format("picture {} of the request", tf.cast(index, tf.int64) + 1)  # counted from 1
    known = tf.debugging.Assert(kind >= 0, [tf.strings.join([
        where, ": not a JPEG, PNG, GIF or BMP picture (its first bytes are not one of their signatures)"])])
    with tf.control_dependencies([known]):
        size = picture_size(image_bytes, kind)
    height, width = size[0], size[1]
    ratio = tf.where(tf.equal(kind, _JPEG), jpeg_ratio(height, width, image_size), tf.constant(1, tf.int64))
    decoded_pixels = ((height + ratio - 1) // ratio) * ((width + ratio - 1) // ratio)
    capped = tf.debugging.Assert(
        tf.logical_and(decoded_pixels <= max_pixels, tf.minimum(height, width) > 0),
        [tf.strings.join([where, tf.strings.format(
            ": {} x {} pixels (width x height) is over the {}-pixel limit of this model (data.max_image_pixels; "
            "JPEGs count after DCT downscaling) or not a valid size", (width, height, max_pixels))])])
    with tf.control_dependencies([capped]):
        pixels = tf.cond(
            tf.equal(kind, _JPEG),
            lambda: tf.switch_case(
                tf.cast(tf.math.log(tf.cast(ratio, tf.float32)) / tf.math.log(2.0) + 0.5, tf.int32),
                [lambda r=r: tf.io.decode_jpeg(image_bytes, channels=3, ratio=r, dct_method="INTEGER_ACCURATE")
                 for r in (1, 2, 4, 8)]),
            lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False),
        )
    pixels = tf.image.resize(tf.cast(pixels, tf.float32), [image_size, image_size], method="bilinear", antialias=True)
    return tf.clip_by_value(pixels, 0.0, 255.0)


def decode_batch(images: tf.Tensor, image_size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> tf.Tensor:
    """A batch of encoded pictures → ``[batch, size, size, 3]`` float pixels in 0..255."""
    positions = tf.range(tf.shape(images)[0], dtype=tf.int64)
    return tf.map_fn(
        lambda item: decode_and_resize(item[0], image_size, max_pixels, item[1]),
        (images, positions),
        fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
    )


def build_head(
    feature_dim: int, num_classes: int, units: int, dropout: float, seed: int, train_features=None
) -> keras.Model:
    """The proof of concept's head: Dropout → Dense(relu) → Dropout → Dense(softmax).

    When ``train_features`` are given, a Normalization layer standardises each feature with their
    mean and variance first (part of the exported model). Pooled features of different backbones
    differ in scale by orders of magnitude; standardising makes one learning rate fit all of them.
    """
    inputs = keras.Input(shape=(feature_dim,), name="features")
    x = inputs
    if train_features is not None:
        norm = keras.layers.Normalization(axis=-1, name="feature_standardisation")
        norm.adapt(train_features)
        x = norm(x)
    x = keras.layers.Dropout(dropout, seed=seed)(x)
    x = keras.layers.Dense(units, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(seed))(x)
    x = keras.layers.Dropout(dropout, seed=seed + 1)(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32",
        kernel_initializer=keras.initializers.GlorotUniform(seed + 2), name="probabilities",
    )(x)
    return keras.Model(inputs, outputs, name="head")


def build_augmenter(seed: int) -> keras.Sequential:
    """The baseline's in-model augmentation (random flip / rotation / zoom), on 0..255 pixels."""
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomRotation(0.1, fill_mode="nearest", seed=seed + 1),
            keras.layers.RandomZoom(0.1, fill_mode="nearest", seed=seed + 2),
        ],
        name="augmentation",
    )


# The text classifier's input is an L2-normalised TF-IDF vector (entries around 0.05): scaled up so
# that RMSprop, whose steps do not grow with the gradient, moves its logits as fast as the image
# head's; unscaled, early stopping ends training long before the text classifier has learnt (the
# README's "Candidates" section has the figures).
TEXT_INPUT_SCALE = 10.0


def build_text_head(vocabulary_size: int, num_classes: int, dropout: float, seed: int) -> keras.Model:
    """The text classifier: Dropout → a linear layer over the TF-IDF vector → softmax
    (multinomial logistic regression, the strongest plain model on this catalogue's text)."""
    inputs = keras.Input(shape=(vocabulary_size,), name="tfidf")
    x = keras.layers.Dropout(dropout, seed=seed + 3)(inputs) if dropout else inputs
    x = keras.layers.Rescaling(TEXT_INPUT_SCALE)(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32",
        kernel_initializer=keras.initializers.GlorotUniform(seed + 4), name="text_probabilities",
    )(x)
    return keras.Model(inputs, outputs, name="text_head")
