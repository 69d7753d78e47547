"""Users' own data: image folders, CSV files, .npz arrays and Keras's built-in data sets.

Layouts that ``--data`` accepts besides ``mnist``:

- ``DIR/<class>/<image>``, or ``DIR/train/<class>/...`` with optional ``val/`` and ``test/``;
- ``FILE.csv`` with a path column and a label column (paths relative to the CSV's folder);
- ``FILE.npz`` with ``x_train, y_train`` and optionally ``x_test, y_test``;
- ``fashion_mnist``, ``cifar10``, ``cifar100`` through ``keras.datasets`` (downloaded once, cached).

Splits that the layout does not give are held out stratified and shuffled with the
run's seed (never the last files, which in a listing are all of one class). Files are
split first and decoded afterwards, split by split, into memory-mapped stores, so a
large folder is streamed. Unreadable files are skipped and listed (``skipped.csv``);
``strict`` turns every skip into an error.
"""

import csv
import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from resnet_transfer.data import checked_limit
from resnet_transfer.errors import DataError
from resnet_transfer.images import decode_to_store, fit_array, image_size_of

__all__ = ["KERAS_DATASETS", "load_own_dataset", "resolve_fraction"]

logger = logging.getLogger(__name__)

KERAS_DATASETS = ("fashion_mnist", "cifar10", "cifar100")
SEED_INPUT, SEED_SIZE, DEFAULT_SIZE = (28, 28), 32, 224
DEFAULT_VAL_SIZE = 0.2


def _val_size(config):
    return DEFAULT_VAL_SIZE if config.val_size is None else config.val_size


@dataclass
class _Entries:
    """File paths and label names of one split."""

    paths: list = field(default_factory=list)
    labels: list = field(default_factory=list)

    def __len__(self):
        return len(self.paths)

    def take(self, indices) -> "_Entries":
        return _Entries([self.paths[i] for i in indices], [self.labels[i] for i in indices])


def resolve_fraction(value, total: int, name: str) -> int:
    """A count (int >= 1) or a fraction (0 < float < 1) of ``total``, as a count."""
    count = int(round(value * total)) if isinstance(value, float) else value
    if not 0 < count < total:
        raise DataError(
            f"{name} must leave at least one image on each side of the split of {total} images "
            f"(a count from 1 to {total - 1}, or a fraction between 0 and 1). Received: {name}={value}"
        )
    return count


def _stratified_split(labels: list, size, seed: int, name: str) -> tuple:
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    count = resolve_fraction(size, len(labels), name)
    try:
        kept, held = train_test_split(indices, test_size=count, stratify=labels, random_state=seed, shuffle=True)
    except ValueError as error:
        raise DataError(f"cannot hold out {name}={size} stratified from {len(labels)} images: {error}") from None
    return np.sort(kept), np.sort(held)


# --- scanning ------------------------------------------------------------------


def _scan_class_folders(root: str, skipped: list) -> _Entries:
    entries = _Entries()
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            continue
        files = sorted(
            os.path.join(directory, file)
            for directory, _, names in os.walk(folder)
            for file in names
        )
        if not files:
            skipped.append((folder, "class folder has no files"))
        entries.paths += files
        entries.labels += [name] * len(files)
    return entries


def _scan_folder(root: str, skipped: list) -> tuple:
    split_folders = {split: os.path.join(root, split) for split in ("train", "val", "test")}
    if os.path.isdir(split_folders["train"]):
        scanned = {
            split: _scan_class_folders(folder, skipped) if os.path.isdir(folder) else None
            for split, folder in split_folders.items()
        }
        return scanned["train"], scanned["val"], scanned["test"]
    return _scan_class_folders(root, skipped), None, None


def _scan_csv(path: str, path_column: str, label_column: str, skipped: list) -> _Entries:
    entries = _Entries()
    base = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in (path_column, label_column) if column not in (reader.fieldnames or [])]
        if missing:
            raise DataError(
                f"CSV file {path!r} has no column {missing[0]!r}. Its columns: {', '.join(reader.fieldnames or [])}. "
                "Choose them with --path-column and --label-column."
            )
        for line, row in enumerate(reader, start=2):
            file_path = os.path.join(base, row[path_column])
            if not os.path.isfile(file_path):
                skipped.append((file_path, f"file not found (CSV line {line})"))
                continue
            entries.paths.append(file_path)
            entries.labels.append(row[label_column])
    return entries


