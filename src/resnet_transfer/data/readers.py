"""Readers: one per kind of source, each giving the same unsplit ``RawData``.

A reader finds the samples of a source and the splits the source itself defines,
fingerprints what it read, and decodes nothing yet (files are decoded after the
split, split by split, in ``dataset.load_dataset``):

- ``mnist`` (the seed recipe's, offline and hash-checked, see ``mnist``);
- ``fashion_mnist``, ``cifar10``, ``cifar100`` through ``keras.datasets``;
- ``FILE.npz`` with ``x_train, y_train`` and optionally ``x_test, y_test``;
- ``DIR/<class>/<image>``, or ``DIR/train/<class>/...`` with optional ``val/`` and ``test/``;
- ``FILE.csv`` with a path column and a label column (paths relative to the CSV's folder).

Array sources are checked (``arrays.check_images``, ``check_labels``) as they are read.
What can be skipped (a CSV row without a file or label, a class folder whose name
cannot be a class) is skipped and listed.

Example:
    >>> raw = read_source(DataConfig(source="photos/"), skipped=[])
    >>> len(raw.splits["train"])
"""

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Optional

import keras
import numpy as np

from resnet_transfer.config import BUILTIN_DATA, SPLITS, DataConfig
from resnet_transfer.data.arrays import check_images, check_labels
from resnet_transfer.data.mnist import MNIST_VAL_SIZE, load_mnist
from resnet_transfer.errors import DataError
from resnet_transfer.files import first_line, hash_file

__all__ = ["KERAS_DATASETS", "Samples", "RawData", "read_source", "fingerprint_files"]

KERAS_DATASETS = tuple(name for name in BUILTIN_DATA if name != "mnist")  # (Keras downloads them)


@dataclass
class Samples:
    """The samples of one split: images (uint8 N x H x W x 3) or file paths, and label names."""

    labels: list
    images: Optional[np.ndarray] = None
    paths: Optional[list] = None
    ids: Optional[list] = None  # arrays' samples: "x_train[12]", their place in the source's own arrays

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def names(self) -> list:
        """What names each sample for a user: its file's path, or its place in the source's arrays."""
        return self.paths if self.paths is not None else self.ids

    def take(self, indices) -> "Samples":
        indices = list(indices)
        return Samples(
            labels=[self.labels[i] for i in indices],
            images=None if self.images is None else self.images[np.asarray(indices, dtype=np.int64)],
            paths=None if self.paths is None else [self.paths[i] for i in indices],
            ids=None if self.ids is None else [self.ids[i] for i in indices],
        )


@dataclass
class RawData:
    """What a reader found.

    Attributes:
        splits: "train" -> ``Samples``; "val" and "test" -> ``Samples`` or None when the
            source does not define them (they are then held out from train).
        description: name, kind and location of the source, for config.json.
        fingerprint: SHA-256 over what was read (file list with sizes and times, or contents).
        class_order: the class names in output order (numeric order for array labels).
        validation: "last" (MNIST: the last ``val_size`` images) or "stratified".
        default_val_size: when ``val_size`` is not set.
    """

    splits: dict
    description: dict
    fingerprint: str
    class_order: list = field(default_factory=list)
    validation: str = "stratified"
    default_val_size: object = 0.2


def _array_samples(images, labels, name: str) -> Samples:
    images = check_images(images, name=f"x_{name}")
    labels = check_labels(labels, name=f"y_{name}", count=len(images))
    return Samples(labels=[str(label) for label in labels.tolist()], images=images,
                   ids=[f"x_{name}[{index}]" for index in range(len(images))])


def _array_raw(x_train, y_train, x_test, y_test, description: dict, fingerprint: str) -> RawData:
    splits = {"train": _array_samples(x_train, y_train, "train"), "val": None, "test": None}
    if x_test is not None:
        splits["test"] = _array_samples(x_test, y_test, "test")
    order = sorted(set(splits["train"].labels), key=int)
    return RawData(splits=splits, description=description, fingerprint=fingerprint, class_order=order)


