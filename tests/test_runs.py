"""The ``Run`` object: what a run folder holds, read back as written, and refused when damaged."""

import json
import os

import numpy as np
import pytest

from imagesets import draw_shape, write_class_folders
from resnet_transfer.config import RunConfig
from resnet_transfer.data.dataset import load_dataset
from resnet_transfer.errors import DataError, RunDirectoryError
from resnet_transfer.runs import HISTORY_COLUMNS, Run, check_run_dir_free
from resnet_transfer.training.checkpoints import clear_partial


@pytest.fixture
def recorded_run(tmp_path):
    """A run folder with the config.json that train writes for a small class-folder data set (no model)."""
    data = tmp_path / "data"
    write_class_folders(str(data), per_class=(6, 6, 0))
    os.rmdir(data / "triangle")
    config = RunConfig.from_dict({
        "data": {"source": str(data), "image_size": 32},
        "model": {"backbone": "resnet50", "weights": "none"},
        "train": {"epochs": 1},
        "run_dir": str(tmp_path / "run"),
    })
    dataset = load_dataset(config.data, seed=0)
    run = Run.create(config.run_dir)
    run.write_config({
        "config": config.to_dict(),
        "seed": 0,
        "data_source": dataset.source,
        "class_names": list(dataset.class_names),
        "image_shape": list(dataset.image_shape),
    })
    run.write_labels(dataset.class_names)
    return run, data


def test_write_then_read_round_trip(recorded_run):
    run, _ = recorded_run
    again = Run(run.path)
    assert again.labels == ["circle", "square"]
    assert again.image_geometry == (32, "stretch")
    assert again.config.model.backbone == "resnet50" and again.config.data.image_size == 32
    assert again.status == "running"
    with open(run.file("labels.txt"), encoding="utf-8") as handle:
        assert handle.read() == "circle\nsquare\n"

    history = {"loss": [0.9, 0.5], "accuracy": [0.5, 0.75], "val_loss": [1.0, float("nan")], "val_accuracy": [0.5, 0.5]}
    run.write_history(history, [1.5, 1.25])
    read = Run(run.path).history
    assert list(read) == list(HISTORY_COLUMNS)
    assert read["epoch"] == [1.0, 2.0] and read["loss"] == [0.9, 0.5] and np.isnan(read["val_loss"][1])
    run.write_metrics({"test_loss": float("inf"), "test_accuracy": 0.5})
    assert Run(run.path).metrics == {"test_loss": None, "test_accuracy": 0.5}  # strict JSON: no infinity
    run.write_skipped([("a,b.png", "not an image")])
    with open(run.file("skipped.csv"), encoding="utf-8") as handle:
        assert handle.read() == 'path,reason\n"a,b.png",not an image\n'
    run.write_status("finished", epochs_done=2)
    assert Run(run.path).status == "finished"
    assert not [name for name in os.listdir(run.path) if ".partial" in name]


def test_create_refuses_a_folder_that_holds_files(recorded_run):
    run, _ = recorded_run
    with pytest.raises(RunDirectoryError, match="already exists and is not empty"):
        Run.create(run.path)


@pytest.mark.parametrize("missing", ["config", "seed", "class_names", "image_shape", "data_source"])
def test_a_record_without_a_required_key_is_refused(recorded_run, missing):
    run, _ = recorded_run
    with open(run.file("config.json"), encoding="utf-8") as handle:
        record = json.load(handle)
    del record[missing]
    with open(run.file("config.json"), "w", encoding="utf-8") as handle:
        json.dump(record, handle)
    with pytest.raises(RunDirectoryError, match=f"no '{missing}'"):
        Run(run.path).record


def test_a_record_whose_settings_are_no_longer_valid_is_refused(recorded_run):
    run, _ = recorded_run
    with open(run.file("config.json"), encoding="utf-8") as handle:
        record = json.load(handle)
    record["config"]["train"]["epochs"] = -1
    with open(run.file("config.json"), "w", encoding="utf-8") as handle:
        json.dump(record, handle)
    with pytest.raises(RunDirectoryError, match="epochs"):
        Run(run.path).config


