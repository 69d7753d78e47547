"""Batches: (inputs, labels) from arrays or memory maps, in a seeded order per epoch.

Example:
    >>> batches = ArrayBatches(features, labels, batch_size=64, shuffle=True, seed=0)
    >>> probabilities = predict_probabilities(model, features)
"""

import math

import keras
import numpy as np

__all__ = ["ArrayBatches", "predict_probabilities", "INFERENCE_BATCH_SIZE"]

INFERENCE_BATCH_SIZE = 256


class ArrayBatches(keras.utils.PyDataset):
    """Batches of (inputs, labels) from arrays or memory maps, reshuffled every epoch.

    The order of epoch ``e`` depends only on ``seed`` and ``e``, so the cached and the
    end-to-end ways see the same batches. Rows of a batch are read in ascending
    order, which keeps reads from a memory map sequential.

    Args:
        inputs: images or features, N x ...; read lazily batch by batch.
        labels: N integer labels.
        batch_size: rows per batch.
        shuffle: reshuffle at the start of every epoch.
        seed: the shuffling seed.
        first_epoch: the number of the first epoch (a later phase numbers on).
        transform: applied to every batch of inputs (the augmentation of training batches).
    """

    def __init__(self, inputs, labels, *, batch_size: int, shuffle: bool = False, seed: int = 0, first_epoch: int = 0,
                 transform=None, **kwargs):
        super().__init__(**kwargs)
        if len(inputs) != len(labels):
            raise ValueError(f"inputs and labels differ in length: {len(inputs)} != {len(labels)}")
        self.inputs, self.labels = inputs, np.asarray(labels)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epoch = first_epoch
        self.transform = transform
        self.order = self._order()

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.labels))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.labels))

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index: int):
        rows = np.sort(self.order[index * self.batch_size : (index + 1) * self.batch_size])
        inputs = np.asarray(self.inputs[rows], dtype="float32")
        return (self.transform(inputs) if self.transform else inputs), self.labels[rows]

    def on_epoch_end(self):
        self.epoch += 1
        self.order = self._order()


def predict_probabilities(model: keras.Model, inputs) -> np.ndarray:
    """The model's outputs for every row of ``inputs`` (images or features), in order."""
    return model.predict(ArrayBatches(inputs, np.zeros(len(inputs), np.int64), batch_size=INFERENCE_BATCH_SIZE), verbose=0)
