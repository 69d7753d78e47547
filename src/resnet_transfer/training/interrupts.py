"""Ctrl-C during a run: noticed wherever it lands, so the run ends as an interrupt.

Python raises ``KeyboardInterrupt`` in the main thread when the signal's handler runs.
When that happens inside TensorFlow's C++ code running a Python callback, the
exception can come out as another one (a bare ``TypeError``) or be swallowed, and a
run would then crash with a traceback, or carry on as if nothing happened.
``watching_interrupts`` notes every Ctrl-C; ``train`` turns any later error into the
interrupt, and the ``StopOnInterrupt`` callback raises it again at the next batch.

With ``finish_epoch`` (``train``, whose epochs end in a checkpoint), the first Ctrl-C
during an epoch lets that epoch finish and its checkpoint be written, then stops, so
that ``--resume`` loses nothing; a second Ctrl-C stops at once.

SIGTERM (what Slurm and Kubernetes send before they kill a job, and ``kill``'s default)
stops at once as a second Ctrl-C does, with ``errors.Terminated``: the scheduler's grace
period is rarely an epoch long, and the last finished epoch's checkpoint is already
written. Its default (ending the process on the spot) would leave status.json saying
"running" and no line.

Example:
    >>> with watching_interrupts() as interrupts:
    ...     model.fit(..., callbacks=[StopOnInterrupt(interrupts)])
"""

import contextlib
import logging
import signal
import threading

import keras

from resnet_transfer.errors import Terminated

__all__ = ["Interrupts", "StopOnInterrupt", "watching_interrupts"]

logger = logging.getLogger(__name__)


class Interrupts:
    """Whether Ctrl-C arrived while it was watched (``deferred``: while set, the first
    Ctrl-C only asks to stop at the end of the epoch)."""

    def __init__(self):
        self.count = 0
        self.deferred = False
        self.signal_name = "Ctrl-C"  # or "SIGTERM"

    def __bool__(self) -> bool:
        return self.count > 0


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


@contextlib.contextmanager
def watching_interrupts():
    """Yields an ``Interrupts`` that counts every SIGINT while the block runs; the previous
    handler still runs (raising ``KeyboardInterrupt`` by default). SIGTERM, where its
    handler is the default, raises ``Terminated`` instead of ending the process. Only the
    main thread may set handlers; elsewhere nothing changes, and an ignored SIGINT (a
    background job of a script) or a SIGTERM handler someone else set stays as it is."""
    interrupts = Interrupts()
    if threading.current_thread() is not threading.main_thread():
        yield interrupts
        return
    previous = signal.getsignal(signal.SIGINT)
    watch_interrupt = callable(previous)
    watch_terminate = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

    def note_and_interrupt(number, frame):
        interrupts.count += 1
        if interrupts.deferred and interrupts.count == 1:
            logger.warning("Ctrl-C: stopping at the end of this epoch, once its checkpoint is written "
                           "(Ctrl-C again stops at once and loses the epoch)")
            return
        previous(number, frame)

    def note_and_terminate(number, frame):
        interrupts.count += 1
        interrupts.signal_name = "SIGTERM"
        raise Terminated()

    if watch_interrupt:
        signal.signal(signal.SIGINT, note_and_interrupt)
    if watch_terminate:
        signal.signal(signal.SIGTERM, note_and_terminate)
    try:
        yield interrupts
    finally:
        if watch_interrupt:
            signal.signal(signal.SIGINT, previous)
        if watch_terminate:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
