import json
import os

import numpy as np
import pytest

import resnet_transfer.export as export
from resnet_transfer.cli import main
from resnet_transfer.errors import ConfigError, ExportCheckError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny trained run on grey digits in an .npz (random-weight ResNet50, one epoch)."""
    folder = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    np.savez(folder / "digits.npz", x_train=rng.integers(0, 256, (60, 28, 28), dtype=np.uint8), y_train=np.repeat([0, 1, 2], 20))
    run = folder / "run"
    assert main(["train", "--data", str(folder / "digits.npz"), "--weights", "none", "--backbone", "resnet50",
                 "--epochs", "1", "--run-dir", str(run)]) == 0
    return str(run)


@pytest.mark.slow
@pytest.mark.parametrize("output_format, quantize", [("savedmodel", False), ("tflite", False), ("tflite", True), ("onnx", False)])
def test_each_format_round_trips_within_the_tolerance(run_dir, output_format, quantize):
    if output_format == "onnx":
        pytest.importorskip("tf2onnx", reason="tf2onnx is not installed (pip install -e '.[export]')")
        pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[export]')")
    result = export.export_run(run_dir, output_format, quantize=quantize)
    folder = os.path.dirname(result["path"])
    assert os.path.exists(result["path"]) and open(os.path.join(folder, "labels.txt")).read().split() == ["0", "1", "2"]
    assert json.load(open(os.path.join(folder, "preprocessing.json")))["image_size"] == 32
    assert result["images_checked"] == 8 and result["max_abs_difference"] <= (1e-2 if quantize else 1e-4)


@pytest.mark.slow
def test_an_export_outside_the_tolerance_fails_and_keeps_nothing(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "QUANTIZED_TOLERANCE", 0.0)  # quantisation always changes the outputs somewhat
    with pytest.raises(ExportCheckError, match="differs from the Keras model"):
        export.export_run(run_dir, "tflite", quantize=True, output_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists() and not [name for name in os.listdir(tmp_path) if name.startswith(".out")]


def test_bad_export_arguments_exit_2(run_dir, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["export", run_dir, "--format", "coreml"])
    assert caught.value.code == 2 and "invalid choice: 'coreml'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="savedmodel, tflite, onnx.*coreml"):
        export.export_run(run_dir, "coreml")
    assert main(["export", run_dir, "--format", "onnx", "--quantize"]) == 2
    assert "tflite only" in capsys.readouterr().err
