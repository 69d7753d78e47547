"""Layer-wise learning-rate decay (``--lr-decay F``): in the fine-tune phase, each stage of
the backbone trains at F times the rate of the stage above it.

The head trains at the phase's rate, stage conv5 at ``F * rate``, conv4 at ``F**2 * rate``,
down to the stem (conv1) at ``F**5 * rate``: timm's ``--layer-decay`` (per stage, as its
ResNet groups do), fastai's discriminative rates (``slice(lo, hi)``). Pretrained lower
stages hold general features that a small target set should move least.

Keras 3 has no per-variable learning rate (keras-team/keras#21741, open), and scaling the
gradients instead would do nothing under Adam, whose step does not depend on the
gradient's scale. So ``LayerwiseAdam`` and ``LayerwiseAdamW`` are Keras's own optimizers
with ``update_step``, the method Keras's optimizers are written in, given the variable's
factor times the rate (``_keras_compat.variable_index`` finds which variable a step is
for). Keras's schedules and callbacks that change ``learning_rate`` still work: the
factors multiply whatever the rate is. AdamW's decoupled weight decay is applied by Keras
at the phase's rate to every variable, not scaled by the factor.

The saved model is compiled with the plain optimizer (``phases``), so it loads in plain
Keras; the factors are in the run's config (``train.lr_decay``).

Example:
    >>> factors = stage_rate_factors(model, decay=0.7)
    >>> optimizer = LayerwiseAdam(learning_rate=1e-4, rate_factors=factors)
"""

from typing import Optional

import keras

from resnet_transfer._keras_compat import variable_index
from resnet_transfer.registry import stage_of_layer

__all__ = ["LayerwiseAdam", "LayerwiseAdamW", "stage_rate_factors"]

TOP_STAGE = 5  # Keras's ResNets: stem conv1, stages conv2 to conv5


def stage_rate_factors(backbone: keras.Model, decay: float) -> dict:
    """{variable path: decay ** (stages from the head)} for every variable of ``backbone``'s
    stages (its top stage, conv5 or the cut's, is one from the head); the head's variables are
    not in it (factor 1)."""
    stages = {layer.name: stage_of_layer(layer.name) for layer in backbone.layers}
    top = max((stage for stage in stages.values() if stage is not None), default=TOP_STAGE)  # (a cut backbone's)
    factors = {}
    for layer in backbone.layers:
        if stages[layer.name] is not None:
            for variable in layer.weights:
                factors[variable.path] = float(decay ** (top + 1 - stages[layer.name]))
    return factors


class _StageRates:
    """An optimizer whose ``update_step`` scales the rate by each variable's factor."""

    def __init__(self, *args, rate_factors: Optional[dict] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.rate_factors = dict(rate_factors or {})
        self._factors = []

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._factors = [self.rate_factors.get(variable.path, 1.0) for variable in variables]

    def update_step(self, gradient, variable, learning_rate):
        factor = self._factors[variable_index(self, variable)]
        return super().update_step(gradient, variable, learning_rate if factor == 1.0 else learning_rate * factor)

    def get_config(self):
        return {**super().get_config(), "rate_factors": self.rate_factors}


@keras.saving.register_keras_serializable(package="resnet_transfer")
class LayerwiseAdam(_StageRates, keras.optimizers.Adam):
    """Keras's Adam with a learning-rate factor per variable (``rate_factors``: {path: factor})."""


@keras.saving.register_keras_serializable(package="resnet_transfer")
class LayerwiseAdamW(_StageRates, keras.optimizers.AdamW):
    """Keras's AdamW with a learning-rate factor per variable (``rate_factors``: {path: factor})."""
