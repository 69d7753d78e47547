import os

import numpy as np
import pytest
from imagesets import SHAPES, add_broken_files, write_class_folders, write_csv

from resnet_transfer.cli import main
from resnet_transfer.config import DataConfig
from resnet_transfer.data.dataset import load_dataset
from resnet_transfer.errors import DataError

TRAIN = ["--weights", "none", "--backbone", "resnet50", "--epochs", "2", "--image-size", "32"]


def test_folder_split_is_stratified_and_broken_files_are_listed(tmp_path):
    write_class_folders(tmp_path / "shapes")
    broken = add_broken_files(tmp_path / "shapes" / "circle")
    os.makedirs(tmp_path / "shapes" / "empty_class")
    dataset = load_dataset(DataConfig(source=str(tmp_path / "shapes"), image_size=32, val_size=0.25), seed=0)
    assert dataset.class_names == SHAPES
    for labels in (dataset.y_train, dataset.y_val, dataset.y_test):
        assert set(labels.tolist()) == {0, 1, 2}
    assert len(dataset.y_train) + len(dataset.y_val) + len(dataset.y_test) == 62
    reasons = dict(dataset.skipped)
    assert set(broken.values()) <= set(reasons) and "empty file" in reasons[broken["empty"]]
    assert "truncated" in reasons[broken["truncated"]] and "not an image" in reasons[broken["text"]]
    assert reasons[str(tmp_path / "shapes" / "empty_class")] == "class folder has no files"
    assert dataset.x_train.shape[1:] == (32, 32, 3) and dataset.x_train.dtype == np.uint8


def test_single_class_and_strict_stop_before_any_work(tmp_path, capsys):
    write_class_folders(tmp_path / "one", per_class=(10,))
    assert main(["train", "--data", str(tmp_path / "one"), *TRAIN, "--run-dir", str(tmp_path / "run")]) == 2
    assert "at least 2 classes" in capsys.readouterr().err and not (tmp_path / "run").exists()
    write_class_folders(tmp_path / "two", per_class=(10, 10))
    add_broken_files(tmp_path / "two" / "circle")
    assert main(["train", "--data", str(tmp_path / "two"), *TRAIN, "--strict", "--run-dir", str(tmp_path / "run")]) == 2
    assert "--strict: 3 input(s) would be skipped" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_train_val_test_folders_and_labels_outside_training_classes(tmp_path):
    for split, per_class in (("train", (12, 12)), ("val", (4, 4)), ("test", (4, 4, 3))):
        write_class_folders(tmp_path / "data" / split, per_class=per_class, seed=len(split))
    dataset = load_dataset(DataConfig(source=str(tmp_path / "data"), image_size=32), seed=0)
    assert dataset.class_names == ("circle", "square")
    assert (len(dataset.y_train), len(dataset.y_val), len(dataset.y_test)) == (24, 8, 8)
    assert sum("not a training class" in reason for _, reason in dataset.skipped) == 3


def test_a_class_called_train_is_a_class_and_splits_beside_classes_are_named(tmp_path):
    write_class_folders(tmp_path / "data", per_class=(10, 10))
    os.rename(tmp_path / "data" / "square", tmp_path / "data" / "train")  # a class that happens to be called train
    dataset = load_dataset(DataConfig(source=str(tmp_path / "data"), image_size=32), seed=0)
    assert dataset.class_names == ("circle", "train")
    write_class_folders(tmp_path / "splits" / "train", per_class=(6, 6))
    os.makedirs(tmp_path / "splits" / "__MACOSX")  # what an unzipped archive leaves: no class, no split
    os.makedirs(tmp_path / "splits" / ".ipynb_checkpoints")
    assert load_dataset(DataConfig(source=str(tmp_path / "splits"), image_size=32), seed=0).class_names == (
        "circle", "square")
    write_class_folders(tmp_path / "mixed" / "train", per_class=(6, 6))
    write_class_folders(tmp_path / "mixed" / "extra", per_class=(6,))
    with pytest.raises(DataError, match=r"holds train/ with class folders in it .* \(extra\)"):
        load_dataset(DataConfig(source=str(tmp_path / "mixed"), image_size=32), seed=0)


def test_csv_rows_with_missing_files_are_skipped(tmp_path):
    paths = write_class_folders(tmp_path / "images")
    rows = [(os.path.relpath(path, tmp_path), os.path.basename(os.path.dirname(path))) for path in paths]
    source = write_csv(tmp_path, rows + [("images/missing.png", "circle")])
    dataset = load_dataset(DataConfig(source=source, path_column="file", label_column="kind", image_size=32), seed=0)
    assert dataset.class_names == SHAPES and len(dataset.skipped) == 1 and "file not found" in dataset.skipped[0][1]
    with pytest.raises(DataError, match="no column 'path'"):
        load_dataset(DataConfig(source=source), seed=0)


def test_npz_of_grey_digits_is_padded_like_the_seed_recipe(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(90, 28, 28), dtype=np.uint8)
    y = np.repeat([3, 5, 7], 30)
    np.savez(tmp_path / "digits.npz", x_train=x, y_train=y)
    dataset = load_dataset(DataConfig(source=str(tmp_path / "digits.npz"), val_size=15), seed=0)
    assert dataset.class_names == ("3", "5", "7") and dataset.image_shape == (32, 32, 3)
    assert len(dataset.y_val) == 15 and len(dataset.y_test) == 18 and set(dataset.y_train.tolist()) == {0, 1, 2}


def test_sample_shapes_load_alike_from_folder_csv_and_npz(tmp_path):
    from resnet_transfer.samples import write_shapes

    written = write_shapes(str(tmp_path / "shapes"), per_class=(10, 8, 6))
    loaded = [load_dataset(DataConfig(source=written[kind], image_size=32), seed=0) for kind in ("images", "csv", "npz")]
    assert all(dataset.class_names == SHAPES for dataset in loaded[:2]) and loaded[2].class_names == ("0", "1", "2")
    for dataset in loaded:
        total = len(dataset.y_train) + len(dataset.y_val) + len(dataset.y_test)
        assert total == 24 and not dataset.skipped


def test_csv_in_another_encoding_needs_encoding_and_then_loads(tmp_path):
    paths = write_class_folders(tmp_path / "images", per_class=(6, 6))
    rows = [(os.path.relpath(path, tmp_path), "caf\u00e9" if "circle" in path else "th\u00e9") for path in paths]
    source = tmp_path / "labels.csv"
    source.write_text("file,kind\n" + "".join(f"{path},{label}\n" for path, label in rows), encoding="cp1252")
    config = dict(source=str(source), path_column="file", label_column="kind", image_size=32)
    with pytest.raises(DataError, match="not UTF-8 text.*--encoding"):
        load_dataset(DataConfig(**config), seed=0)
    dataset = load_dataset(DataConfig(**config, encoding="cp1252"), seed=0)
    assert dataset.class_names == ("caf\u00e9", "th\u00e9")
