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
    relative = _write(tmp_path / "relative.txt", [os.path.relpath(victim)])
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
