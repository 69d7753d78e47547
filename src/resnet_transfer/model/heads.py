"""Heads: the small trainable classifier put on a frozen backbone's features.

Example:
    >>> head = build_head((1, 1, 2048), units=1000, num_classes=10)
    >>> head.count_params()
    2059010
"""

import keras

from resnet_transfer.errors import ConfigError

__all__ = ["build_head"]


def build_head(feature_shape: tuple, *, units: int = 1000, num_classes: int = 10) -> keras.Model:
    """The seed recipe's head: Flatten -> Dense(units, relu) -> Dense(num_classes, softmax).

    Args:
        feature_shape: the backbone's output shape without the batch axis.
        units: width of the hidden layer.
        num_classes: number of output classes (at least 2).

    Returns:
        A ``keras.Sequential`` named "head", which takes features and returns probabilities.

    Raises:
        ConfigError: fewer than 2 classes.
    """
    if num_classes < 2:
        raise ConfigError(f"num_classes must be at least 2. Received: num_classes={num_classes}")
    return keras.Sequential(
        [
            keras.Input(shape=tuple(feature_shape), name="features"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(units, activation="relu", name="hidden"),
            keras.layers.Dense(num_classes, activation="softmax", name="probabilities"),
        ],
        name="head",
    )
