"""Weight interpolation after fine-tuning (WiSE-FT, Wortsman et al. 2022): ``--interpolate``.

The fine-tuned model's weights are mixed with those it started the fine-tune phase from (the end
of the head phase), ``(1 - a) * before + a * after``, with ``a`` picked on the validation split from
``GRID`` ("auto") or given. A weight that the fine-tune phase left as it was (a frozen layer, the
BatchNormalization statistics) keeps its exact value, so the frozen-weights check still holds.
``a = 1`` is the fine-tuned model itself and ``a = 0`` the model before fine-tuning, bit for bit.

A run keeps the weights it starts the fine-tune phase from in its checkpoints folder
(``BEFORE_FINE_TUNE``), so a resumed fine-tune phase interpolates as an uninterrupted one does.

Example:
    >>> before = model.get_weights()  # before the fine-tune phase
    >>> ...  # fine-tune
    >>> record = interpolate(model, before, setting="auto", validation=(x_val, y_val))
    >>> record["alpha"], record["curve"][0]
    (0.6, {'alpha': 0.0, 'val_accuracy': 0.81})
"""

import os
from typing import Optional

import keras
import numpy as np

from resnet_transfer.config import interpolation_weight
from resnet_transfer.files import atomic_path
from resnet_transfer.inference import predict_probabilities

__all__ = ["BEFORE_FINE_TUNE", "GRID", "interpolate", "interpolation_weight", "load_before", "mix", "save_before"]

GRID = tuple(step / 10 for step in range(11))  # a = 0, 0.1, ..., 1
BEFORE_FINE_TUNE = "before-fine-tune.npz"  # in a run's checkpoints folder


def mix(before: list, after: list, alpha: float) -> list:
    """``(1 - alpha) * before + alpha * after`` weight by weight; an unchanged weight (or 0 and 1
    themselves) exactly as it is."""
    if alpha == 0:
        return [np.array(weight) for weight in before]
    if alpha == 1:
        return [np.array(weight) for weight in after]
    return [np.array(second) if np.array_equal(first, second) else
            ((1 - alpha) * first + alpha * second).astype(second.dtype) for first, second in zip(before, after)]


def interpolate(model: keras.Model, before: list, *, setting, validation: tuple) -> dict:
    """Sets ``model``'s weights to their mix with ``before`` and returns the record for
    metrics.json: the setting, the ``alpha`` used and the validation accuracy of each ``a``
    tried (``curve``: every point of ``GRID`` for "auto", else the one given). Ties go to the
    larger ``a`` (the nearer to the fine-tuned model)."""
    after = model.get_weights()
    images, labels = validation
    alphas = GRID if setting == "auto" else (interpolation_weight(setting),)
    curve = []
    for alpha in alphas:
        model.set_weights(mix(before, after, alpha))
        accuracy = float(np.mean(np.argmax(predict_probabilities(model, images), axis=-1) == labels)) if len(labels) else None
        curve.append({"alpha": alpha, "val_accuracy": accuracy})
    best = max(curve, key=lambda point: (point["val_accuracy"] or 0.0, point["alpha"]))
    model.set_weights(mix(before, after, best["alpha"]))
    return {"setting": str(setting), "alpha": best["alpha"], "curve": curve}


def save_before(model: keras.Model, folder: str) -> None:
    """Keeps ``model``'s weights in ``folder``'s ``BEFORE_FINE_TUNE`` (atomically)."""
    os.makedirs(folder, exist_ok=True)
    with atomic_path(os.path.join(folder, BEFORE_FINE_TUNE)) as temporary:
        with open(temporary, "wb") as handle:
            np.savez(handle, *model.get_weights())


def load_before(folder: str, model: keras.Model) -> Optional[list]:
    """The weights ``save_before`` kept for ``model`` in ``folder`` (None where there are none)."""
    path = os.path.join(folder, BEFORE_FINE_TUNE)
    if not os.path.isfile(path):
        return None
    with np.load(path) as stored:
        weights = [stored[f"arr_{index}"] for index in range(len(stored.files))]
    if [weight.shape for weight in weights] != [tuple(weight.shape) for weight in model.weights]:
        return None
    return weights
