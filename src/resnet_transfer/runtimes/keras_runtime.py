"""The Keras runtime: the feature extractor itself, called batch by batch in inference mode
(``cache.extraction.predict_in_batches``), bit for bit what the model computes end to end,
and the size of its work: ``multiply_adds`` (what the benchmarks report beside speeds).

Example:
    >>> multiply_adds(extractor)  # one image through the backbone
"""

import keras
import numpy as np

__all__ = ["multiply_adds"]


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
