"""``--exclude FILE``: leave out the images a list names, in every split, before anything
else is decided (the split, the limit, the classes).

The list is what ``audit`` writes (``exclude.txt``, or ``audit.csv`` itself, by its "path"
column) or any text file with one name per line: a file's path as the data names it
(relative paths are taken from the current folder), or, for array sources (MNIST, .npz),
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

from resnet_transfer.data.readers import RawData
from resnet_transfer.errors import DataError

__all__ = ["exclude_samples", "read_sample_list"]

logger = logging.getLogger(__name__)


def _key(name: str) -> str:
    """A name as compared: an array place as written, a path made absolute."""
    name = name.strip()
    return name if name.startswith("x_") and name.endswith("]") else os.path.normpath(os.path.abspath(name))


def read_sample_list(path: str) -> list:
    """The names a list file holds: a CSV with a "path" column (``audit.csv``), else one name per line.

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
    if "path" in [cell.strip() for cell in next(csv.reader([header]), [])] and "," in header:
        return [row["path"] for row in csv.DictReader(lines) if (row.get("path") or "").strip()]
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def exclude_samples(raw: RawData, names: list, *, source: str) -> RawData:
    """``raw`` without the samples ``names`` names; its fingerprint then covers the list, so a
    run's fingerprint check (evaluate, resume) sees a changed list as changed data.

    Raises:
        DataError: a name that is no sample of ``raw``.
    """
    wanted = {_key(name) for name in names}
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
    logger.info("excluded %d image(s) listed in %s", len(found), source)
    digest = hashlib.sha256((raw.fingerprint + "\n" + "\n".join(sorted(wanted))).encode()).hexdigest()
    return dataclasses.replace(raw, splits=splits, fingerprint=digest)
