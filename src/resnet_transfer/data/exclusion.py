"""``--exclude FILE``: leave out the images a list names, in every split, before anything
else is decided (the split, the limit, the classes).

The list is what ``audit`` writes (``exclude.txt``, or ``audit.csv`` itself, by its "path"
column) or any text file with one name per line: a file's path as the data names it
(a relative path is taken from the list file's folder, so a run reads its list the same from
any folder; audit writes absolute paths), or, for array sources (MNIST, .npz),
the image's place in the source's arrays, ``x_train[12]`` or ``x_test[3]``. Blank lines and
lines starting with ``#`` are ignored. A name that is no image of the data stops the run:
a list meant for other data would otherwise drop nothing and say nothing.

Example:
    >>> raw = exclude_samples(raw, read_sample_list("runs/r1/exclude.txt"), source="runs/r1/exclude.txt")
"""

import csv
import dataclasses
import hashlib
import logging
import os
import re

from resnet_transfer.data.readers import RawData
from resnet_transfer.errors import DataError

__all__ = ["exclude_samples", "read_sample_list"]

logger = logging.getLogger(__name__)


# An array place as a person may type it: "x_train[12]", "X_train[ 12 ]", "x_train[012]".
_ARRAY_PLACE = re.compile(r"x_(\w+?)\s*\[\s*(\d+)\s*\]", re.IGNORECASE)


def _key(name: str) -> str:
    """A name as compared: an array place as the data writes it ("x_train[12]"), a path made absolute."""
    name = name.strip()
    place = _ARRAY_PLACE.fullmatch(name)
    if place:
        return f"x_{place.group(1).lower()}[{int(place.group(2))}]"
    if name[:2].lower() == "x_" and name.endswith("]"):  # (no place of an array: shown as written)
        return name
    return os.path.normpath(os.path.abspath(name))


def read_sample_list(path: str) -> list:
    """The names a list file holds: a CSV with a "path" column (``audit.csv``), else one name per
    line; a relative file path is made absolute from the list file's folder.

    Raises:
        DataError: the file cannot be read as text.
    """
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"--exclude {path!r} cannot be read as a text file ({getattr(error, 'strerror', None) or error}); "
                        "give a list with one image path (or x_train[i]) per line, or an audit.csv") from error
    lines = text.splitlines()
    header = next((line for line in lines if line.strip()), "")
    columns = [cell.strip() for cell in next(csv.reader([header]), [])]
    if "path" in columns and ("," in header or header.strip() == "path"):  # (a CSV of one column has no comma)
        position = columns.index("path")
        rows = csv.reader(line for line in lines[lines.index(header) + 1:] if line.strip())
        return _from_folder([row[position].strip() for row in rows if len(row) > position and row[position].strip()],
                            path)
    if path.lower().endswith(".csv") and len(columns) > 1:
        raise DataError(f"--exclude {path!r} is a CSV without a \"path\" column (its columns: {', '.join(columns)}); "
                        "give audit.csv, a CSV whose \"path\" column names the images, or a list with one name per line")
    return _from_folder([line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")], path)


def _from_folder(names: list, path: str) -> list:
    """``names`` with every relative file path joined to the folder of the list file ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    return [name if _ARRAY_PLACE.fullmatch(name) or (name[:2].lower() == "x_" and name.endswith("]"))
            or os.path.isabs(name) else os.path.join(folder, name) for name in names]


def exclude_samples(raw: RawData, names: list, *, source: str) -> RawData:
    """``raw`` without the samples ``names`` names; its fingerprint then covers the list, so a
    run's fingerprint check (evaluate, resume) sees a changed list as changed data.

    A class whose training images the list names, every one, leaves the data (with its
    validation and test images, which no model trained here could predict), and a warning
    says so: it is not "unreadable", and ``--strict`` does not count it as skipped.

    Raises:
        DataError: a name that is no sample of ``raw``, or a list that leaves no training
            image, or fewer than 2 classes to train on.
    """
    wanted = {_key(name) for name in names}
    if not wanted:
        logger.warning("--exclude %s names no image: nothing is left out", source)
    found = set()
    splits = {}
    for split, samples in raw.splits.items():
        if samples is None:
            splits[split] = None
            continue
        keys = [_key(name) for name in samples.names]
        found.update(key for key in keys if key in wanted)
        splits[split] = samples.take(index for index, key in enumerate(keys) if key not in wanted)
    unknown = sorted(wanted - found)
    if unknown:
        shown = ", ".join(map(repr, unknown[:3])) + (", ..." if len(unknown) > 3 else "")
        raise DataError(f"--exclude {source!r}: {len(unknown)} of its {len(wanted)} names are no image of "
                        f"{raw.description.get('name')!r} ({shown}); a list names files as the data does (or x_train[i] "
                        "for arrays): give the list made for this data")
    if wanted:
        logger.info("excluded %d image(s) listed in %s", len(found), source)
    splits, class_order = _without_emptied_classes(raw, splits, source=source)
    digest = hashlib.sha256((raw.fingerprint + "\n" + "\n".join(sorted(wanted))).encode()).hexdigest()
    return dataclasses.replace(raw, splits=splits, fingerprint=digest, class_order=class_order)


def _emptied_by_list(before, after) -> bool:
    """Whether the list took a whole class (or everything) out of a training split that had some."""
    return len(before) > 0 and len(set(after.labels)) < len(set(before.labels))


def _without_emptied_classes(raw: RawData, splits: dict, *, source: str) -> tuple:
    """(splits, class order) without the classes the list took every training image of."""
    before, after = raw.splits["train"], splits["train"]
    if not _emptied_by_list(before, after):
        return splits, list(raw.class_order)  # (data that was short of images or classes already: load_dataset says so)
    if len(after) == 0:
        raise DataError(f"--exclude {source!r} names all {len(before)} training images of "
                        f"{raw.description.get('name')!r}: nothing is left to train on; remove from the list the "
                        "images to keep")
    left = set(after.labels)
    emptied = [name for name in dict.fromkeys(before.labels) if name not in left]
    kept = [name for name in raw.class_order if name not in emptied]
    if len(left) < 2 <= len(set(before.labels)):
        raise DataError(f"--exclude {source!r} leaves training images of {len(left)} class(es) of "
                        f"{raw.description.get('name')!r} ({', '.join(map(str, sorted(left)))}): training needs at "
                        "least 2; remove from the list the images of the classes to keep")
    logger.warning("--exclude %s names every training image of class(es) %s: they are left out of the data, with "
                   "their validation and test images", source, ", ".join(map(repr, emptied)))
    gone = set(emptied)
    splits = {split: None if samples is None else samples.take(
        index for index, label in enumerate(samples.labels) if label not in gone) for split, samples in splits.items()}
    return splits, kept
