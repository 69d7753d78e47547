"""Augmentation: random changes of the training images, made of Keras preprocessing layers.

The layers act only when called with ``training=True``. They are applied to the
training batches as they are prepared (Keras's "preprocessing in the data pipeline"
placement), never inside the model that is trained, saved and exported, so validation,
prediction and exports see the images unchanged. (Inside the model they would also
stop XLA: Keras's random image layers do not support ``jit_compile``, and XLA trains
an unfrozen ResNet 2.6-3.8x faster on our CPUs.)

- "light":  translation 10 %, rotation 5 % of a turn (18 degrees), zoom 10 %, contrast 10 %
- "strong": translation 20 %, rotation 10 % (36 degrees), zoom 20 %, contrast 30 %

Horizontal flips only with ``flip=True``: a flipped digit or letter is another
symbol, so they are never on by default.

Example:
    >>> augment = augmenter(build_augmentation("light", flip=False, seed=0))
    >>> changed = augment(images)  # float32, same shape
"""

from typing import Optional

import keras
import numpy as np

from resnet_transfer.config import AUGMENT_LEVELS
from resnet_transfer.errors import ConfigError

__all__ = ["build_augmentation", "augmenter", "AUGMENT_SETTINGS"]

# (translation, rotation, zoom, contrast) factors of each level.
AUGMENT_SETTINGS = {"light": (0.1, 0.05, 0.1, 0.1), "strong": (0.2, 0.1, 0.2, 0.3)}


def build_augmentation(level: str, *, flip: bool = False, seed: Optional[int] = None) -> Optional[keras.Sequential]:
    """The augmentation layers of ``level`` ("none" gives None).

    Args:
        level: "none", "light" or "strong".
        flip: add a random horizontal flip.
        seed: seeds the layers, so a run with the same seed sees the same changes.

    Raises:
        ConfigError: an unknown level.
    """
    if level not in AUGMENT_LEVELS:
        raise ConfigError(f"augment must be one of: {', '.join(AUGMENT_LEVELS)}. Received: augment={level!r}")
    if level == "none":
        return None
    translation, rotation, zoom, contrast = AUGMENT_SETTINGS[level]
    layers = [
        keras.layers.RandomTranslation(translation, translation, fill_mode="constant", seed=seed),
        keras.layers.RandomRotation(rotation, fill_mode="constant", seed=seed),
        keras.layers.RandomZoom(zoom, fill_mode="constant", seed=seed),
        keras.layers.RandomContrast(contrast, value_range=(0, 255), seed=seed),
    ]
    if flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    return keras.Sequential(layers, name="augmentation")


def augmenter(augmentation: Optional[keras.Sequential]):
    """A function from a batch of images to the same batch randomly changed (None: None)."""
    if augmentation is None:
        return None

    def augment(images: np.ndarray) -> np.ndarray:
        return keras.ops.convert_to_numpy(augmentation(images, training=True)).astype("float32", copy=False)

    return augment
