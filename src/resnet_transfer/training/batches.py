"""Batches: (inputs, labels) from arrays or memory maps, in a seeded order per epoch.

Example:
    >>> batches = ArrayBatches(features, labels, batch_size=64, shuffle=True, seed=0)
    >>> in_memory, why = fits_in_memory(features, labels)
    >>> batches = TensorBatches(features, labels, batch_size=64, shuffle=True, seed=0)  # the same batches
"""

import functools
import itertools
import math
import os
import weakref
from typing import Optional, Union

import keras
import numpy as np

__all__ = ["ArrayBatches", "EpochOrder", "TensorBatches", "class_weight_to_sample_weight", "fits_in_memory",
           "INFERENCE_BATCH_SIZE", "MEMORY_SHARE"]

INFERENCE_BATCH_SIZE = 256
# Training arrays are copied into memory (``TensorBatches``) when they take at most this share
# of the memory available; else they are read batch by batch (``ArrayBatches``).
MEMORY_SHARE = 0.5


def epoch_order(count: int, *, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    """The rows of epoch ``epoch`` in order: shuffled by (seed, epoch) alone, so that any
    process, resumed or not, sees the same order."""
    if not shuffle:
        return np.arange(count)
    return np.random.default_rng([seed, epoch]).permutation(count)


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
        mix: applied to every batch after ``transform``, ``mix(inputs, labels, (seed, epoch,
            batch)) -> (inputs, labels)`` (MixUp and CutMix: ``training.mixing``).
        pieces: the replicas a batch is shared among (1: none).
        mine: the pieces this process gives, in order (None: every piece).
        sample_weight: a weight per row of ``inputs``, given as a third element of every batch.
    """

    def __init__(self, inputs, labels, *, batch_size: int, shuffle: bool = False, seed: int = 0, first_epoch: int = 0,
                 transform=None, mix=None, pieces: int = 1, mine: Optional[list] = None,
                 sample_weight: Optional[np.ndarray] = None, **kwargs):
        super().__init__(**kwargs)
        if len(inputs) != len(labels):
            raise ValueError(f"inputs and labels differ in length: {len(inputs)} != {len(labels)}")
        self.inputs, self.labels = inputs, np.asarray(labels)
        self.pieces, self.mine = pieces, list(range(pieces)) if mine is None else list(mine)
        self.sample_weight = sample_weight
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epoch = first_epoch
        self.transform, self.mix = transform, mix
        self.order = self._order()

    def _order(self) -> np.ndarray:
        return epoch_order(len(self.labels), shuffle=self.shuffle, seed=self.seed, epoch=self.epoch)

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
        inputs, labels = (self.transform(inputs) if self.transform else inputs), self.labels[rows]
        if self.mix is not None:
            inputs, labels = self.mix(inputs, labels, (self.seed, self.epoch, index))
        batch = inputs, labels
        return batch if self.sample_weight is None else (*batch, self.sample_weight[rows])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.order = self._order()


def available_memory() -> Optional[int]:
    """Bytes of memory new allocations can take: Linux's MemAvailable (else the free pages),
    or less where a cgroup (v2) limits this process's memory; None where the system does not say."""
    available = None
    try:
        with open("/proc/meminfo") as lines:
            for line in lines:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    try:
        with open("/sys/fs/cgroup/memory.max") as limit, open("/sys/fs/cgroup/memory.current") as used:
            ceiling = limit.read().strip()
            if ceiling != "max":
                available = min(available, max(0, int(ceiling) - int(used.read())))
    except (OSError, ValueError):
        pass
    return available


def fits_in_memory(*arrays) -> tuple:
    """Whether ``arrays`` (read-only arrays or memory maps) can be held in memory as tensors
    for ``TensorBatches``: at most ``MEMORY_SHARE`` of the memory available, with the
    TensorFlow backend (``TensorBatches`` uses TensorFlow). Returns (bool, why, for the log)."""
    if keras.backend.backend() != "tensorflow":
        return False, f"read batch by batch: in-memory batches are TensorFlow's, and the backend is {keras.backend.backend()}"
    needed = sum(np.asarray(array).nbytes for array in arrays)
    available = available_memory()
    if available is None:
        return False, "read batch by batch: the system does not say how much memory is available"
    figures = f"{needed / 2**20:,.0f} MiB; {available / 2**20:,.0f} MiB available, share {MEMORY_SHARE:g}"
    if needed > MEMORY_SHARE * available:
        return False, f"read batch by batch from the arrays or memory maps: too large to copy into memory ({figures})"
    return True, f"held in memory ({figures})"


class TensorBatches:
    """``ArrayBatches``' batches (the same rows in the same order, epoch by epoch) from arrays
    copied into memory as tensors, with no Python per batch beyond a gather (``ArrayBatches``
    calls Python for every batch), as Keras's own ``fit(x, y)`` serves in-memory arrays
    (benchmarks/README.md: "Head training on stored features").

    Two ways to the same batches: ``dataset`` (tf.data, what ``fit`` takes), and
    ``train_function(model)``, Keras's train function for a small model on a CPU, which
    gathers every batch in the caller's thread (why: its docstring), with ``step_counter``
    for ``fit`` to count the steps by. ``EpochOrder`` sets every epoch's order as the epoch
    begins (``train_function`` needs it: without it a second epoch has no batches).
    TensorFlow backend only (``fits_in_memory``); no augmentation, no cluster
    (``ArrayBatches`` does those).

    Args:
        inputs: images or features, N x ...; cast to float32 batch by batch.
        labels: N labels (integers, or one-hot rows).
        batch_size, shuffle, seed, first_epoch: as for ``ArrayBatches``.
        sample_weight: a weight per row, given as a third element of every batch (class
            weights: ``class_weight_to_sample_weight``).
        prefetch: whether ``dataset`` prepares batches ahead in tf.data's threads; without,
            it runs no thread of its own (validation batches: Keras opens the next pass's
            iterator as soon as one ends, so a prefetching one would run beside the
            training steps, which slows them, see ``train_function``).
    """

    def __init__(self, inputs, labels, *, batch_size: int, shuffle: bool = False, seed: int = 0,
                 first_epoch: int = 0, sample_weight: Optional[np.ndarray] = None, prefetch: bool = True):
        import tensorflow as tf

        if len(inputs) != len(labels):
            raise ValueError(f"inputs and labels differ in length: {len(inputs)} != {len(labels)}")
        self.count, self.batch_size, self.shuffle, self.seed = len(labels), batch_size, shuffle, seed
        # A memory map is read into memory here (TensorFlow could otherwise keep reading the file).
        inputs = np.array(inputs) if isinstance(inputs, np.memmap) else np.asarray(inputs)
        self._tensors = (tf.constant(inputs), tf.constant(np.asarray(labels)))
        if sample_weight is not None:
            self._tensors += (tf.constant(np.asarray(sample_weight, dtype="float32")),)
        self.set_epoch(first_epoch)

        def batch(rows):
            return self._gather(tf.sort(rows))  # ascending, as ArrayBatches reads them

        # The generator runs once per epoch (every pass through the dataset starts it anew) and
        # gives that epoch's whole order.
        orders = tf.data.Dataset.from_generator(lambda: iter([self.order]),
                                                output_signature=tf.TensorSpec([self.count], tf.int64))
        batches = orders.unbatch().batch(batch_size)
        batches = batches.map(batch, num_parallel_calls=tf.data.AUTOTUNE) if prefetch else batches.map(batch)
        self.dataset = batches.apply(tf.data.experimental.assert_cardinality(len(self)))
        if prefetch:
            self.dataset = self.dataset.prefetch(tf.data.AUTOTUNE)

    def __len__(self) -> int:
        return math.ceil(self.count / self.batch_size)

    @functools.cached_property
    def step_counter(self):
        """What ``fit`` reads when the batches come from ``train_function``: the first rows'
        batch once per step, for the batches' structure and their number; no tf.data
        pipeline runs beside the steps."""
        import tensorflow as tf

        return tf.data.Dataset.from_tensors(self._gather(np.arange(min(self.batch_size, self.count)))).repeat(len(self))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.order = epoch_order(self.count, shuffle=self.shuffle, seed=self.seed, epoch=epoch).astype(np.int64)
        self._epoch_rows = (np.sort(self.order[start : start + self.batch_size])
                            for start in range(0, self.count, self.batch_size))

    def _gather(self, rows) -> tuple:
        import tensorflow as tf

        inputs, *rest = (tf.gather(tensor, rows) for tensor in self._tensors)
        return (tf.cast(inputs, tf.float32), *rest)

    def train_function(self, model: keras.Model):
        """A train function for ``model.fit`` (``fit`` keeps one that is set before it is
        called; ``compile`` clears it): every call gathers the epoch's next
        ``steps_per_execution`` batches in the caller's thread (as one tensor per input,
        stacked) and runs their steps in a ``tf.while_loop`` of one traced function,
        compiled by XLA as one program when ``model.jit_compile`` is True. Keras's own
        ``train_step`` runs every step (losses, metrics, sample weights, the optimizer); the
        logs are the metrics' results after the last step, as ``train_step`` returns them.
        Give ``fit`` ``step_counter``, not ``dataset``; only where ``distribution.trains_locally``
        (the steps do not go through ``strategy.run``).

        Why: on a CPU, epochs whose batches came through a tf.data iterator (Keras's own
        train function, or this one reading the iterator) ran at two speeds, a whole epoch at
        a time: the head on 58,000 stored features, 9.4-10.7 s with about one core busy, or
        5.3-7 s with 1.8, about half and half in a process; with ``dataset``'s pipeline merely
        open beside the steps, 9.5-10.6 s in every epoch. With the batches gathered here and
        ``step_counter`` given to ``fit``: 5.4-7.2 s in 14 of 14 epochs of two processes
        (benchmarks/README.md). The step is traced once, not once per step of a call: with
        8 steps unrolled, tracing and compiling took about 3 s more in the seed recipe's
        head and 2 s more in a small run, at the same speed once compiled (benchmarks/README.md).
        Not for a ResNet: its fine-tune epochs ran 3x slower here than in Keras's own function.
        """
        import tensorflow as tf

        reference = weakref.ref(model)  # the function does not keep the model alive

        def steps(batches):
            model = reference()

            def step(index):
                model.train_step(tuple(tensor[index] for tensor in batches))
                return (index + 1,)

            tf.while_loop(lambda index: index < tf.shape(batches[0])[0], step, (tf.constant(0),))
            return model.get_metrics_result()  # what train_step returns, after the last step

        traced = tf.function(steps, jit_compile=model.jit_compile is True, reduce_retracing=True, autograph=False)
        count = model.steps_per_execution

        def train_function(iterator):
            rows = list(itertools.islice(self._epoch_rows, count))
            if not rows:
                raise StopIteration
            for _, same_size in itertools.groupby(rows, len):  # the epoch's last batch may be smaller
                logs = traced(self._gather(np.stack(list(same_size))))
            return logs

        return train_function


def class_weight_to_sample_weight(labels: np.ndarray, class_weight: dict) -> np.ndarray:
    """A weight per row of (integer) ``labels``, as Keras turns ``class_weight`` into sample
    weights: the label's weight, 1.0 for a label not in ``class_weight``."""
    return np.array([class_weight.get(int(label), 1.0) for label in labels], dtype="float32")


class EpochOrder(keras.callbacks.Callback):
    """Gives ``batches`` the order of every epoch as it begins: epoch ``e`` is shuffled by
    (seed, e) whoever reads the batches. (``PyDataset.on_epoch_end`` would not do: Keras
    also calls it once before the first epoch, and not at all for batches it reads
    through tf.data, as a cluster's workers do.)"""

    def __init__(self, batches: Union[ArrayBatches, TensorBatches]):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.set_epoch(epoch)
