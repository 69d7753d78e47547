import csv
import json
import os

import numpy as np
import pytest
from imagesets import SHAPES, add_broken_files, draw_shape, write_class_folders, write_csv

from resnet_transfer.cli import main
from resnet_transfer.config import DataConfig
from resnet_transfer.data import load_dataset
from resnet_transfer.errors import DataError
from resnet_transfer.images import fit_array, fit_image

TRAIN = ["--weights", "none", "--backbone", "resnet50", "--epochs", "2", "--image-size", "32"]


def test_pad_is_the_seed_padding_and_modes_give_square_rgb():
    digit = np.random.default_rng(0).integers(1, 256, size=(28, 28), dtype=np.uint8)
    padded = fit_array(digit, size=32, resize="pad")
    assert padded.shape == (32, 32, 3) and np.array_equal(padded[2:30, 2:30, 0], digit) and padded[:2].max() == 0
    rgba = draw_shape("circle", np.random.default_rng(1), (50, 20), "RGBA")
    for mode in ("pad", "stretch", "crop"):
        assert fit_image(rgba, size=16, resize=mode).shape == (16, 16, 3)


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


@pytest.mark.slow
def test_folder_trains_end_to_end_with_report_predict_and_class_weights(tmp_path, capsys):
    write_class_folders(tmp_path / "shapes")
    add_broken_files(tmp_path / "shapes" / "square")
    run_dir = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "shapes"), *TRAIN, "--class-weight", "balanced", "--run-dir", str(run_dir)]) == 0
    for name in ("model.keras", "labels.txt", "skipped.csv", "confusion_matrix.png", "classification_report.csv", "misclassified.png", "report.html"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "labels.txt").read_text().split() == list(SHAPES)
    with open(run_dir / "skipped.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 3
    with open(run_dir / "classification_report.csv") as handle:
        report = {row["class"]: row for row in csv.DictReader(handle)}
    config = json.loads((run_dir / "config.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert sum(int(report[name]["support"]) for name in SHAPES) == metrics["n_test"]
    weights = config["class_weight"]  # balanced: the rarest class (triangle, 12 images) weighs most
    assert set(weights) == {"0", "1", "2"} and weights["2"] > weights["1"] > weights["0"]
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "circle" in html

    capsys.readouterr()
    files = sorted(str(path) for path in (tmp_path / "shapes" / "triangle").iterdir())[:4]
    assert main(["predict", str(run_dir), *files, str(tmp_path / "shapes" / "circle"), str(tmp_path / "shapes" / "sq*" / "*"), "--format", "jsonl"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    predicted = {line["path"]: line for line in lines}
    assert all(path in predicted for path in files)
    assert any("error" in line for line in lines)  # the broken files of square/ are reported, not fatal

    import keras

    from resnet_transfer.evaluation import load_run_model
    from resnet_transfer.images import read_image

    model = load_run_model(str(run_dir))
    pixels = np.stack([read_image(path, size=32, resize="stretch") for path in files]).astype("float32")
    expected = np.argmax(keras.ops.convert_to_numpy(model(pixels)), axis=-1)
    assert [predicted[path]["top"][0]["class"] for path in files] == [SHAPES[i] for i in expected]


def test_sample_shapes_load_alike_from_folder_csv_and_npz(tmp_path):
    from resnet_transfer.samples import write_shapes

    written = write_shapes(str(tmp_path / "shapes"), per_class=(10, 8, 6))
    loaded = [load_dataset(DataConfig(source=written[kind], image_size=32), seed=0) for kind in ("images", "csv", "npz")]
    assert all(dataset.class_names == SHAPES for dataset in loaded[:2]) and loaded[2].class_names == ("0", "1", "2")
    for dataset in loaded:
        total = len(dataset.y_train) + len(dataset.y_val) + len(dataset.y_test)
        assert total == 24 and not dataset.skipped
