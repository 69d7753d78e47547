"""Ctrl-C during a run: noticed wherever it lands, so the run ends as an interrupt.

Python raises ``KeyboardInterrupt`` in the main thread when the signal's handler runs.
When that happens inside TensorFlow's C++ code running a Python callback, the
exception can come out as another one (a bare ``TypeError``) or be swallowed, and a
run would then crash with a traceback, or carry on as if nothing happened.
``watching_interrupts`` notes every Ctrl-C; ``train`` turns any later error into the
interrupt, and the ``StopOnInterrupt`` callback raises it again at the next batch.

Example:
    >>> with watching_interrupts() as interrupts:
    ...     model.fit(..., callbacks=[StopOnInterrupt(interrupts)])
"""

import contextlib
import signal
import threading

import keras

__all__ = ["Interrupts", "StopOnInterrupt", "watching_interrupts"]


class Interrupts:
    """Whether Ctrl-C arrived while it was watched."""

    def __init__(self):
        self.count = 0

    def __bool__(self) -> bool:
        return self.count > 0


class StopOnInterrupt(keras.callbacks.Callback):
    """Raises ``KeyboardInterrupt`` at the next batch or epoch once Ctrl-C has arrived,
    even when native code swallowed the first one."""

    def __init__(self, interrupts: Interrupts):
        super().__init__()
        self.interrupts = interrupts

    def _check(self, *arguments, **keywords) -> None:
        if self.interrupts:
            raise KeyboardInterrupt

    on_train_batch_end = on_test_batch_end = on_predict_batch_end = on_epoch_end = _check


@contextlib.contextmanager
def watching_interrupts():
    """Yields an ``Interrupts`` that counts every SIGINT while the block runs; the previous
    handler still runs (raising ``KeyboardInterrupt`` by default). Only the main thread may
    set handlers; elsewhere, or where SIGINT is ignored, nothing changes."""
    interrupts = Interrupts()
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield interrupts
        return

    def note_and_interrupt(number, frame):
        interrupts.count += 1
        previous(number, frame)

    signal.signal(signal.SIGINT, note_and_interrupt)
    try:
        yield interrupts
    finally:
        signal.signal(signal.SIGINT, previous)
