"""Preprocessing inside the model, built only from layers that ship with Keras.

A saved model takes raw pixels in [0, 255] and loads with plain
``keras.saving.load_model`` where resnet-transfer is not installed:

- "seed" (the article's recipe): ``Rescaling(1/255)``, pixels to [0, 1];
- "imagenet" for ResNet v1 ("caffe" style): RGB -> BGR and minus the ImageNet mean
  pixel, as one fixed, non-trainable 1x1 ``Conv2D`` whose kernel is the channel
  permutation and whose bias is minus the mean (exact: each output is one input
  channel times 1, plus the bias);
- "imagenet" for ResNet v2 ("tf" style): ``Rescaling(1/127.5, offset=-1)``, to [-1, 1].

The first ``Rescaling`` also casts any integer input to float, so a uint8 input works.

Example:
    >>> layer = build_preprocessing("resnet50", "imagenet")
    >>> [sublayer.name for sublayer in layer.layers]
    ['to_float', 'rgb_to_bgr_minus_mean']
"""

import keras
import numpy as np

from resnet_transfer.config.choices import PREPROCESS_MODES
from resnet_transfer.errors import ConfigError
from resnet_transfer.registry import get_backbone_spec

__all__ = ["PREPROCESS_MODES", "IMAGENET_MEAN_BGR", "build_preprocessing"]

# keras.applications.imagenet_utils, mode "caffe": the mean pixel in BGR order.
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)


def _caffe_layers() -> list:
    permutation = np.zeros((1, 1, 3, 3), dtype="float32")
    for output_channel, input_channel in enumerate((2, 1, 0)):  # BGR out of RGB
        permutation[0, 0, input_channel, output_channel] = 1.0
    convolution = keras.layers.Conv2D(3, 1, name="rgb_to_bgr_minus_mean", trainable=False)
    convolution.build((None, None, None, 3))
    # Set as weights, not initializers: weights are stored in model.keras by value.
    convolution.set_weights([permutation, -np.array(IMAGENET_MEAN_BGR, dtype="float32")])
    return [keras.layers.Rescaling(1.0, name="to_float"), convolution]


def build_preprocessing(backbone: str, mode: str, *, name: str = "preprocessing") -> keras.Sequential:
    """Returns the preprocessing of ``backbone`` in ``mode`` as a small ``keras.Sequential``.

    Args:
        backbone: registry name (selects the ImageNet style, caffe or tf).
        mode: "seed" or "imagenet".
        name: the layer's name inside the model.

    Raises:
        ConfigError: an unknown backbone or mode.
    """
    spec = get_backbone_spec(backbone)
    if mode not in PREPROCESS_MODES:
        raise ConfigError(f"preprocess must be one of: {', '.join(PREPROCESS_MODES)}. Received: preprocess={mode!r}")
    if mode == "seed":
        layers = [keras.layers.Rescaling(1.0 / 255.0, name="to_unit_range")]
    elif spec.imagenet_preprocessing == "caffe":
        layers = _caffe_layers()
    else:
        layers = [keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="to_plus_minus_one")]
    return keras.Sequential(layers, name=name)
