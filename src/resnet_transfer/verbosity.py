"""How much a command says: ``--verbose``, the default, or ``--quiet``.

The package logs through the children of the ``resnet_transfer`` logger. The command line
sets that logger's level for one command (DEBUG with ``--verbose``: how each decision was
reached and which internal path runs; INFO by default: the stage a run is in and what it
decided; WARNING with ``--quiet``: warnings, errors and the result alone) and puts it back
after. Progress bars follow the same setting: none once the logger is set above INFO.
A notebook that configures no logging keeps Python's default (warnings only) and Keras's
progress bars; ``logging.getLogger("resnet_transfer").setLevel(logging.INFO)`` shows the
rest.

Example:
    >>> with verbosity("quiet"):
    ...     train(config)
"""

import contextlib
import logging

__all__ = ["LEVELS", "shows_progress", "verbosity"]

PACKAGE_LOGGER = "resnet_transfer"
LEVELS = {"verbose": logging.DEBUG, "normal": logging.INFO, "quiet": logging.WARNING}


@contextlib.contextmanager
def verbosity(name: str):
    """Sets the package logger's level to ``LEVELS[name]`` for the block."""
    if name not in LEVELS:
        raise ValueError(f"verbosity must be one of: {', '.join(LEVELS)}. Received: {name!r}")
    logger = logging.getLogger(PACKAGE_LOGGER)
    previous = logger.level
    logger.setLevel(LEVELS[name])
    try:
        yield
    finally:
        logger.setLevel(previous)


def shows_progress() -> bool:
    """Whether progress bars are wanted: unless the package logger is set above INFO."""
    return logging.getLogger(PACKAGE_LOGGER).level <= logging.INFO
