"""probe: one row per backbone and cut, its table, csv and plot; and what it refuses."""

import csv
import json
import os

import pytest

from resnet_transfer.cli import main
from resnet_transfer.files import hash_file
from resnet_transfer.samples import write_shapes


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shapes(str(tmp_path_factory.mktemp("shapes")), per_class=(16, 12, 10))["npz"]


@pytest.mark.slow
def test_probe_ranks_every_backbone_and_cut_and_writes_its_table_and_plot(shapes, tmp_path, capsys):
    run_dir = tmp_path / "probe"
    arguments = ["probe", "--data", shapes, "--image-size", "32", "--backbone", "resnet50,resnet50v2", "--feature-layer", "conv3,conv5",
                 "--weights", "none", "--cache-dir", str(tmp_path / "cache"), "--run-dir", str(run_dir)]
    assert main(arguments) == 0
    printed = capsys.readouterr().out.splitlines()
    rows = list(csv.DictReader(open(run_dir / "probe.csv")))
    assert [(row["backbone"], row["feature_layer"]) for row in rows] == [
        ("resnet50", "conv3"), ("resnet50", "conv5"), ("resnet50v2", "conv3"), ("resnet50v2", "conv5")]
    assert list(rows[0]) == ["backbone", "feature_layer", "linear_accuracy", "knn_accuracy", "seconds", "feature_size"]
    assert [int(row["feature_size"]) for row in rows] == [512, 2048, 512, 2048]
    assert all(0 <= float(row[column]) <= 1 for row in rows for column in ("linear_accuracy", "knn_accuracy"))
    table = [line for line in printed if line.startswith(("resnet50 ", "resnet50v2 "))]
    assert len(table) == 4 and sum("<- best" in line for line in table) == 1
    best = max(rows, key=lambda row: (float(row["linear_accuracy"]), float(row["knn_accuracy"])))
    assert printed[-1].startswith(f"best: --backbone {best['backbone']} --feature-layer {best['feature_layer']}")
    assert open(run_dir / "probe.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert json.load(open(run_dir / "status.json"))["state"] == "finished"
    # The features went to the cache under train's keys: one entry per backbone, cut and split.
    assert len([name for name in os.listdir(tmp_path / "cache") if not name.startswith(".")]) == 8


@pytest.mark.parametrize("arguments, message", [
    (["--backbone", "resnet50,resnet18"], "unknown backbone 'resnet18'"),
    (["--feature-layer", "conv3,conv7"], "--feature-layer takes stages among conv2, conv3, conv4, conv5"),
    (["--backbone", "resnet50,resnet50v2", "--weights", "none,none,none"], "one value for every backbone, or one per"),
    (["--feature-layer", "conv3,conv3"], "names an entry twice"),
    (["--backbone", "resnet50,"], "expected names separated by commas"),
    (["--backbone", "resnet50,resnet50v2", "--weights", "none,{v2_weights}"],
     "holds the weights of 'resnet50' (its sidecar says so), not of resnet50v2"),
])
def test_probe_refuses_bad_choices_with_one_line_and_leaves_no_folder(shapes, tmp_path, capsys, arguments, message):
    run_dir = tmp_path / "probe"
    v2_weights = tmp_path / "other.weights.h5"  # checked by its sidecar before any data is read
    v2_weights.write_bytes(b"not read")
    (tmp_path / "other.weights.json").write_text(json.dumps(
        {"format": 1, "backbone": "resnet50", "weights_sha256": "0" * 64, "epochs": 1, "classes": [], "source": {},
         "test_accuracy": None}))
    arguments = [argument.format(v2_weights=v2_weights) for argument in arguments]
    try:  # argparse's own errors exit from inside the parser
        status = main(["probe", "--data", shapes, "--weights", "none", *arguments, "--run-dir", str(run_dir)])
    except SystemExit as exit:
        status = exit.code
    assert status == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]
    assert not run_dir.exists()


@pytest.mark.slow
def test_a_pretrained_file_is_described_once_however_many_cuts_are_probed(shapes, tmp_path, caplog):
    import keras

    path = str(tmp_path / "mine.weights.h5")
    keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(path)
    (tmp_path / "mine.weights.json").write_text(json.dumps(  # a sidecar of an older pretrain: no recalibration record
        {"format": 1, "backbone": "resnet50", "weights_sha256": hash_file(path), "epochs": 1, "classes": [0, 1],
         "source": {"name": "mnist"}, "test_accuracy": 0.5, "image_size": 32, "preprocess": "seed"}))
    caplog.set_level("INFO", logger="resnet_transfer")
    assert main(["probe", "--data", shapes, "--image-size", "32", "--backbone", "resnet50", "--weights", path,
                 "--feature-layer", "conv3,conv4,conv5", "--cache-dir", str(tmp_path / "cache"),
                 "--run-dir", str(tmp_path / "probe")]) == 0
    said = [record.getMessage() for record in caplog.records]
    assert sum("no record of recomputed BatchNormalization statistics" in line for line in said) == 1
    assert sum(line.startswith("pretrained by resnet-transfer on mnist") for line in said) == 1
