"""``StopOnInterrupt``: the Keras callback that ends ``fit`` once Ctrl-C or SIGTERM has
arrived (``signals.watching_interrupts`` notes them; why both: its docstring)."""

import keras

from resnet_transfer.signals import Interrupts

__all__ = ["StopOnInterrupt"]


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