@pytest.mark.parametrize(
    "content",
    [b'{"config": {"data": ', b"\xff\xfe not utf-8", b"[1, 2, 3]"],
    ids=["truncated", "not-utf8", "not-an-object"],
)
def test_a_damaged_config_json_is_a_run_directory_error(recorded_run, content):
    run, _ = recorded_run
    with open(run.file("config.json"), "wb") as handle:
        handle.write(content)
    with pytest.raises(RunDirectoryError, match="config.json") as raised:
        Run(run.path).labels
    assert "\n" not in str(raised.value)


def test_a_folder_that_is_not_a_run_is_a_run_directory_error(tmp_path):
    with pytest.raises(RunDirectoryError, match="does not exist"):
        Run(str(tmp_path)).record
    with pytest.raises(RunDirectoryError, match="model.keras does not exist"):
        Run(str(tmp_path)).load_model()
    assert Run(str(tmp_path)).status == "unknown"


def test_a_truncated_model_is_a_run_directory_error(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    run = Run.create(str(tmp_path / "run"))
    run.save_model(model)
    assert keras.saving.load_model(run.file("model.keras")).count_params() == model.count_params()
    path = run.file("model.keras")
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)
    with pytest.raises(RunDirectoryError, match="damaged or incomplete") as raised:
        Run(run.path).load_model()
    assert raised.value.__cause__ is not None  # --debug shows what Keras said


def test_load_dataset_refuses_changed_data_unless_allowed(recorded_run):
    run, data = recorded_run
    assert len(Run(run.path).load_dataset().y_test) > 0  # unchanged: the run's own test split
    draw_shape("circle", np.random.default_rng(5), (40, 30)).save(data / "circle" / "added.png")
    with pytest.raises(DataError, match="--allow-changed-data") as raised:
        Run(run.path).load_dataset()
    assert str(data) in str(raised.value)
    dataset = Run(run.path).load_dataset(allow_changed_data=True)
    assert dataset.class_names == ("circle", "square")


def test_abandon_removes_a_run_without_epochs_and_marks_a_later_failure(tmp_path):
    early = Run.create(str(tmp_path / "early"))
    early.abandon(KeyboardInterrupt(), epochs_done=0)
    assert not os.path.exists(early.path)
    late = Run.create(str(tmp_path / "late"))
    late.abandon(KeyboardInterrupt(), epochs_done=3)
    with open(late.file("status.json"), encoding="utf-8") as handle:
        assert json.load(handle) == {"state": "failed", "error": "interrupted (Ctrl-C)", "epochs_done": 3}
    assert Run(late.path).status == "failed"


@pytest.mark.parametrize("key, value", [("data_source", "text"), ("class_names", {"a": 1}), ("seed", "0")])
def test_a_record_field_of_the_wrong_type_is_a_damaged_run(tmp_path, key, value):
    folder = tmp_path / "run"
    folder.mkdir()
    record = {"config": {}, "seed": 0, "class_names": ["a", "b"], "image_shape": [32, 32, 3], "data_source": {}}
    (folder / "config.json").write_text(json.dumps({**record, key: value}))
    with pytest.raises(RunDirectoryError, match=f"holds '{key}' as"):
        Run(str(folder)).image_geometry


def test_a_run_dir_that_is_a_file_is_named_as_a_file(tmp_path):
    (tmp_path / "notes").write_text("x")
    with pytest.raises(RunDirectoryError, match="is a file, not a folder"):
        check_run_dir_free(str(tmp_path / "notes"))


def test_resume_clears_the_half_written_files_a_kill_left_in_the_run_folder(tmp_path):
    (tmp_path / ".model.k2j3.partial.keras").write_bytes(b"half a model")
    (tmp_path / "model.keras").write_bytes(b"kept")
    clear_partial(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["model.keras"]