def _read_mnist(config: DataConfig) -> RawData:
    (x_train, y_train), (x_test, y_test), source = load_mnist(config.data_dir)
    fingerprint = hashlib.sha256(json.dumps(source["checksums"], sort_keys=True).encode()).hexdigest()
    raw = _array_raw(x_train, y_train, x_test, y_test, source, fingerprint)
    raw.validation, raw.default_val_size = "last", MNIST_VAL_SIZE
    return raw


def _read_keras_dataset(name: str) -> RawData:
    try:
        (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception as error:  # Keras raises a bare Exception for URL failures
        raise DataError(
            f"could not load keras.datasets.{name} (it downloads once, then is cached in KERAS_HOME/datasets): "
            f"{first_line(error)}. On a machine without network, save it as a .npz and pass --data FILE.npz"
        ) from error
    digest = hashlib.sha256()
    for array in (x_train, y_train, x_test, y_test):
        digest.update(np.ascontiguousarray(array).tobytes())
    return _array_raw(x_train, y_train, x_test, y_test, {"name": name, "kind": "keras"}, digest.hexdigest())


def _read_npz(path: str) -> RawData:
    try:
        with np.load(path, allow_pickle=False) as values:
            missing = [name for name in ("x_train", "y_train") if name not in values.files]
            if missing:
                raise DataError(
                    f".npz file {path!r} has no array {missing[0]!r}; it holds: {', '.join(values.files) or 'nothing'}. "
                    "It needs x_train and y_train (and optionally x_test with y_test)."
                )
            if ("x_test" in values.files) != ("y_test" in values.files):
                raise DataError(f".npz file {path!r} has only one of x_test and y_test; give both or neither")
            arrays = [values[name] if name in values.files else None for name in ("x_train", "y_train", "x_test", "y_test")]
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as error:  # not a zip, truncated, or pickled objects
        raise DataError(f"cannot read .npz file {path!r} ({first_line(error)}); save it with numpy.savez") from error
    return _array_raw(*arrays, {"name": path, "kind": "npz"}, hash_file(path))


def fingerprint_files(paths: list, *, root: str, extra: str = "") -> str:
    """SHA-256 over the sorted list of files (relative to ``root``) with their sizes and modification times."""
    digest = hashlib.sha256(extra.encode())
    for path in sorted(paths):
        name = os.path.relpath(path, root)
        try:
            status = os.stat(path)
            digest.update(f"{name}|{status.st_size}|{status.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{name}|missing\n".encode())
    return digest.hexdigest()


def _class_name_problem(name: str) -> Optional[str]:
    if not name.strip():
        return "an empty class name"
    if "\n" in name or "\r" in name:
        return "a class name with a line break (labels.txt holds one name per line)"
    return None


def _scan_class_folders(root: str, skipped: list) -> Samples:
    labels, paths = [], []
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            continue
        problem = _class_name_problem(name)
        if problem:
            skipped.append((folder, f"class folder skipped: {problem}"))
            continue
        files = sorted(os.path.join(directory, file) for directory, _, names in os.walk(folder) for file in names)
        if not files:
            skipped.append((folder, "class folder has no files"))
        paths += files
        labels += [name] * len(files)
    return Samples(labels=labels, paths=paths)


def _is_split_layout(root: str) -> bool:
    """Whether ``root`` holds splits (train/ with class folders, optional val/ and test/) rather
    than class folders, one of which may be called "train": decided from every subfolder.

    Raises:
        DataError: train/ holds class folders and stands beside folders that are no split.
    """
    subfolders = sorted(name for name in os.listdir(root) if os.path.isdir(os.path.join(root, name)))
    if "train" not in subfolders:
        return False
    others = [name for name in subfolders if name not in SPLITS and not name.startswith((".", "__"))]  # (.git, __MACOSX)
    if not others:
        return True
    train = os.path.join(root, "train")
    if not any(os.path.isdir(os.path.join(train, name)) for name in os.listdir(train)):
        return False  # train/ holds images: a class that happens to be called "train"
    raise DataError(f"folder {root!r} holds train/ with class folders in it (a split) beside folders that are no split "
                    f"({', '.join(others[:5])}{', ...' if len(others) > 5 else ''}): give either splits (train/, val/, "
                    "test/, each holding class folders) or class folders only, not both")


def _read_folder(root: str, skipped: list) -> RawData:
    if _is_split_layout(root):
        splits = {
            split: _scan_class_folders(os.path.join(root, split), skipped) if os.path.isdir(os.path.join(root, split)) else None
            for split in SPLITS
        }
    else:
        splits = {"train": _scan_class_folders(root, skipped), "val": None, "test": None}
    paths = [path for samples in splits.values() if samples is not None for path in samples.paths]
    return RawData(
        splits=splits, description={"name": root, "kind": "folder"}, fingerprint=fingerprint_files(paths, root=root),
        class_order=sorted(set(splits["train"].labels)),
    )


def _csv_rows(path: str, encoding: Optional[str]) -> tuple:
    try:
        with open(path, encoding=encoding or "utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            return list(reader.fieldnames or []), [(line, row) for line, row in enumerate(reader, start=2)]
    except UnicodeDecodeError as error:
        raise DataError(
            f"CSV file {path!r} is not {encoding or 'UTF-8'} text (byte {error.object[error.start]:#x} at position "
            f"{error.start}); pass --encoding with the encoding it was saved in, for example --encoding cp1252"
        ) from error
    except csv.Error as error:
        raise DataError(f"CSV file {path!r} cannot be parsed ({error}); check its quoting") from error
    except OSError as error:
        raise DataError(f"cannot read CSV file {path!r} ({error.strerror})") from error


def _read_csv(path: str, config: DataConfig, skipped: list) -> RawData:
    columns, rows = _csv_rows(path, config.encoding)
    for column in (config.path_column, config.label_column):
        if column not in columns:
            raise DataError(
                f"CSV file {path!r} has no column {column!r}. Its columns: {', '.join(map(repr, columns)) or 'none'}. "
                "Choose them with --path-column and --label-column."
            )
    base = os.path.dirname(os.path.abspath(path))
    samples = Samples(labels=[], paths=[])
    for line, row in rows:
        file_name, label = row.get(config.path_column), row.get(config.label_column)
        where = f"{path}:{line}"
        if not file_name or not file_name.strip():
            skipped.append((where, f"CSV line {line} has no {config.path_column!r} value"))
        elif label is None or _class_name_problem(label):
            skipped.append((where, f"CSV line {line} has {_class_name_problem(label or '')} in {config.label_column!r}"))
        elif not os.path.isfile(os.path.join(base, file_name)):
            skipped.append((os.path.join(base, file_name), f"file not found (CSV line {line})"))
        else:
            samples.paths.append(os.path.join(base, file_name))
            samples.labels.append(label)
    return RawData(
        splits={"train": samples, "val": None, "test": None},
        description={"name": path, "kind": "csv"},
        fingerprint=fingerprint_files(samples.paths, root=base, extra=hash_file(path)),
        class_order=sorted(set(samples.labels)),
    )


def read_source(config: DataConfig, *, skipped: list) -> RawData:
    """Reads the source that ``config`` names into unsplit ``RawData``; skips are appended to ``skipped``.

    Raises:
        DataError: a source that cannot be read, or arrays that are not images and labels.
    """
    source = config.source
    if source == "mnist":
        return _read_mnist(config)
    if source in KERAS_DATASETS:
        return _read_keras_dataset(source)
    if os.path.isdir(source):
        return _read_folder(source, skipped)
    if source.lower().endswith(".npz"):
        return _read_npz(source)
    if source.lower().endswith(".csv"):
        return _read_csv(source, config, skipped)
    raise DataError(
        f"data must be mnist, {', '.join(KERAS_DATASETS)}, a folder of class folders, a .csv or a .npz file. "
        f"Received: data={source!r}"
    )
