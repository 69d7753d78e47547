"""pretrain -> weights file + sidecar -> train --weights FILE, and what pretrain refuses."""

import json
import os
import shutil

import keras
import numpy as np
import pytest
from conftest import requires_mnist

from resnet_transfer.cli import main
from resnet_transfer.config import RunConfig
from resnet_transfer.errors import WeightsError
from resnet_transfer.model.assembly import backbone_of
from resnet_transfer.model.backbone import check_pretrained_fit, create_backbone
from resnet_transfer.model.weights import sidecar_path
from resnet_transfer.training.train import train

pytestmark = pytest.mark.slow  # every test here shares one pretraining of about 40 s

# Eagerly: tracing the graph of a trainable ResNet50 takes about 50 s, longer than these 3 steps.
SMALL = ["--backbone", "resnet50", "--limit", "48", "--val-size", "16", "--test-limit", "16", "--batch-size", "16",
         "--run-eagerly"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """One epoch of pretraining on 48 MNIST digits 0-2, through the command line."""
    folder = tmp_path_factory.mktemp("pretrain")
    out = str(folder / "digits.weights.h5")
    status = main(["pretrain", "--classes", "0,1,2", "--epochs", "1", "--out", out, "--run-dir", str(folder / "run"),
                   *SMALL])
    assert status == 0
    return folder, out


@requires_mnist
def test_pretrain_writes_weights_a_sidecar_and_a_run_folder(pretrained):
    folder, out = pretrained
    sidecar = json.loads(open(sidecar_path(out)).read())
    assert sidecar_path(out).endswith("digits.weights.json")
    assert (sidecar["backbone"], sidecar["classes"], sidecar["epochs"], sidecar["started_from"]) == (
        "resnet50", ["0", "1", "2"], 1, "none")
    assert sidecar["source"]["name"] == "mnist" and sidecar["source"]["classes_setting"] == ["0", "1", "2"]
    assert sidecar["n_train"] == 48 and 0 <= sidecar["test_accuracy"] <= 1 and "val_accuracy" in sidecar["final"]
    for name in ("config.json", "history.csv", "curves.png", "metrics.json", "model.keras", "report.html"):
        assert os.path.isfile(folder / "run" / name), name
    assert open(folder / "run" / "history.csv").read().splitlines()[1].split(",")[1] == "pretrain"
    assert not [name for name in os.listdir(folder) if ".partial" in name]

    # Every weight of the trained backbone is in the file, and loads with plain Keras into a fresh ResNet50.
    trained = backbone_of(keras.saving.load_model(str(folder / "run" / "model.keras")))
    fresh = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    fresh.load_weights(out)
    assert len(fresh.weights) == len(trained.weights) == 318
    for expected, loaded in zip(trained.weights, fresh.weights):
        np.testing.assert_array_equal(np.asarray(expected), np.asarray(loaded), err_msg=expected.path)
    # Pretraining trained BatchNormalization in training mode, then recomputed its statistics over the
    # training images (PreciseBN): the sidecar says over how many, and what both modes scored before and after.
    assert not np.allclose(np.asarray(trained.get_layer("conv1_bn").moving_mean), 0)
    record = sidecar["bn_recalibration"]
    assert (record["method"], record["layers"], record["images"], record["split"]) == ("PreciseBN", 53, 48, "val")
    for when in ("before", "after"):
        assert set(record[when]) == {"training_mode", "inference_mode"}
        assert all(0 <= value <= 1 for value in record[when].values())
    assert json.loads(open(folder / "run" / "metrics.json").read())["bn_recalibration"] == record


@requires_mnist
@pytest.mark.parametrize("change, warned", [
    ({"bn_recalibration": None}, "no record of recomputed BatchNormalization statistics"),
    ({"bn_recalibration": {"after": {"training_mode": 0.98, "inference_mode": 0.5}}}, "98.0% in training mode but 50.0%"),
    ({"bn_recalibration": {}}, "no record of recomputed BatchNormalization statistics"),
    ({"bn_recalibration": {"after": {"training_mode": 0.9, "inference_mode": 0.88}}}, None),
])
def test_a_weights_file_whose_statistics_may_be_stale_is_named_with_what_to_do(pretrained, tmp_path, caplog, change,
                                                                              warned):
    _, out = pretrained
    copy = str(tmp_path / "copy.weights.h5")
    shutil.copyfile(out, copy)
    sidecar = {**json.loads(open(sidecar_path(out)).read()), **change}
    if change.get("bn_recalibration", 0) is None:
        del sidecar["bn_recalibration"]  # as pretrain wrote it before PreciseBN
    (tmp_path / "copy.weights.json").write_text(json.dumps(sidecar))
    with caplog.at_level("INFO", logger="resnet_transfer"):
        create_backbone("resnet50", weights=copy, input_shape=(32, 32, 3))
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    if warned is None:
        assert warnings == []
        return
    assert len(warnings) == 1 and warned in warnings[0] and copy in warnings[0]
    assert "--bn-recalibrate" in warnings[0] and "pretrain again" in warnings[0]
    caplog.clear()
    with caplog.at_level("INFO", logger="resnet_transfer"):  # AdaBN will recompute them: no warning, a note
        create_backbone("resnet50", weights=copy, input_shape=(32, 32, 3), bn_recalibrate=True)
    assert not [record for record in caplog.records if record.levelname == "WARNING"]
    assert any(warned in record.getMessage() for record in caplog.records)


@requires_mnist
def test_a_sidecar_whose_recalibration_record_is_not_an_object_is_refused(pretrained, tmp_path):
    _, out = pretrained
    copy = str(tmp_path / "copy.weights.h5")
    shutil.copyfile(out, copy)
    (tmp_path / "copy.weights.json").write_text(json.dumps({**json.loads(open(sidecar_path(out)).read()),
                                                            "bn_recalibration": "yes"}))
    with pytest.raises(WeightsError, match="bn_recalibration='yes', not an object"):
        create_backbone("resnet50", weights=copy, input_shape=(32, 32, 3))
    (tmp_path / "copy.weights.json").write_text(json.dumps({**json.loads(open(sidecar_path(out)).read()),
                                                            "bn_recalibration": {"after": {"training_mode": 98.9}}}))
    with pytest.raises(WeightsError, match="fractions from 0 to 1"):  # percentages are no fractions
        create_backbone("resnet50", weights=copy, input_shape=(32, 32, 3))


@requires_mnist
def test_train_from_the_pretrained_file_cut_at_conv3_loads_every_weight_of_the_cut(pretrained, tmp_path):
    folder, out = pretrained
    result = train(RunConfig.from_dict({
        "data": {"classes": ["3", "4"], "limit": 32, "val_size": 16, "test_limit": 16},
        "model": {"backbone": "resnet50", "weights": out, "feature_layer": "conv3", "head": "linear"},
        "train": {"epochs": 1, "cache_dir": str(tmp_path / "cache")},
        "run_dir": str(tmp_path / "run"),
    }))
    backbone = backbone_of(result.model)
    assert backbone.output_shape == (None, 4, 4, 512) and result.model.output_shape == (None, 2)
    trained = backbone_of(keras.saving.load_model(str(folder / "run" / "model.keras")))
    pretrained_weights = {weight.path: np.asarray(weight) for weight in trained.weights}
    assert len(backbone.weights) == 144  # conv1 to conv3 of the 318
    for weight in backbone.weights:
        np.testing.assert_array_equal(np.asarray(weight), pretrained_weights[weight.path], err_msg=weight.path)
    record = json.loads(open(tmp_path / "run" / "config.json").read())
    assert record["resolved"]["feature_layer"] == "conv3_block4_out" and record["resolved"]["feature_map"] == [4, 4, 512]
    assert record["weights"]["pretrained"]["classes"] == ["0", "1", "2"]
    assert record["class_names"] == ["3", "4"]
    entries = [json.loads(open(tmp_path / "cache" / name / "entry.json").read())
               for name in os.listdir(tmp_path / "cache") if not name.startswith(".")]
    assert {entry["key"]["feature_layer"] for entry in entries} == {"conv3"} and len(entries) == 3


@requires_mnist
def test_a_pretrained_file_is_refused_for_another_backbone_or_when_replaced(pretrained, tmp_path):
    _, out = pretrained
    with pytest.raises(WeightsError, match="holds the weights of 'resnet50'.*not of resnet101: pass --backbone resnet50"):
        create_backbone("resnet101", weights=out, input_shape=(32, 32, 3))
    copy = str(tmp_path / "copy.weights.h5")
    shutil.copyfile(out, copy)
    sidecar = json.loads(open(sidecar_path(out)).read())
    with open(sidecar_path(copy), "w") as handle:
        json.dump({**sidecar, "weights_sha256": "0" * 64}, handle)
    with pytest.raises(WeightsError, match="not the file its sidecar describes"):
        create_backbone("resnet50", weights=copy, input_shape=(32, 32, 3))
    os.remove(sidecar_path(copy))  # without a sidecar, Keras's own loading decides
    with pytest.raises(WeightsError, match="could not be loaded into resnet50v2"):
        create_backbone("resnet50v2", weights=copy, input_shape=(32, 32, 3))


@pytest.mark.parametrize("arguments, message", [
    (["--out", "{folder}/x.h5"], "must be a file name ending in .weights.h5"),
    (["--out", "{out}"], "already exists; pretrained weights are never overwritten"),
    (["--out", "{folder}/new.weights.h5", "--config", "{configs}/fine-tune.json"], "remove fine_tune_epochs from the config"),
    (["--out", "{folder}/new.weights.h5", "--config", "{configs}/cut.json"], "remove feature_layer from the config"),
    (["--out", "{folder}/new.weights.h5", "--fine-tune-epochs", "1"], "unrecognized arguments: --fine-tune-epochs 1"),
    (["--out", "{folder}/new.weights.h5", "--bn-recalibrate"], "unrecognized arguments: --bn-recalibrate"),
    (["--out", "{folder}/new.weights.h5", "--config", "{configs}/adabn.json"], "remove bn_recalibrate from the config file. Received: bn_recalibrate=True"),
    (["--out", "{folder}/new.weights.h5", "--classes", "0,ten"], "'ten' is not a class of this data"),
    (["--out", "{folder}/no/such/new.weights.h5"], "cannot write into the folder of --out"),
])
@requires_mnist
def test_pretrain_refuses_bad_input_with_one_line_and_writes_nothing(pretrained, arguments, message, capsys, tmp_path):
    folder, out = pretrained
    (tmp_path / "fine-tune.json").write_text('{"train": {"fine_tune_epochs": 1}}')
    (tmp_path / "cut.json").write_text('{"model": {"feature_layer": "conv3"}}')
    (tmp_path / "adabn.json").write_text('{"model": {"bn_recalibrate": true}}')
    before = sorted(os.listdir(folder))
    arguments = [argument.format(folder=folder, out=out, configs=tmp_path) for argument in arguments]
    try:
        status = main(["pretrain", *arguments, "--run-dir", str(folder / "refused"), *SMALL])
    except SystemExit as stop:  # argparse's own refusal
        status = stop.code
    assert status == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in error and error.startswith("resnet-transfer: error:")
    assert sorted(os.listdir(folder)) == before


@requires_mnist
def test_a_backbone_used_with_other_preprocessing_or_size_than_pretrained_is_named(pretrained, tmp_path, caplog,
                                                                                    capsys):
    folder, out = pretrained
    with caplog.at_level("WARNING", logger="resnet_transfer"):
        check_pretrained_fit(out, preprocess="seed", image_size=32)
        assert caplog.records == []
        check_pretrained_fit(out, preprocess="imagenet", image_size=64)
    (warning,) = [record.getMessage() for record in caplog.records]
    assert "preprocess='seed', image_size=32" in warning and "preprocess='imagenet', image_size=64" in warning
    assert "--preprocess seed and --image-size 32" in warning
    with pytest.raises(WeightsError, match="--strict refuses the mismatch"):
        check_pretrained_fit(out, preprocess="imagenet", image_size=32, strict=True)
    # train checks it before anything is written: under --strict the run folder is never made
    status = main(["train", "--weights", out, "--preprocess", "imagenet", "--strict", "--classes", "3,4",
                   "--run-dir", str(tmp_path / "refused"), *SMALL])
    assert status == 2 and not os.path.exists(tmp_path / "refused")
    assert "preprocess='seed'" in capsys.readouterr().err.strip().splitlines()[-1]


@requires_mnist
def test_pretrain_on_a_full_disk_ends_with_one_line_and_leaves_nothing_that_blocks_it(tmp_path, capsys, monkeypatch):
    import resnet_transfer.training.pretrain as pretraining

    monkeypatch.setattr(pretraining, "free_bytes", lambda folder: 10**6)
    out, run_dir = tmp_path / "d.weights.h5", tmp_path / "run"
    status = main(["pretrain", "--classes", "0,1", "--epochs", "1", "--out", str(out), "--run-dir", str(run_dir),
                   *SMALL])
    assert status == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("resnet-transfer: error: No space left on device for the weights") and str(out) in error
    assert "free some space" in error and sorted(os.listdir(tmp_path)) == []  # the same command can run again