# --- decoding -------------------------------------------------------------------


def _choose_geometry(first_size: Optional[tuple], image_size: Optional[int], resize: Optional[str]) -> tuple:
    seed_like = first_size is not None and tuple(first_size[:2]) == SEED_INPUT
    size = image_size or (SEED_SIZE if seed_like else DEFAULT_SIZE)
    return size, resize or ("pad" if seed_like and size == SEED_SIZE else "stretch")


def _drop_unknown_labels(entries: Optional[_Entries], classes: list, skipped: list, split: str) -> Optional[_Entries]:
    if entries is None:
        return None
    known = [i for i, label in enumerate(entries.labels) if label in classes]
    for i in sorted(set(range(len(entries))) - set(known)):
        skipped.append((entries.paths[i], f"label {entries.labels[i]!r} of the {split} split is not a training class"))
    return entries.take(known)


def _decode(entries: _Entries, classes: list, size: int, resize: str, skipped: list) -> tuple:
    images, kept, split_skipped = decode_to_store(entries.paths, len(entries), size=size, resize=resize)
    skipped += split_skipped
    index = {name: i for i, name in enumerate(classes)}
    return images, np.array([index[entries.labels[i]] for i in kept], dtype=np.int64)


def _file_dataset(train: _Entries, val, test, config, seed: int, skipped: list):
    from resnet_transfer.data import Dataset

    classes = sorted(set(train.labels))
    if len(classes) < 2:
        raise DataError(f"training needs at least 2 classes; {config.source!r} has {len(classes)}: {classes}")
    val = _drop_unknown_labels(val, classes, skipped, "val")
    test = _drop_unknown_labels(test, classes, skipped, "test")
    if test is None:
        kept, held = _stratified_split(train.labels, config.test_size, seed, "test_size")
        train, test = train.take(kept), train.take(held)
    if val is None:
        kept, held = _stratified_split(train.labels, _val_size(config), seed, "val_size")
        train, val = train.take(kept), train.take(held)
    train, test = _apply_limits(train, test, config)
    first = next((size for size in map(image_size_of, train.paths) if size is not None), None)
    size, resize = _choose_geometry(first and (first[1], first[0]), config.image_size, config.resize)
    logger.info("decoding %d + %d + %d images to %dx%d (%s)", len(train), len(val), len(test), size, size, resize)
    splits = {name: _decode(entries, classes, size, resize, skipped) for name, entries in (("train", train), ("val", val), ("test", test))}
    return Dataset(
        x_train=splits["train"][0], y_train=splits["train"][1],
        x_val=splits["val"][0], y_val=splits["val"][1],
        x_test=splits["test"][0], y_test=splits["test"][1],
        class_names=tuple(classes), source={"name": config.source, "kind": "files", "image_size": size, "resize": resize},
        skipped=skipped,
    )


def _apply_limits(train, test, config):
    train_count = checked_limit("limit", config.limit, len(train))
    test_count = checked_limit("test_limit", config.test_limit, len(test))
    return train.take(range(train_count)), test.take(range(test_count))


