"""Image decoding shared by training and serving, the classification head and the augmenter.

``decode_and_resize`` is the one definition of how bytes become pixels: the features the head is
trained on and the requests TF Serving answers go through the same ops, so there is no skew.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def decode_and_resize(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP bytes (one picture) → float32 ``[size, size, 3]`` pixels in 0..255."""
    pixels = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    pixels = tf.image.resize(tf.cast(pixels, tf.float32), [image_size, image_size], method="bilinear", antialias=True)
    return tf.clip_by_value(pixels, 0.0, 255.0)


def decode_batch(images: tf.Tensor, image_size: int) -> tf.Tensor:
    """A batch of encoded pictures → ``[batch, size, size, 3]`` float pixels in 0..255."""
    return tf.map_fn(
        lambda b: decode_and_resize(b, image_size),
        images,
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
