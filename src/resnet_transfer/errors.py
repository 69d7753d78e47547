"""Errors that resnet-transfer raises for problems a user can fix.

The CLI turns each of them into one line on stderr and exit status 2; the
Python API lets them propagate, so a notebook sees the same message.
"""

__all__ = ["ResnetTransferError", "ConfigError", "DataError", "WeightsError", "RunDirectoryError", "ExportCheckError",
           "FrozenWeightsError", "RunInterrupted", "RunKept", "Terminated"]


class ResnetTransferError(Exception):
    """Base class: a problem with the user's input or environment, not a bug.

    ``exit_status`` is what the CLI exits with: 2 for bad input (arguments, files).
    """

    exit_status = 2


class ConfigError(ResnetTransferError, ValueError):
    """A setting has a value that is not allowed."""


class DataError(ResnetTransferError, ValueError):
    """A data set cannot be found, is corrupted, or does not fit the settings."""


class WeightsError(ResnetTransferError, ValueError):
    """Backbone weights cannot be fetched, read or verified."""


class RunDirectoryError(ResnetTransferError, ValueError):
    """A run directory cannot be used (it exists and holds files, or is not a run)."""


class ExportCheckError(ResnetTransferError):
    """An exported model does not reproduce the Keras model within the tolerance."""

    exit_status = 1


class FrozenWeightsError(ResnetTransferError):
    """Weights that a training phase was meant to leave frozen changed during it (a leak,
    such as a BatchNormalization layer run in training mode); the model is not saved."""

    exit_status = 1

    def __init__(self, message: str, *, phase: str = "", moved: tuple = ()):
        super().__init__(message)
        self.phase, self.moved = phase, list(moved)


class Terminated(KeyboardInterrupt):
    """SIGTERM (what Slurm, Kubernetes and ``kill`` send) arrived: it stops a run as Ctrl-C does."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM: ``signal_name``) stopped a run after ``epochs_done`` finished
    epochs; ``train --resume --run-dir RUN_DIR`` goes on from there."""

    def __init__(self, run_dir: str, epochs_done: int, signal_name: str = "Ctrl-C", *, unit: str = "epochs"):
        super().__init__(f"interrupted ({signal_name}) after {epochs_done} finished {unit} of the run in {run_dir!r}")
        self.run_dir, self.epochs_done, self.signal_name, self.unit = run_dir, epochs_done, signal_name, unit


class RunKept(Exception):
    """A run that had finished ``epochs_done`` epochs stopped on an error of its machine
    (``cause``: a full or read-only disk); its folder is kept, marked failed, for
    ``train --resume --run-dir RUN_DIR``."""

    def __init__(self, run_dir: str, epochs_done: int, cause: BaseException, *, unit: str = "epochs"):
        super().__init__(f"{cause} after {epochs_done} finished {unit} of the run in {run_dir!r}")
        self.run_dir, self.epochs_done, self.cause, self.unit = run_dir, epochs_done, cause, unit
