"""The Keras runtime: the feature extractor itself, called batch by batch in inference mode
(``cache.extraction.predict_in_batches``), bit for bit what the model computes end to end.
Here is what "auto" needs to know about it: its pass's expected time, estimated from the
backbone's multiply-adds (``multiply_adds``) at the rate Keras reached per core on this
project's machine (``projected_seconds``).

Example:
    >>> multiply_adds(extractor)  # one image through the backbone
    >>> seconds = projected_seconds(extractor, len(x_train))
"""

import keras
import numpy as np

from resnet_transfer.runtimes.runner import cores

__all__ = ["KERAS_MULTIPLY_ADDS_PER_CORE_SECOND", "multiply_adds", "projected_seconds"]

# Measured with predict on 2 cores (AVX-512): ResNet-50 at 224 px 23.5e9, at 32 px 31e9; ResNet-152 at 32 px 23e9.
KERAS_MULTIPLY_ADDS_PER_CORE_SECOND = 25e9


def multiply_adds(model: keras.Model) -> int:
    """Multiply-adds of one image through ``model``'s convolutions and dense layers (nested
    models included), from the layers' kernels and output shapes."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += multiply_adds(layer)
        elif isinstance(layer, keras.layers.Conv2D):
            total += int(np.prod(layer.output.shape[1:-1])) * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return total


def projected_seconds(extractor: keras.Model, count: int) -> float:
    """Keras's pass over ``count`` images, estimated from the extractor's multiply-adds at
    the rate Keras's ``predict`` reached per core on this project's machine."""
    return multiply_adds(extractor) * count / (KERAS_MULTIPLY_ADDS_PER_CORE_SECOND * cores())
