"""MixUp and CutMix (``--mixup``, ``--cutmix``): training batches mixed pairwise.

Every row of a batch is mixed with another row of the same batch, and their one-hot
labels the same way (Zhang et al. 2018; Yun et al. 2019). On images, Keras's own
``keras.layers.MixUp`` and ``keras.layers.CutMix`` do it. On a head phase's stored
features (a pooled or flattened vector per image) the vectors are mixed as MixUp mixes
images, ``l * x_i + (1 - l) * x_j`` with ``l`` from Beta(alpha, alpha) for each row
(manifold MixUp at the backbone's output, Verma et al. 2019): Keras's MixUp layer takes
only images, and mixing the vectors keeps the phase on the cache, the backbone never
run again. CutMix has no meaning for a vector, so a cached head phase mixes with MixUp
only. With both, each batch takes one of the two at random, as timm's ``Mixup`` does.

Every batch's draw comes from (seed, epoch, batch), so a resumed run mixes as the run it
continues and the order batches are prepared in does not matter.

Example:
    >>> mix = batch_mixer(config, on_features=True)
    >>> features, labels = mix(features, one_hot, (0, 3, 17))
"""

from typing import Callable, Optional

import keras
import numpy as np

from resnet_transfer.config import TrainConfig

__all__ = ["batch_mixer", "mix_features", "one_hot_labels"]


def one_hot_labels(train: TrainConfig) -> bool:
    """Whether the loss takes one-hot (or mixed) labels: with label smoothing (Keras's
    sparse cross-entropy has none), MixUp or CutMix."""
    return train.label_smoothing > 0 or train.mixup > 0 or train.cutmix > 0


def mix_features(features: np.ndarray, labels: np.ndarray, *, alpha: float, rng: np.random.Generator) -> tuple:
    """MixUp of a batch of feature vectors (any shape after the batch's) and their one-hot labels."""
    weight = rng.beta(alpha, alpha, size=len(features)).astype("float32")
    partner = rng.permutation(len(features))
    rows = weight.reshape(-1, *([1] * (features.ndim - 1)))
    mixed = rows * features + (1 - rows) * features[partner]
    return mixed.astype("float32", copy=False), weight[:, None] * labels + (1 - weight[:, None]) * labels[partner]


def batch_mixer(train: TrainConfig, *, on_features: bool) -> Optional[Callable]:
    """A function ``(inputs, one_hot_labels, key) -> (inputs, labels)`` that mixes one
    training batch, ``key`` being its (seed, epoch, batch); None where nothing is mixed."""
    mixup, cutmix = train.mixup, 0.0 if on_features else train.cutmix
    if not mixup and not cutmix:
        return None

    def mix(inputs: np.ndarray, labels: np.ndarray, key: tuple) -> tuple:
        rng = np.random.default_rng(np.random.SeedSequence([int(part) for part in key]))
        labels = np.asarray(labels, dtype="float32")
        if on_features:
            return mix_features(inputs, labels, alpha=mixup, rng=rng)
        seed = int(rng.integers(2**31 - 1))
        if cutmix and (not mixup or rng.random() < 0.5):
            layer = keras.layers.CutMix(factor=(cutmix, cutmix), seed=seed)  # Beta(a, a), as timm's cutmix_alpha
        else:
            layer = keras.layers.MixUp(alpha=mixup, seed=seed)
        mixed = layer({"images": inputs, "labels": labels}, training=True)
        return (keras.ops.convert_to_numpy(mixed["images"]).astype("float32", copy=False),
                keras.ops.convert_to_numpy(mixed["labels"]).astype("float32", copy=False))

    return mix
