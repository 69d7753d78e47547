"""The Keras callbacks a run adds to ``fit``: the epoch timer that records history,
a progress bar whose count is right, and the stop after Ctrl-C or SIGTERM."""

import time
from typing import Callable, Optional

import keras

from resnet_transfer.signals import Interrupts

__all__ = ["EpochTimer", "StepProgress", "StopOnInterrupt"]


class EpochTimer(keras.callbacks.Callback):
    """Records every finished epoch: its wall-clock seconds in ``seconds``, its metrics and
    phase in ``history`` (Keras's names, and "phase"; ``fit`` sets ``phase``).

    Args:
        write: called as ``write(history, seconds)`` after every epoch (``Run.write_history``),
            so that a run killed in its tenth epoch leaves nine rows of history.csv.
        history, seconds: the epochs before (a resumed run's).
    """

    def __init__(self, write: Optional[Callable[[dict, list], None]] = None, *, history: Optional[dict] = None,
                 seconds: Optional[list] = None):
        super().__init__()
        self.seconds = list(seconds or [])
        self.history = {name: list(values) for name, values in (history or {}).items()}
        self.phase = "head"
        self._write = write

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._started)
        for name, value in (logs or {}).items():
            self.history.setdefault(name, []).append(float(value))
        self.history.setdefault("phase", []).append(self.phase)
        if self._write is not None:
            self._write(self.history, self.seconds)


class StepProgress(keras.callbacks.ProgbarLogger):
    """Keras's progress bar with its count held to the epoch's steps. With
    ``steps_per_execution`` Keras reports the last step of a call as the batch that ended,
    and a call that runs past the epoch's end reports a step the epoch does not have, so the
    bar showed "16/10" and negative times left (keras-team/keras#20861)."""

    def _held(self, batch: int) -> int:
        return batch if self.target is None else min(batch, self.target - 1)

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(self._held(batch), logs)

    def on_test_batch_end(self, batch, logs=None):
        super().on_test_batch_end(self._held(batch), logs)


class StopOnInterrupt(keras.callbacks.Callback):
    """Raises ``KeyboardInterrupt`` at the next batch or epoch once Ctrl-C has arrived,
    even when native code swallowed the first one; with ``finish_epoch``, a Ctrl-C during
    an epoch stops at its end (put this callback after the ones that record the epoch)."""

    def __init__(self, interrupts: Interrupts, *, finish_epoch: bool = False):
        super().__init__()
        self.interrupts = interrupts
        self.finish_epoch = finish_epoch

    def _check(self, *arguments, **keywords) -> None:
        if self.interrupts and not self.interrupts.deferred:
            raise KeyboardInterrupt

    on_train_batch_end = on_test_batch_end = on_predict_batch_end = _check

    def on_epoch_begin(self, epoch, logs=None):
        self._check()
        self.interrupts.deferred = self.finish_epoch

    def on_epoch_end(self, epoch, logs=None):
        self.interrupts.deferred = False
        self._check()

    def on_train_end(self, logs=None):
        self.interrupts.deferred = False
