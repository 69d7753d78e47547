"""Batches: (inputs, labels) from arrays or memory maps, in a seeded order per epoch.

Example:
    >>> batches = ArrayBatches(features, labels, batch_size=64, shuffle=True, seed=0)
    >>> probabilities = predict_probabilities(model, features)
"""

import math
from typing import Optional

import keras
import numpy as np

from resnet_transfer.training.distribution import local_predict, worker_role

__all__ = ["ArrayBatches", "EpochOrder", "predict_probabilities", "INFERENCE_BATCH_SIZE"]

INFERENCE_BATCH_SIZE = 256


class ArrayBatches(keras.utils.PyDataset):
    """Batches of (inputs, labels) from arrays or memory maps, reshuffled every epoch.

    The order of epoch ``e`` depends only on ``seed`` and ``e`` (``EpochOrder`` sets it),
    so the cached and the end-to-end ways, and a resumed run, see the same batches. Rows of a batch are read in ascending
    order, which keeps reads from a memory map sequential.

    On a cluster every batch is cut into one piece per replica (``pieces``), and a worker
    batches only its replicas' pieces (``mine``): the replicas of a step together see
    the rows of the batch that one process would see, so a cluster trains as one process
    does, each worker reading only its share. A last batch too small to give every
    replica a row is left out (then fewer than ``pieces`` rows of an epoch).

    Args:
        inputs: images or features, N x ...; read lazily batch by batch.
        labels: N integer labels.
        batch_size: rows per batch (the global batch on a cluster).
        shuffle: reshuffle at the start of every epoch (``EpochOrder`` says when).
        seed: the shuffling seed.
        first_epoch: the number of the first epoch (a later phase numbers on).
        transform: applied to every batch of inputs (the augmentation of training batches).
        pieces: the replicas a batch is shared among (1: none).
        mine: the pieces this process gives, in order (None: every piece).
        sample_weight: a weight per row of ``inputs``, given as a third element of every batch.
    """

    def __init__(self, inputs, labels, *, batch_size: int, shuffle: bool = False, seed: int = 0, first_epoch: int = 0,
                 transform=None, pieces: int = 1, mine: Optional[list] = None,
                 sample_weight: Optional[np.ndarray] = None, **kwargs):
        super().__init__(**kwargs)
        if len(inputs) != len(labels):
            raise ValueError(f"inputs and labels differ in length: {len(inputs)} != {len(labels)}")
        self.inputs, self.labels = inputs, np.asarray(labels)
        self.pieces, self.mine = pieces, list(range(pieces)) if mine is None else list(mine)
        self.sample_weight = sample_weight
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epoch = first_epoch
        self.transform = transform
        self.order = self._order()

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.labels))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.labels))

    def __len__(self) -> int:
        full, rest = divmod(len(self.labels), self.batch_size)
        return (full + (rest >= self.pieces)) * len(self.mine)

    def __getitem__(self, index: int):
        batch, piece = divmod(index, len(self.mine))
        rows = self.order[batch * self.batch_size : (batch + 1) * self.batch_size]
        if self.pieces > 1:
            rows = np.array_split(rows, self.pieces)[self.mine[piece]]
        rows = np.sort(rows)
        inputs = np.asarray(self.inputs[rows], dtype="float32")
        batch = (self.transform(inputs) if self.transform else inputs), self.labels[rows]
        return batch if self.sample_weight is None else (*batch, self.sample_weight[rows])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.order = self._order()


class EpochOrder(keras.callbacks.Callback):
    """Gives ``batches`` the order of every epoch as it begins: epoch ``e`` is shuffled by
    (seed, e) whoever reads the batches. (``PyDataset.on_epoch_end`` would not do: Keras
    also calls it once before the first epoch, and not at all for batches it reads
    through tf.data, as a cluster's workers do.)"""

    def __init__(self, batches: ArrayBatches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.set_epoch(epoch)


def predict_probabilities(model: keras.Model, inputs) -> np.ndarray:
    """The model's outputs for every row of ``inputs`` (images or features), in order
    (on a cluster, every worker computes them all: ``local_predict``)."""
    if worker_role() is not None:
        return local_predict(model, inputs, batch_size=INFERENCE_BATCH_SIZE)
    return model.predict(ArrayBatches(inputs, np.zeros(len(inputs), np.int64), batch_size=INFERENCE_BATCH_SIZE), verbose=0)
