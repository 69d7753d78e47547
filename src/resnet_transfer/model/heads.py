"""Heads: the small classifier put on a backbone's feature map.

Every head starts with its pooling layer, named "pooling", which turns the
feature map into a vector (Keras applications' ``pooling`` argument is the
anchor): ``Flatten`` (the article's), ``GlobalAveragePooling2D`` or
``GlobalMaxPooling2D``. What follows depends on the head:

- "seed":   pooling -> Dense(units, relu) -> Dense(C, softmax)   (the article's head)
- "linear": pooling -> Dense(C, softmax)
- "mlp":    pooling -> Dropout -> Dense(units, relu) -> Dropout -> Dense(C, softmax)

"auto" pooling is flatten when the feature map is 1x1 (the seed recipe's 32 px
input, so its model stays the article's, bit for bit) and average pooling
otherwise, so that a 224 px input does not make a 100-million-parameter head.

Example:
    >>> head = build_head((1, 1, 2048), head="seed", pooling="auto", units=1000, num_classes=10)
    >>> head.count_params()
    2059010
"""

import keras

from resnet_transfer.config import HEADS, POOLINGS
from resnet_transfer.errors import ConfigError

__all__ = ["build_head", "resolve_pooling", "classifier_on_features"]

_POOLING_LAYERS = {
    "flatten": keras.layers.Flatten,
    "avg": keras.layers.GlobalAveragePooling2D,
    "max": keras.layers.GlobalMaxPooling2D,
}


def resolve_pooling(pooling: str, feature_shape: tuple) -> tuple:
    """The pooling that ``pooling`` means for a feature map of ``feature_shape``, and why.

    Returns:
        ("flatten" | "avg" | "max", a reason for the log).
    """
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling must be one of: {', '.join(POOLINGS)}. Received: pooling={pooling!r}")
    if pooling != "auto":
        return pooling, "as asked"
    height, width = feature_shape[:2]
    if (height, width) == (1, 1):
        return "flatten", "auto: the feature map is 1x1, so flattening keeps the article's head"
    return "avg", (f"auto: the feature map is {height}x{width}; flattening it would give a head "
                   f"{height * width}x larger, so it is average-pooled")


def build_head(feature_shape: tuple, *, head: str = "seed", pooling: str = "auto", units: int = 1000,
               dropout: float = 0.2, num_classes: int = 10) -> keras.Model:
    """Builds a head for a feature map of ``feature_shape``.

    Args:
        feature_shape: the backbone's output shape without the batch axis, (height, width, channels).
        head: "seed", "linear" or "mlp".
        pooling: "auto", "flatten", "avg" or "max" (see ``resolve_pooling``).
        units: width of the hidden layer (seed and mlp).
        dropout: rate of the mlp head's two Dropout layers.
        num_classes: number of output classes (at least 2).

    Returns:
        A ``keras.Sequential`` named "head" from feature maps to probabilities, whose first
        layer is the pooling (named "pooling") and last the softmax layer ("probabilities").

    Raises:
        ConfigError: an unknown head or pooling, or fewer than 2 classes.
    """
    if head not in HEADS:
        raise ConfigError(f"head must be one of: {', '.join(HEADS)}. Received: head={head!r}")
    if num_classes < 2:
        raise ConfigError(f"num_classes must be at least 2. Received: num_classes={num_classes}")
    resolved, _ = resolve_pooling(pooling, feature_shape)
    layers = [keras.Input(shape=tuple(feature_shape), name="features"), _POOLING_LAYERS[resolved](name="pooling")]
    if head == "seed":
        layers.append(keras.layers.Dense(units, activation="relu", name="hidden"))
    elif head == "mlp":
        layers += [
            keras.layers.Dropout(dropout, name="dropout"),
            keras.layers.Dense(units, activation="relu", name="hidden"),
            keras.layers.Dropout(dropout, name="hidden_dropout"),
        ]
    # float32 whatever the dtype policy: under mixed precision the softmax stays in full precision.
    layers.append(keras.layers.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32"))
    return keras.Sequential(layers, name="head")


def classifier_on_features(head: keras.Model) -> keras.Model:
    """The head without its pooling layer: a model from pooled features to probabilities.

    It shares the head's layers (training it trains the head), so the head can be fit
    on features that were pooled once and stored.
    """
    pooled_size = head.get_layer("pooling").output.shape[-1]
    return keras.Sequential([keras.Input(shape=(pooled_size,), name="pooled_features"), *head.layers[1:]],
                            name="head_on_features")
