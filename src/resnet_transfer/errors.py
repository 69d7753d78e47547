"""Errors that resnet-transfer raises for problems a user can fix.

The CLI turns each of them into one line on stderr and exit status 2; the
Python API lets them propagate, so a notebook sees the same message.
"""

__all__ = ["ResnetTransferError", "ConfigError", "DataError", "WeightsError", "RunDirectoryError"]


class ResnetTransferError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""


class ConfigError(ResnetTransferError, ValueError):
    """A setting has a value that is not allowed."""


class DataError(ResnetTransferError, ValueError):
    """A data set cannot be found, is corrupted, or does not fit the settings."""


class WeightsError(ResnetTransferError, ValueError):
    """Backbone weights cannot be fetched, read or verified."""


class RunDirectoryError(ResnetTransferError, ValueError):
    """A run directory cannot be used (it exists and holds files, or is not a run)."""
