"""The frozen-weights check: weights a phase must not train are bit-identical after it.

The classic transfer-learning bug is a "frozen" backbone whose weights change anyway,
most often a BatchNormalization layer that runs in training mode and moves its
moving mean and variance (keras-team/keras#9214, Lightning-AI/pytorch-lightning#15062).
``FrozenWeights`` takes one SHA-256 per variable at the start of a phase (never a
second copy of the weights) and lists the variables whose bytes differ at its end.

Checked: every non-trainable weight of the model (``keras.Model.non_trainable_weights``:
frozen kernels and biases, the preprocessing's fixed convolution, and the moving
statistics of every BatchNormalization layer, which are never trainable). Random-seed
state and metric counters are not weights and are not checked.

Example:
    >>> frozen = FrozenWeights.of(model)
    >>> model.fit(...)
    >>> frozen.changed()
    []
"""

import hashlib

import keras
import numpy as np

__all__ = ["FrozenWeights", "variable_digest"]


def variable_digest(variable) -> str:
    """SHA-256 of a variable's dtype, shape and bytes."""
    values = np.ascontiguousarray(keras.ops.convert_to_numpy(variable))
    return hashlib.sha256(f"{values.dtype}|{values.shape}|".encode() + values.tobytes()).hexdigest()


class FrozenWeights:
    """The digests of a model's non-trainable weights at one moment.

    Args:
        variables: the variables to watch; ``digests`` holds their ``variable_digest`` in order.
    """

    def __init__(self, variables: list):
        self.variables = list(variables)
        self.digests = [variable_digest(variable) for variable in self.variables]

    @classmethod
    def of(cls, model: keras.Model) -> "FrozenWeights":
        """Digests of every non-trainable weight of ``model``, as its trainable flags are now."""
        return cls(model.non_trainable_weights)

    def changed(self) -> list:
        """Paths of the variables whose values differ from when the digests were taken."""
        return [variable.path for variable, digest in zip(self.variables, self.digests) if variable_digest(variable) != digest]

    def __len__(self) -> int:
        return len(self.variables)
