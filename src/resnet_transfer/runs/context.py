"""``RunContext``: a verb's run folder from its creation to its end."""

import os
from typing import Optional

from resnet_transfer.errors import RunInterrupted, RunKept
from resnet_transfer.runs.run import Run

__all__ = ["RunContext"]


class RunContext:
    """A verb's run folder from its creation to its end, as a context manager: the one place
    that decides what a failure leaves behind and what it raises.

    On a failure (an exception, Ctrl-C or SIGTERM) inside the block:

    - a run with no finished epoch (``epochs_done``, which the verb keeps up to date) is
      removed, unless it was resumed: nothing blocks running the same command again;
    - a run with finished epochs stays, status "failed", for ``train --resume``; without
      ``resumable`` (a verb that keeps no checkpoint) a signal or a disk error removes it
      all the same, since nothing could go on from it;
    - a signal noted by ``interrupts`` is the cause, whatever exception TensorFlow's C++
      code made of it: ``RunInterrupted`` when the folder stays, else the signal's own
      exception (``Interrupts.stop``), chained from what was raised;
    - a disk error after finished epochs of a resumable run raises ``RunKept`` (its message
      says to resume).

    ``finish`` marks the run finished; the folder's lock (``Run.hold``) is released at the end.

    Args:
        path: the new run's folder (``Run.create``), or
        run: a run reopened for ``--resume`` (it is kept whatever happens).
        record: config.json, written first (a folder killed right after it can be resumed).
        interrupts: the ``signals.Interrupts`` of the verb's ``watching_interrupts`` block.
        resumable: whether the verb can go on from a finished epoch.
        unit: what ``epochs_done`` counts, as the messages say it ("epochs"; "trials" for tune).

    Example:
        >>> with watching_interrupts() as interrupts, RunContext(path=run_dir, interrupts=interrupts) as context:
        ...     ...  # context.run.write_history(...); context.epochs_done += 1
        ...     context.finish(epochs_done=context.epochs_done)
    """

    def __init__(self, path: Optional[str] = None, *, run: Optional[Run] = None, record: Optional[dict] = None,
                 interrupts=None, resumable: bool = False, epochs_done: int = 0, unit: str = "epochs"):
        if (path is None) == (run is None):
            raise ValueError("RunContext takes a new run's path or a reopened run, not both or neither")
        self.resumed = run is not None
        self.run = run if run is not None else Run.create(path, record=record)
        self.interrupts, self.resumable, self.epochs_done = interrupts, resumable, epochs_done
        self.unit = unit  # what epochs_done counts, for the messages ("trials" for tune)

    def __enter__(self) -> "RunContext":
        return self

    def finish(self, **details) -> None:
        self.run.write_status("finished", **details)

    def __exit__(self, kind, error, traceback) -> bool:
        try:
            if error is not None:
                self._fail(error)
        finally:
            self.run.release()
        return False

    def _fail(self, error: BaseException) -> None:
        signal = self.interrupts.stop() if self.interrupts else None
        if self.interrupts is not None:
            self.interrupts.deferred = False
        lost = not self.resumable and (signal is not None or isinstance(error, OSError))
        epochs = 0 if lost else self.epochs_done
        self.run.abandon(signal or error, epochs_done=epochs, keep=self.resumed)
        kept = os.path.isdir(self.run.path)
        if signal is not None and kept and self.resumable:
            raise RunInterrupted(self.run.path, epochs, self.interrupts.signal_name, unit=self.unit) from None  # (the signal itself)
        if isinstance(error, OSError) and epochs and kept:
            raise RunKept(self.run.path, epochs, error, unit=self.unit) from error  # (a full disk: --resume goes on)
        if signal is not None and not isinstance(error, KeyboardInterrupt):
            raise signal from error
