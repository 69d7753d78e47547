import numpy as np
import pytest
from conftest import requires_mnist
from imagesets import write_class_folders

from resnet_transfer.config import DataConfig
from resnet_transfer.data.dataset import load_dataset, resolve_geometry, resolve_size, select_classes
from resnet_transfer.data.mnist import load_mnist
from resnet_transfer.errors import DataError


@requires_mnist
def test_dataset_limits_and_split_on_real_mnist():
    # The seed recipe: validation is the LAST val_size training images, limits take the first ones.
    dataset = load_dataset(DataConfig(limit=100, val_size=50, test_limit=30))
    (x_train, y_train), (x_test, y_test), _ = load_mnist()
    assert dataset.x_train.shape == (100, 32, 32, 3) and len(dataset.x_val) == 50 and len(dataset.x_test) == 30
    assert np.array_equal(dataset.x_val[..., 0][:, 2:30, 2:30], x_train[-50:]) and np.array_equal(dataset.y_val, y_train[-50:])
    assert np.array_equal(dataset.y_train, y_train[:100]) and np.array_equal(dataset.x_train[..., 0][:, 2:30, 2:30], x_train[:100])
    assert np.array_equal(dataset.x_test[..., 0][:, 2:30, 2:30], x_test[:30]) and np.array_equal(dataset.y_test, y_test[:30])
    assert dataset.class_names == tuple(str(digit) for digit in range(10))
    assert dataset.source["checksums"]["train-images-idx3-ubyte.gz"] == "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert (dataset.source["image_size"], dataset.source["resize"]) == (32, "pad")


@requires_mnist
def test_limit_larger_than_the_data_is_refused():
    with pytest.raises(DataError, match="limit must be at most 58000.*limit=58001"):
        load_dataset(DataConfig(limit=58001))
    with pytest.raises(DataError, match="test_limit=10001"):
        load_dataset(DataConfig(test_limit=10001))


@requires_mnist
def test_only_the_requested_splits_are_decoded_but_split_alike():
    config = DataConfig(limit=100, val_size=50, test_limit=30)
    full = load_dataset(config)
    test_only = load_dataset(config, splits=("test",), class_names=full.class_names)
    assert test_only.x_train is None and test_only.x_val is None
    assert np.array_equal(test_only.x_test, full.x_test) and test_only.source["fingerprint"] == full.source["fingerprint"]


def test_classes_are_chosen_by_name_or_index_in_the_source_order():
    order = ["cat", "dog", "fox", "7"]
    assert select_classes(order, ("fox", "cat")) == ["cat", "fox"]
    assert select_classes(order, ("2", "0")) == ["cat", "fox"]
    assert select_classes(order, ("7", "1")) == ["dog", "7"]  # a name wins over an index
    with pytest.raises(DataError, match="'owl' is not a class of this data. Known classes: cat, dog, fox, 7 "
                                        r"\(or their indices 0 to 3\)"):
        select_classes(order, ("cat", "owl"))
    with pytest.raises(DataError, match="'4' is not a class"):
        select_classes(order, ("cat", "4"))
    with pytest.raises(DataError, match="'0' and 'cat' are the same class 'cat'; name it once"):
        select_classes(order, ("cat", "0"))
    with pytest.raises(DataError, match="'²' is not a class"):  # a digit, but not a decimal int() reads
        select_classes(order, ("cat", "²"))
    with pytest.raises(DataError, match="at least 2 classes.*classes=dog"):
        select_classes(order, ("dog",))


def test_a_class_filter_keeps_only_its_classes_in_every_split(tmp_path):
    write_class_folders(tmp_path / "shapes", per_class=(10, 8, 6))
    dataset = load_dataset(DataConfig(source=str(tmp_path / "shapes"), classes="triangle,0", image_size=32,
                                      val_size=4, test_size=4))
    assert dataset.class_names == ("circle", "triangle") and not dataset.skipped
    assert len(dataset.y_train) + len(dataset.y_val) + len(dataset.y_test) == 16
    assert set(dataset.y_train) == {0, 1} and set(dataset.y_test) <= {0, 1}


def test_a_limit_at_most_takes_what_there_is(tmp_path):
    write_class_folders(tmp_path / "shapes", per_class=(6, 6, 6))
    config = DataConfig(source=str(tmp_path / "shapes"), limit=1000, image_size=32, val_size=3, test_size=3)
    assert len(load_dataset(config, limit_at_most=True).y_train) == 12
    with pytest.raises(DataError, match="limit must be at most 12"):
        load_dataset(config)


def test_a_probe_sample_is_seeded_and_balanced_across_class_ordered_folders(tmp_path):
    write_class_folders(tmp_path / "shapes", per_class=(12, 12, 12))
    config = DataConfig(source=str(tmp_path / "shapes"), limit=9, image_size=32, val_size=3, test_size=3)
    first, again, other = (load_dataset(config, seed=seed, limit_at_most=True) for seed in (0, 0, 1))
    assert np.bincount(first.y_train).tolist() == [3, 3, 3]  # the first 9 would all be circles
    assert np.array_equal(first.x_train, again.x_train) and not np.array_equal(first.x_train, other.x_train)


def test_geometry_is_the_seed_padding_for_28_pixel_images_else_the_default():
    assert resolve_geometry((28, 28), DataConfig()) == (32, "pad")
    assert resolve_geometry((28, 28), DataConfig(image_size=64)) == (64, "stretch")
    assert resolve_geometry((100, 80), DataConfig(), default_image_size=224) == (224, "stretch")
    assert resolve_geometry(None, DataConfig(image_size=48, resize="crop")) == (48, "crop")


def test_sizes_are_counts_or_fractions_that_leave_both_sides():
    assert resolve_size(0.25, 40, "val_size") == 10 and resolve_size(3, 40, "val_size") == 3
    for value in (40, 0.001):
        with pytest.raises(DataError, match=f"val_size={value}"):
            resolve_size(value, 40, "val_size")


def test_a_class_without_readable_training_images_is_dropped_and_listed(tmp_path):
    write_class_folders(tmp_path / "shapes", per_class=(10, 10, 10))
    for path in (tmp_path / "shapes" / "triangle").iterdir():
        path.write_bytes(b"")
    dataset = load_dataset(DataConfig(source=str(tmp_path / "shapes"), image_size=32), seed=0)
    assert dataset.class_names == ("circle", "square")
    assert any("class 'triangle' dropped" in reason for _, reason in dataset.skipped)
