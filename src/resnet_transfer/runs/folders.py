"""Where runs go and what every run records of its machine: the default folder name, the
check that a folder is free, and the versions of the packages."""

import csv
import importlib.metadata
import io
import os
import platform
from datetime import datetime, timezone
from typing import Optional

import keras

from resnet_transfer.errors import RunDirectoryError

__all__ = ["check_run_dir_free", "csv_text", "default_run_dir", "environment_versions"]


def default_run_dir(backbone: str, now: Optional[datetime] = None) -> str:
    """``runs/<UTC timestamp>-<backbone>``."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    return os.path.join("runs", f"{stamp}-{backbone}")


def check_run_dir_free(path: str, *, resumable: bool = False) -> None:
    """Raises ``RunDirectoryError`` if ``path`` exists and is not an empty folder
    (``resumable``: the message mentions ``--resume``)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise RunDirectoryError(f"run directory {path!r} is a file, not a folder; choose another --run-dir")
    if os.path.exists(path) and os.listdir(path):
        raise RunDirectoryError(
            f"run directory {path!r} already exists and is not empty; runs are never overwritten. "
            "Choose another --run-dir or remove it" + (" (or add --resume to go on with a stopped run there)."
                                                      if resumable else ".")
        )


def environment_versions() -> dict:
    """Versions of the package, Python, Keras, its backend, numpy, TensorFlow and JAX."""
    versions = {
        "resnet_transfer": importlib.metadata.version("resnet-transfer"),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "numpy": importlib.metadata.version("numpy"),
    }
    for package in ("tensorflow", "jax"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def csv_text(header, rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
