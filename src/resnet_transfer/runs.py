"""Run directories: where a run's artifacts live, under fixed names.

    config.json   every setting, versions, seed, data source and checksums
    history.csv   epoch, loss, accuracy, val_loss, val_accuracy, seconds
    curves.png    loss and accuracy, train vs validation
    metrics.json  test metrics, sizes and timings
    model.keras   the full model (load it after ``import resnet_transfer.backbones``)
    labels.txt    class names, one per line, in the order of the model's outputs
    skipped.csv   inputs left out, and why (only when some were)
    and the report files of ``report.REPORT_FILES``.

All are written atomically (see ``files.atomic_path``). An existing run
directory that holds files is never written into.
"""

import csv
import io
import json
import os
import platform
from datetime import datetime, timezone
from typing import Optional

from resnet_transfer.errors import RunDirectoryError
from resnet_transfer.files import write_json_atomic, write_text_atomic

__all__ = [
    "ARTIFACTS",
    "default_run_dir",
    "create_run_dir",
    "write_config",
    "read_config",
    "write_history",
    "read_history",
    "write_metrics",
    "write_labels",
    "read_labels",
    "write_skipped",
    "read_metrics",
    "environment_versions",
]

ARTIFACTS = ("config.json", "history.csv", "curves.png", "metrics.json", "model.keras", "labels.txt")
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")


def default_run_dir(backbone: str, now: Optional[datetime] = None) -> str:
    """``runs/<UTC timestamp>-<backbone>``."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    return os.path.join("runs", f"{stamp}-{backbone}")


def check_run_dir_free(path: str) -> None:
    """Raises ``RunDirectoryError`` if ``path`` exists and is not an empty folder."""
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise RunDirectoryError(
            f"run directory {path!r} already exists and is not empty; runs are never overwritten. "
            "Choose another --run-dir or remove it."
        )


def create_run_dir(path: str) -> str:
    """Creates ``path`` (an empty existing folder is accepted) and returns it."""
    check_run_dir_free(path)
    os.makedirs(path, exist_ok=True)
    return path


def environment_versions() -> dict:
    """Versions of the package, Python, Keras, its backend and TensorFlow (if installed)."""
    import importlib.metadata

    import keras

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


def write_config(run_dir: str, values: dict) -> None:
    write_json_atomic(os.path.join(run_dir, "config.json"), values)


def read_config(run_dir: str) -> dict:
    """Reads ``config.json`` of a run; a missing file is a ``RunDirectoryError``."""
    return _read_json(run_dir, "config.json")


def write_metrics(run_dir: str, values: dict) -> None:
    write_json_atomic(os.path.join(run_dir, "metrics.json"), values)


def read_metrics(run_dir: str) -> dict:
    return _read_json(run_dir, "metrics.json")


def _read_json(run_dir: str, name: str) -> dict:
    path = os.path.join(run_dir, name)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise RunDirectoryError(f"{path} does not exist: is {run_dir!r} a finished resnet-transfer run?") from None
    except json.JSONDecodeError as error:
        raise RunDirectoryError(f"{path} is not valid JSON ({error})") from None


def write_history(run_dir: str, history: dict, seconds: list) -> None:
    """Writes one row per epoch (epochs counted from 1) with the columns of ``HISTORY_COLUMNS``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HISTORY_COLUMNS)
    for index, epoch_seconds in enumerate(seconds):
        row = [index + 1] + [history[name][index] for name in HISTORY_COLUMNS[1:-1]] + [epoch_seconds]
        writer.writerow(f"{value:.6g}" if isinstance(value, float) else value for value in row)
    write_text_atomic(os.path.join(run_dir, "history.csv"), buffer.getvalue())


def write_labels(run_dir: str, class_names) -> None:
    """``labels.txt``: one class name per line, in the order of the model's outputs."""
    write_text_atomic(os.path.join(run_dir, "labels.txt"), "".join(f"{name}\n" for name in class_names))


def read_labels(run_dir: str) -> list:
    with open(os.path.join(run_dir, "labels.txt"), encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle]


def write_skipped(run_dir: str, skipped: list) -> None:
    """``skipped.csv``: every input that was left out, and why."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("path", "reason"))
    writer.writerows(skipped)
    write_text_atomic(os.path.join(run_dir, "skipped.csv"), buffer.getvalue())


def read_history(run_dir: str) -> dict:
    """Reads ``history.csv`` into a dict of column name -> list of floats."""
    path = os.path.join(run_dir, "history.csv")
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {name: [float(row[name]) for row in rows] for name in HISTORY_COLUMNS}