def _array_dataset(x_train, y_train, x_test, y_test, config, seed: int, skipped: list, source: dict):
    from resnet_transfer.data import Dataset

    y_train = np.asarray(y_train).reshape(-1)
    classes = sorted(np.unique(y_train).tolist())
    if len(classes) < 2:
        raise DataError(f"training needs at least 2 classes; {config.source!r} has {len(classes)}")
    if x_test is None:
        kept, held = _stratified_split(y_train.tolist(), config.test_size, seed, "test_size")
        x_train, y_train, x_test, y_test = x_train[kept], y_train[kept], x_train[held], y_train[held]
    y_test = np.asarray(y_test).reshape(-1)
    known = np.isin(y_test, classes)
    skipped += [(f"x_test[{i}]", f"label {y_test[i]!r} is not a training class") for i in np.flatnonzero(~known)]
    x_test, y_test = x_test[known], y_test[known]
    kept, held = _stratified_split(y_train.tolist(), _val_size(config), seed, "val_size")
    arrays = {"train": (x_train[kept], y_train[kept]), "val": (x_train[held], y_train[held]), "test": (x_test, y_test)}
    for name, limit, split in (("limit", config.limit, "train"), ("test_limit", config.test_limit, "test")):
        count = checked_limit(name, limit, len(arrays[split][1]))
        arrays[split] = (arrays[split][0][:count], arrays[split][1][:count])
    size, resize = _choose_geometry(x_train.shape[1:3], config.image_size, config.resize)
    index = {label: i for i, label in enumerate(classes)}
    fitted = {
        split: (np.stack([fit_array(image, size=size, resize=resize) for image in x]) if len(x) else np.zeros((0, size, size, 3), np.uint8),
                np.array([index[label] for label in y.tolist()], dtype=np.int64))
        for split, (x, y) in arrays.items()
    }
    return Dataset(
        x_train=fitted["train"][0], y_train=fitted["train"][1], x_val=fitted["val"][0], y_val=fitted["val"][1],
        x_test=fitted["test"][0], y_test=fitted["test"][1], class_names=tuple(str(c) for c in classes),
        source={**source, "image_size": size, "resize": resize}, skipped=skipped,
    )


def _load_npz(path: str) -> tuple:
    try:
        with np.load(path, allow_pickle=False) as values:
            missing = [name for name in ("x_train", "y_train") if name not in values]
            if missing:
                raise DataError(f".npz file {path!r} has no array {missing[0]!r}; it holds: {', '.join(values.files)}")
            test = (values["x_test"], values["y_test"]) if "x_test" in values and "y_test" in values else (None, None)
            return values["x_train"], values["y_train"], *test
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read .npz file {path!r}: {error}") from None


def _load_keras_dataset(name: str) -> tuple:
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception as error:  # Keras raises a bare Exception for URL failures
        raise DataError(f"could not load keras.datasets.{name} (it downloads once, then is cached): {str(error).splitlines()[0]}") from None
    return x_train, y_train, x_test, y_test


def load_own_dataset(config, *, seed: int):
    """Loads any non-MNIST source of ``config`` (a ``DataConfig``) into a ``Dataset``.

    Raises:
        DataError: fewer than 2 classes, an empty split, a source that cannot be read,
            or (with ``strict``) any file that would have been skipped.
    """
    skipped: list = []
    source = config.source
    if source in KERAS_DATASETS:
        dataset = _array_dataset(*_load_keras_dataset(source), config, seed, skipped, {"name": source, "kind": "keras"})
    elif source.endswith(".npz") and os.path.isfile(source):
        dataset = _array_dataset(*_load_npz(source), config, seed, skipped, {"name": source, "kind": "npz"})
    elif source.endswith(".csv") and os.path.isfile(source):
        entries = _scan_csv(source, config.path_column, config.label_column, skipped)
        _check_strict(config, skipped)
        dataset = _file_dataset(entries, None, None, config, seed, skipped)
    elif os.path.isdir(source):
        train, val, test = _scan_folder(source, skipped)
        _check_strict(config, skipped)
        dataset = _file_dataset(train, val, test, config, seed, skipped)
    else:
        raise DataError(
            f"data must be mnist, {', '.join(KERAS_DATASETS)}, a folder of class folders, a .csv or a .npz file. "
            f"Received: data={source!r}"
        )
    _check_strict(config, skipped)
    for split in ("train", "val", "test"):
        if len(getattr(dataset, f"y_{split}")) == 0:
            raise DataError(f"the {split} split of {source!r} has no readable images")
    if skipped:
        logger.warning("%d files skipped (listed in skipped.csv of the run directory)", len(skipped))
    return dataset


def _check_strict(config, skipped: list) -> None:
    if config.strict and skipped:
        path, reason = skipped[0]
        raise DataError(f"--strict: {len(skipped)} input(s) would be skipped, first {path}: {reason}")
