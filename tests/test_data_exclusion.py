"""--exclude: the listed images leave every split, exactly them; a list naming other data stops."""

import os

import numpy as np
import pytest

from resnet_transfer.config import DataConfig
from resnet_transfer.data.dataset import load_dataset
from resnet_transfer.errors import ConfigError, DataError
from resnet_transfer.samples import write_shapes


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shapes(str(tmp_path_factory.mktemp("shapes")), per_class=(20, 20, 20))


def _write(path, lines) -> str:
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return str(path)


def _all_ids(dataset) -> set:
    return set().union(*map(set, dataset.ids.values()))


def test_arrays_lose_exactly_the_listed_places_in_every_split(shapes, tmp_path):
    whole = load_dataset(DataConfig(source=shapes["npz"], val_size=6), seed=0)
    listed = ["x_train[3]", "x_train[17]", "x_test[0]"]
    exclude = _write(tmp_path / "exclude.txt", ["# from audit", *listed, ""])

    kept = load_dataset(DataConfig(source=shapes["npz"], val_size=6, exclude=exclude), seed=0)

    assert _all_ids(kept) == _all_ids(whole) - set(listed)
    assert len(kept.y_train) + len(kept.y_val) + len(kept.y_test) == (
        len(whole.y_train) + len(whole.y_val) + len(whole.y_test) - 3)
    assert kept.source["fingerprint"] != whole.source["fingerprint"]  # (evaluate sees another list as other data)
    for split in ("train", "val", "test"):  # each id still names its own image
        assert len(kept.ids[split]) == len(getattr(kept, f"y_{split}"))


def test_files_are_named_by_path_and_audit_csv_is_read_by_its_path_column(shapes, tmp_path):
    whole = load_dataset(DataConfig(source=shapes["images"], test_size=0.2, val_size=0.2), seed=0)
    victim = whole.ids["train"][0]
    position = whole.ids["train"].index(victim)
    audit_csv = _write(tmp_path / "audit.csv", ["path,split,kind,score,given_label,suggested_label,partner_path",
                                                f"{victim},train,label_issue,0.9,circle,square,"])

    kept = load_dataset(DataConfig(source=shapes["images"], test_size=0.2, val_size=0.2, exclude=audit_csv), seed=0)

    assert victim not in _all_ids(kept) and len(_all_ids(kept)) == len(_all_ids(whole)) - 1
    assert not any(np.array_equal(image, whole.x_train[position]) for image in kept.x_train)
    relative = _write(tmp_path / "relative.txt", [os.path.relpath(victim, tmp_path)])  # (from the list's folder)
    again = load_dataset(DataConfig(source=shapes["images"], test_size=0.2, val_size=0.2, exclude=relative), seed=0)
    assert victim not in _all_ids(again)


def test_a_list_naming_images_of_other_data_stops_with_the_names(shapes, tmp_path):
    exclude = _write(tmp_path / "other.txt", ["x_train[3]", "cats/tom.jpg"])
    with pytest.raises(DataError, match=r"1 of its 2 names are no image of .*cats/tom\.jpg"):
        load_dataset(DataConfig(source=shapes["npz"], exclude=exclude), seed=0)
    with pytest.raises(ConfigError, match="exclude must be an existing file"):
        DataConfig(source=shapes["npz"], exclude=str(tmp_path / "missing.txt"))


def test_the_command_line_refuses_a_list_of_unknown_images_in_one_line(shapes, tmp_path, capsys):
    from resnet_transfer.cli import main

    exclude = _write(tmp_path / "other.txt", ["x_validation[1]"])
    status = main(["train", "--data", shapes["npz"], "--exclude", exclude, "--weights", "none", "--backbone",
                   "resnet50", "--epochs", "1", "--run-dir", str(tmp_path / "run")])
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(error) == 1 and "x_validation[1]" in error[0] and "Traceback" not in error[0]
    assert not os.path.exists(tmp_path / "run")


def test_a_list_of_a_whole_class_drops_the_class_as_asked_not_as_unreadable(shapes, tmp_path, caplog):
    whole = load_dataset(DataConfig(source=shapes["images"]), seed=0)
    circles = sorted(os.path.join(folder, name) for folder, _, names in os.walk(shapes["images"])
                     for name in names if os.path.basename(folder) == "circle")
    exclude = _write(tmp_path / "circles.txt", circles)
    with caplog.at_level("WARNING", logger="resnet_transfer.data.exclusion"):
        kept = load_dataset(DataConfig(source=shapes["images"], exclude=exclude, strict=True), seed=0)
    assert whole.class_names == ("circle", "square", "triangle") and kept.class_names == ("square", "triangle")
    assert kept.skipped == []  # (--strict passes: nothing was unreadable)
    assert "names every training image of class(es) 'circle'" in caplog.text


def test_a_list_that_leaves_nothing_or_one_class_to_train_on_stops_naming_the_list(shapes, tmp_path):
    everything = sorted(os.path.join(folder, name) for folder, _, names in os.walk(shapes["images"]) for name in names)
    with pytest.raises(DataError, match=r"--exclude '.*all.txt' names all 60 training images .* nothing is left"):
        load_dataset(DataConfig(source=shapes["images"], exclude=_write(tmp_path / "all.txt", everything)), seed=0)
    two = [path for path in everything if os.sep + "triangle" + os.sep not in path]
    with pytest.raises(DataError, match=r"leaves training images of 1 class\(es\) .*\(triangle\): training needs at "
                                        r"least 2"):
        load_dataset(DataConfig(source=shapes["images"], exclude=_write(tmp_path / "two.txt", two)), seed=0)
    array_places = [f"x_train[{index}]" for index in range(200)]
    with pytest.raises(DataError, match="names all .* training images"):
        load_dataset(DataConfig(source=shapes["npz"], exclude=_write(tmp_path / "places.txt", array_places[:48])),
                     seed=0)


def test_names_are_read_as_people_write_them(shapes, tmp_path, caplog):
    """Windows line endings, repeats, spacing and case in array places, a one-column CSV, an empty list."""
    whole = load_dataset(DataConfig(source=shapes["npz"], val_size=6), seed=0)
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"x_train[ 3]\r\nX_TRAIN[03]\r\nx_train[17]\r\n\r\n# note\r\n")
    one_column = _write(tmp_path / "one.csv", ["path", "x_train[3]", "x_train[17]"])
    for exclude in (str(crlf), one_column):
        kept = load_dataset(DataConfig(source=shapes["npz"], val_size=6, exclude=exclude), seed=0)
        assert _all_ids(kept) == _all_ids(whole) - {"x_train[3]", "x_train[17]"}, exclude
    empty = _write(tmp_path / "empty.txt", [""])
    with caplog.at_level("WARNING", logger="resnet_transfer.data.exclusion"):
        assert _all_ids(load_dataset(DataConfig(source=shapes["npz"], val_size=6, exclude=empty), seed=0)) == \
            _all_ids(whole)
    assert "names no image: nothing is left out" in caplog.text


def test_a_csv_without_a_path_column_is_refused_with_its_columns(shapes, tmp_path):
    exclude = _write(tmp_path / "flagged.csv", ["file,kind", "x_train[1],label_issue"])
    with pytest.raises(DataError, match=r"is a CSV without a \"path\" column \(its columns: file, kind\)"):
        load_dataset(DataConfig(source=shapes["npz"], exclude=exclude), seed=0)
