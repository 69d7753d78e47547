"""INT8 export: the accuracy gate refuses a broken calibration and keeps a good one; the INT8
file loads in its runtime and predicts the run's classes; bad flags stop in one line."""

import json
import os

import keras
import numpy as np
import pytest

from resnet_transfer.quantization import AccuracyDropError, quantize_and_gate


def _corner_images(count, rng):
    """16x16 images whose class (0 or 1) is whether the top-left corner is bright."""
    images = rng.integers(0, 60, size=(count, 16, 16, 3)).astype(np.uint8)
    labels = np.arange(count) % 2
    images[labels == 1, :4, :4] = 255
    return images, labels


@pytest.fixture(scope="module")
def corner_model():
    """A small convolutional model from uint8 pixels, trained until it is right on every image."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(keras.ops.cast(inputs, "float32"))
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalMaxPooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    rng = np.random.default_rng(0)
    images, labels = _corner_images(256, rng)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(images, labels, epochs=30, verbose=0)
    test, test_labels = _corner_images(200, rng)
    assert np.mean(model.predict(test, verbose=0).argmax(axis=1) == test_labels) == 1.0
    return model, images, test, test_labels


@pytest.mark.parametrize("output_format", ["openvino", "tflite"])
def test_the_gate_refuses_a_calibration_on_one_black_image_and_writes_nothing(corner_model, tmp_path, output_format):
    model, _, test, labels = corner_model
    black = np.zeros((1, 16, 16, 3), np.uint8)
    with pytest.raises(AccuracyDropError, match=r"loses [0-9.]+ points of top-1 accuracy .* nothing was written"):
        quantize_and_gate(model, output_format, str(tmp_path), calibration=black, images=test, labels=labels)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("output_format", ["openvino", "tflite"])
def test_a_calibrated_int8_model_passes_and_records_both_models(corner_model, tmp_path, output_format):
    model, train, test, labels = corner_model
    record = quantize_and_gate(model, output_format, str(tmp_path), calibration=train[:100], images=test, labels=labels)
    assert record["accuracy_drop_points"] <= 1.0 and record["int8"]["accuracy"] >= 0.99
    assert record["int8"]["bytes"] > 0 and record["float"]["bytes"] > 0  # (for this tiny model, INT8 is no smaller)
    assert record["calibration_images"] == 100 and record["test_images"] == 200
    assert sorted(os.listdir(tmp_path)) == (["model.bin", "model.xml"] if output_format == "openvino"
                                            else ["model.tflite"])


@pytest.mark.slow
def test_export_int8_of_a_run_loads_in_openvino_and_predicts_its_classes(mnist_run, tmp_path, capsys):
    import openvino

    from resnet_transfer.cli import main
    from resnet_transfer.runs import Run

    output = str(tmp_path / "int8")
    assert main(["export", mnist_run.run_dir, "--format", "openvino", "--int8", "--calibration-images", "64",
                 "--max-accuracy-drop", "100", "--output", output]) == 0
    printed = json.loads(capsys.readouterr().out)
    gate = printed["accuracy_gate"]
    assert printed["int8"] is True and gate["calibration_images"] == 64 and 0 <= gate["int8"]["accuracy"] <= 1
    with open(os.path.join(output, "export.json")) as handle:
        assert json.load(handle)["accuracy_gate"] == gate
    run = Run(mnist_run.run_dir)
    images = np.asarray(run.load_dataset(splits=("test",)).x_test[:4], dtype=np.uint8)
    probabilities = openvino.Core().compile_model(os.path.join(output, "model.xml"), "CPU")(images)[0]
    assert probabilities.shape == (4, len(run.labels)) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-3)
    with open(os.path.join(output, "labels.txt")) as handle:
        assert handle.read().split() == run.labels

    for flags, expected in ((["--format", "onnx", "--int8"], "--int8 applies to openvino and tflite"),
                            (["--format", "tflite", "--int8", "--quantize"], "give one")):
        assert main(["export", mnist_run.run_dir, *flags, "--output", str(tmp_path / "other")]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and expected in error[0], error
    with pytest.raises(SystemExit) as stopped:  # (argparse's own refusal)
        main(["export", mnist_run.run_dir, "--format", "openvino", "--int8", "--calibration-images", "0"])
    assert stopped.value.code == 2 and "--calibration-images" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "other")
