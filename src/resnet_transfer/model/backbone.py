"""Backbones: a frozen, headless Keras ResNet from the registry, with its weights.

Example:
    >>> backbone = create_backbone("resnet50", weights="none", input_shape=(32, 32, 3))
    >>> backbone.output_shape
    (None, 1, 1, 2048)
"""

import logging
from typing import Optional

import keras

from resnet_transfer.errors import ConfigError, WeightsError
from resnet_transfer.files import first_line
from resnet_transfer.registry import get_backbone_spec
from resnet_transfer.model.weights import fetch_weights

__all__ = ["create_backbone", "check_input_size"]

logger = logging.getLogger(__name__)


def check_input_size(name: str, size: int) -> None:
    """Raises ``ConfigError`` when ``size`` is below the smallest side ``name`` accepts."""
    spec = get_backbone_spec(name)
    if size < spec.min_input_size:
        raise ConfigError(
            f"image_size must be at least {spec.min_input_size} for {name} (Keras's minimum without the top). "
            f"Received: image_size={size}"
        )


def create_backbone(name: str, *, weights: str, input_shape: tuple, weights_path: Optional[str] = None) -> keras.Model:
    """Builds a frozen, headless backbone.

    Args:
        name: registry name.
        weights: "imagenet", "none" or the path of a weights file.
        input_shape: (height, width, 3).
        weights_path: for "imagenet", the already fetched file (skips a second lookup).

    Returns:
        The Keras model with every layer frozen.

    Raises:
        ConfigError: an unknown backbone or an input smaller than it accepts.
        WeightsError: ImageNet weights cannot be fetched, or a weights file does not load.
    """
    spec = get_backbone_spec(name)
    check_input_size(name, min(input_shape[:2]))
    builder = getattr(keras.applications, spec.builder)
    if weights == "imagenet":
        logger.info("ImageNet weights of %s from %s", name, weights_path or fetch_weights(name))
        backbone = builder(include_top=False, weights="imagenet", input_shape=input_shape)
    elif weights == "none":
        logger.info("%s with random weights (--weights none)", name)
        backbone = builder(include_top=False, weights=None, input_shape=input_shape)
    else:
        logger.info("weights of %s from %s", name, weights)
        backbone = builder(include_top=False, weights=None, input_shape=input_shape)
        try:
            backbone.load_weights(weights)
        except Exception as error:  # h5py and Keras raise many kinds for a bad file
            raise WeightsError(
                f"weights file {weights!r} could not be loaded into {name} (no top): {first_line(error)}. "
                f"Give the weights file of a {name} without its top (.weights.h5 or Keras's .h5)."
            ) from error
    backbone.trainable = False
    return backbone
