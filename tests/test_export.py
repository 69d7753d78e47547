import json
import os
import shutil

import keras
import pytest
from conftest import requires_mnist

import resnet_transfer.export as export
from resnet_transfer.cli import main
from resnet_transfer.errors import ConfigError, ExportCheckError


# The exports are of the shared MNIST run, which takes its worker about 25 s to train: out of the fast loop.
pytestmark = [requires_mnist, pytest.mark.slow]


@pytest.fixture
def run_dir(mnist_run):
    """The shared small MNIST run (random-weight ResNet50, 32x32); exports go to their own folders."""
    return mnist_run.run_dir


@pytest.mark.slow
# ONNX of the shared run's fine-tuned ResNet50; TFLite (checked quantised: the float conversion is the
# same path, with a tighter tolerance) and SavedModel, the base of both converters, on a tiny model below.
def test_an_onnx_export_of_the_fine_tuned_resnet_round_trips_within_the_tolerance(run_dir, tmp_path):
    pytest.importorskip("tf2onnx", reason="tf2onnx is not installed (pip install -e '.[export]')")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[export]')")
    check_export(run_dir, "onnx", quantize=False, output_dir=tmp_path / "export")


def check_export(run_dir, output_format, *, quantize, output_dir):
    result = export.export_run(run_dir, output_format, quantize=quantize, output_dir=str(output_dir))
    folder = os.path.dirname(result["path"])
    assert os.path.exists(result["path"]) and open(os.path.join(folder, "labels.txt")).read().split() == [str(digit) for digit in range(10)]
    assert json.load(open(os.path.join(folder, "preprocessing.json")))["image_size"] == 32
    assert result["images_checked"] == 8 and result["max_abs_difference"] <= (1e-2 if quantize else 1e-4)


@pytest.fixture
def tiny_run(run_dir, tmp_path):
    """A run folder with the shared run's record and labels, but a tiny Keras model in model.keras
    (exporting a ResNet takes most of a minute; the check and the clean-up do not depend on it)."""
    folder = tmp_path / "tiny-run"
    folder.mkdir()
    for name in ("config.json", "labels.txt"):
        shutil.copy(os.path.join(run_dir, name), folder / name)
    inputs = keras.Input(shape=(32, 32, 3))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(features)).save(folder / "model.keras")
    return str(folder)


def test_a_quantised_tflite_export_round_trips_within_its_tolerance(tiny_run, tmp_path):
    check_export(tiny_run, "tflite", quantize=True, output_dir=tmp_path / "export")


def test_a_savedmodel_export_round_trips_and_one_outside_the_tolerance_keeps_nothing(tiny_run, tmp_path, monkeypatch):
    result = export.export_run(tiny_run, "savedmodel")
    assert result["path"] == os.path.join(tiny_run, "export", "savedmodel", "saved_model")
    assert result["max_abs_difference"] <= export.TOLERANCE
    with open(os.path.join(tiny_run, "export", "savedmodel", "labels.txt")) as handle:
        assert handle.read().split() == [str(digit) for digit in range(10)]
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # no difference can be within it: the real check must refuse
    with pytest.raises(ExportCheckError, match="differs from the Keras model"):
        export.export_run(tiny_run, "savedmodel", output_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists() and not [name for name in os.listdir(tmp_path) if name.startswith(".out")]


def test_bad_export_arguments_exit_2(run_dir, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["export", run_dir, "--format", "coreml"])
    assert caught.value.code == 2 and "invalid choice: 'coreml'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="savedmodel, tflite, onnx.*coreml"):
        export.export_run(run_dir, "coreml")
    assert main(["export", run_dir, "--format", "onnx", "--quantize"]) == 2
    assert "tflite only" in capsys.readouterr().err
