"""The backbone registry: how to build each architecture and feed it 0-255 pixels.

Every backbone receives float pixels in 0..255 and applies *its own* preprocessing. Getting this
wrong is the classic transfer-learning bug (EfficientNet and ConvNeXt rescale inside the model and
expect 0..255; VGG and ResNet expect caffe-style BGR mean subtraction on 0..255; feeding 0..1 pixels
to EfficientNet gives near-constant features): ``tests/test_trainer.py`` pins it down
(``test_each_backbone_gets_its_own_preprocessing_of_0_255_pixels``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import keras

from placedemarche.components.trainer import precision

logger = logging.getLogger(__name__)

KERAS_WEIGHTS_URL = "https://storage.googleapis.com/keras-applications/"  # EfficientNet
TF_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"  # the others


def _identity(x):
    return x


@dataclass(frozen=True)
class Backbone:
    """One architecture: its Keras constructor, its preprocessing of 0-255 pixels, its weights file."""

    name: str
    constructor: Callable[..., keras.Model]
    preprocess: Callable  # float 0..255 RGB -> what the constructor's model expects
    weights_file: str  # ImageNet no-top weights, as Keras caches them in ~/.keras/models/
    weights_url: str


def _entry(name: str, constructor, preprocess, weights_file: str, url: Optional[str] = None) -> Backbone:
    return Backbone(name, constructor, preprocess, weights_file, url or KERAS_WEIGHTS_URL + weights_file)


_apps = keras.applications
REGISTRY: Dict[str, Backbone] = {
    **{
        f"efficientnet_b{i}": _entry(
            f"efficientnet_b{i}", getattr(_apps, f"EfficientNetB{i}"), _identity, f"efficientnetb{i}_notop.h5"
        )
        for i in range(8)
    },
    "vgg16": _entry("vgg16", _apps.VGG16, _apps.vgg16.preprocess_input,
                    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                    TF_WEIGHTS_URL + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "vgg19": _entry("vgg19", _apps.VGG19, _apps.vgg19.preprocess_input,
                    "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
                    TF_WEIGHTS_URL + "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "resnet50": _entry("resnet50", _apps.ResNet50, _apps.resnet50.preprocess_input,
                       "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                       TF_WEIGHTS_URL + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    # MobileNetV3 and ConvNeXt include their rescaling layers (include_preprocessing=True).
    "mobilenet_v3_small": _entry("mobilenet_v3_small", _apps.MobileNetV3Small, _identity,
                                 "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
                                 TF_WEIGHTS_URL + "mobilenet_v3/weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
    "mobilenet_v3_large": _entry("mobilenet_v3_large", _apps.MobileNetV3Large, _identity,
                                 "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
                                 TF_WEIGHTS_URL + "mobilenet_v3/weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5"),
    **{
        f"convnext_{size}": _entry(
            f"convnext_{size}", getattr(_apps, f"ConvNeXt{size.title()}"), _identity,
            f"convnext_{size}_notop.h5",
            TF_WEIGHTS_URL + f"convnext/convnext_{size}_notop.h5",
        )
        for size in ("tiny", "small", "base")
    },
}


class WeightsUnavailable(RuntimeError):
    """ImageNet weights were asked for and cannot be had here."""


def keras_cache_file(backbone: Backbone) -> str:
    """Where Keras looks for (and caches) the backbone's ImageNet weights."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models", backbone.weights_file)


def get(name: str) -> Backbone:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backbone '{name}'; known: {', '.join(REGISTRY)}") from None


def build(
    name: str, image_size: int, weights: str, allow_random: bool = False, compute_dtype: str = "float32"
) -> Tuple[keras.Model, str]:
    """The frozen backbone with global average pooling, taking float 0..255 RGB pixels.

    Args:
      name: a registry key.
      image_size: square input size.
      weights: ``"imagenet"`` (Keras cache, else a download), ``"none"`` (random), or a local
        weights file path (air-gapped clusters, images with weights baked in).
      allow_random: when ImageNet weights cannot be had, use random weights instead of failing.
      compute_dtype: ``float32`` or ``bfloat16`` (``precision``: the layers compute in bfloat16,
        the variables stay float32, the features are cast back to float32).

    Returns:
      ``(model, weights_source)``: the model maps ``[batch, size, size, 3]`` pixels to features;
      ``weights_source`` says what was loaded (recorded in the exported model's metadata).

    Raises:
      WeightsUnavailable: ImageNet weights are neither cached nor downloadable and random weights
        are not allowed; the message names the expected file and the ways to provide it.
      FileNotFoundError: ``weights`` is a path that does not exist.
    """
    with precision.policy(compute_dtype):
        return _build(name, image_size, weights, allow_random)


def _build(name: str, image_size: int, weights: str, allow_random: bool) -> Tuple[keras.Model, str]:
    backbone = get(name)
    shape = (image_size, image_size, 3)
    inputs = keras.Input(shape=shape, name="pixels")
    source: str
    if weights == "none":
        net, source = backbone.constructor(include_top=False, weights=None, input_shape=shape, pooling="avg"), "none (random)"
    elif weights == "imagenet":
        cached = keras_cache_file(backbone)
        try:
            net = backbone.constructor(include_top=False, weights="imagenet", input_shape=shape, pooling="avg")
            source = f"imagenet ({cached})"
        except Exception as e:  # Keras raises a bare Exception on a failed download
            message = (
                f"ImageNet weights for backbone '{name}' are not available: expected the file "
                f"{cached} (Keras cache), and downloading it from {backbone.weights_url} failed "
                f"({str(e).splitlines()[0][:200]}). Provide it by copying that file into "
                f"{os.path.dirname(cached)}/, or by setting the weights to a local file "
                f"(--set candidates.<name>.weights=/path/{backbone.weights_file}, or baseline.weights), or, for demos and tests "
                "only, allow random weights (--set training.allow_random_weights=true)."
            )
            if not allow_random:
                raise WeightsUnavailable(message) from e
            logger.warning("%s Using RANDOM weights: predictions will be far below the real model's.", message)
            net = backbone.constructor(include_top=False, weights=None, input_shape=shape, pooling="avg")
            source = "none (random; imagenet unavailable)"
    else:
        if not os.path.isfile(weights):
            raise FileNotFoundError(
                f"weights file '{weights}' for backbone '{name}' does not exist; expected the Keras "
                f"no-top ImageNet file ({backbone.weights_file}) or a compatible one"
            )
        net = backbone.constructor(include_top=False, weights=weights, input_shape=shape, pooling="avg")
        source = f"file {weights}"
    net.trainable = False
    features = keras.ops.cast(net(backbone.preprocess(inputs), training=False), "float32")
    return keras.Model(inputs, features, name=f"{name}_features"), source
