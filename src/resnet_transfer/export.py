"""Export: a run's model as SavedModel, TFLite, ONNX or OpenVINO IR, checked against Keras.

Each export takes raw uint8 images of the training size (the preprocessing is
inside the model), and is written with the format's well-kept converter through
``keras.Model.export`` (TensorFlow's SavedModel and TFLite converters, tf2onnx for
ONNX, OpenVINO's converter) into a folder holding the model, ``labels.txt``,
``preprocessing.json`` and ``export.json`` (what was checked). The export is then run
on a few of the run's test images with the format's own runtime (``tf.saved_model``,
LiteRT's interpreter, onnxruntime, OpenVINO) and compared with the Keras model: the
largest difference in probabilities must stay within 1e-4 (1e-2 for a quantised TFLite
model). An INT8 export (``int8``, OpenVINO or TFLite) is instead gated on accuracy over
the whole test split (``quantization``).

TensorFlow is needed here (the converters are TensorFlow's), whatever the Keras backend.

Example:
    >>> export_run("runs/photos", "tflite")
    {'format': 'tflite', 'path': 'runs/photos/export/tflite/model.tflite', 'max_abs_difference': 3e-07, ...}
"""

import logging
import os
import shutil
from typing import Optional

import keras
import numpy as np

from resnet_transfer.config import EXPORT_FORMATS, check_export_settings
from resnet_transfer.errors import ConfigError, ExportCheckError, RunDirectoryError
from resnet_transfer.files import make_temporary_folder, write_json_atomic, write_text_atomic
from resnet_transfer.quantization import (
    DEFAULT_CALIBRATION_IMAGES, DEFAULT_MAX_ACCURACY_DROP, openvino_predictor, quantize_and_gate,
)
from resnet_transfer.runs import Run

__all__ = ["EXPORT_FORMATS", "TOLERANCE", "QUANTIZED_TOLERANCE", "export_run"]

logger = logging.getLogger(__name__)

TOLERANCE, QUANTIZED_TOLERANCE = 1e-4, 1e-2
_CHECK_IMAGES = 8
_FILES = {"savedmodel": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx", "openvino": "model.xml"}


def _uint8_model(model):
    """The run's model behind a uint8 input, so deployments feed raw pixels."""
    inputs = keras.Input(shape=model.input_shape[1:], dtype="uint8", name="image")
    return keras.Model(inputs, model(inputs), name="exported")


def _write(model, output_format: str, path: str, quantize: bool) -> None:
    if output_format == "savedmodel":
        model.export(path, format="tf_saved_model", verbose=False)
    elif output_format == "tflite":
        import tensorflow as tf

        options = {"optimizations": [tf.lite.Optimize.DEFAULT]} if quantize else {}
        model.export(path, format="litert", verbose=False, **options)
    elif output_format == "openvino":
        model.export(path, format="openvino", verbose=False)
    else:
        model.export(path, format="onnx", verbose=False)


def _run_export(output_format: str, path: str, images: np.ndarray) -> np.ndarray:
    if output_format == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(path)  # keep a reference: its variables die with it
        return np.asarray(loaded.serve(images))
    if output_format == "tflite":
        from ai_edge_litert.interpreter import Interpreter  # LiteRT's; tf.lite.Interpreter is deprecated

        interpreter = Interpreter(model_path=path)
        interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], list(images.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    if output_format == "openvino":
        return openvino_predictor(path)(images)
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def _check_output_dir(output_dir: str) -> None:
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise RunDirectoryError(f"export output {output_dir!r} is a file, not a folder; choose another --output")
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        raise RunDirectoryError(f"export folder {output_dir!r} already holds files; exports are never overwritten. "
                                "Remove it or choose another --output")


def export_run(run_dir: str, output_format: str, *, quantize: bool = False, output_dir: Optional[str] = None,
               allow_changed_data: bool = False, int8: bool = False,
               calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
               max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP, calibration: Optional[np.ndarray] = None) -> dict:
    """Exports a run's model and checks it against the Keras model.

    Args:
        run_dir: a finished run.
        output_format: "savedmodel", "tflite", "onnx" or "openvino".
        quantize: dynamic-range quantisation (TFLite only).
        output_dir: where to write (default ``RUN_DIR/export/<format>``, ``<format>-int8`` with
            ``int8``); must not hold files.
        allow_changed_data: check on the run's test images even if the data changed since training.
        int8: INT8 post-training quantisation (OpenVINO through NNCF, TFLite full-integer),
            calibrated on ``calibration_images`` of the run's training images (seeded), and
            kept only if it loses at most ``max_accuracy_drop`` points of top-1 accuracy on the
            run's test split (``quantization.quantize_and_gate``).
        calibration: with ``int8``, the calibration images themselves instead (uint8, N x H x W x 3).

    Returns:
        A dict with the format, the model's path, and what was checked: the images checked
        and the largest absolute difference in probabilities, or with ``int8`` the float
        and INT8 accuracy, size and images per second (also in the folder's export.json).

    Raises:
        ConfigError: an unknown format, ``quantize`` with a format other than TFLite, or
            ``int8`` with a format other than OpenVINO and TFLite, or a calibration count below 1.
        RunDirectoryError: the output is a file or a folder that holds files.
        DataError: the run's data changed since training (without ``allow_changed_data``).
        ExportCheckError: the exported model differs from Keras by more than the tolerance
            (the export is then not kept).
        AccuracyDropError: the INT8 model loses more than ``max_accuracy_drop`` points (nothing kept).
    """
    check_export_settings(output_format, quantize, int8)
    if int8 and calibration is None and (isinstance(calibration_images, bool) or not isinstance(calibration_images, int)
                                         or calibration_images < 1):
        raise ConfigError(f"calibration_images must be a whole number of at least 1. Received: "
                          f"calibration_images={calibration_images!r}")
    if int8 and (not isinstance(max_accuracy_drop, (int, float)) or not 0 <= max_accuracy_drop <= 100):
        raise ConfigError(f"max_accuracy_drop must be a number of points from 0 to 100. Received: "
                          f"max_accuracy_drop={max_accuracy_drop!r}")
    suffix = "-int8" if int8 else "-quantized" if quantize else ""
    output_dir = output_dir or os.path.join(run_dir, "export", output_format + suffix)
    _check_output_dir(output_dir)
    run = Run(run_dir)
    record = run.record
    model = _uint8_model(run.load_model())
    splits = ("train", "test") if int8 and calibration is None else ("test",)
    dataset = run.load_dataset(splits=splits, allow_changed_data=allow_changed_data)
    images = np.ascontiguousarray(np.asarray(dataset.x_test[:_CHECK_IMAGES], dtype=np.uint8))
    expected = model.predict(images, verbose=0)

    parent = os.path.dirname(os.path.abspath(output_dir))
    try:
        os.makedirs(parent, exist_ok=True)
        staging = make_temporary_folder(parent, prefix=f".{os.path.basename(output_dir)}.partial-")
    except OSError as error:
        raise RunDirectoryError(f"cannot write the export into {parent!r} ({error.strerror}); choose a writable --output") from error
    try:
        model_path = os.path.join(staging, _FILES[output_format])
        if int8:
            checked = {"accuracy_gate": quantize_and_gate(
                model, output_format, staging, images=np.asarray(dataset.x_test, dtype=np.uint8), labels=dataset.y_test,
                calibration=_calibration(dataset, calibration, calibration_images, seed=record.get("seed", 0)),
                max_accuracy_drop=max_accuracy_drop)}
        else:
            _write(model, output_format, model_path, quantize)
            difference = float(np.max(np.abs(_run_export(output_format, model_path, images) - expected)))
            tolerance = QUANTIZED_TOLERANCE if quantize else TOLERANCE
            if not difference <= tolerance:
                raise ExportCheckError(
                    f"the {output_format} export differs from the Keras model by {difference:.3g} in probability on "
                    f"{len(images)} test images (allowed: {tolerance:g}); nothing was kept"
                )
            checked = {"images_checked": int(len(images)), "max_abs_difference": difference, "tolerance": tolerance}
        write_text_atomic(os.path.join(staging, "labels.txt"), "".join(f"{name}\n" for name in run.labels))
        preprocessing = {
            "input": "uint8 RGB pixels in [0, 255], shape [batch, height, width, 3]",
            "image_size": run.image_geometry[0],
            "resize": run.image_geometry[1],
            "in_model": f"{record['config']['model']['preprocess']} preprocessing of {record['config']['model']['backbone']}",
            "outputs": "class probabilities in the order of labels.txt",
        }
        write_json_atomic(os.path.join(staging, "preprocessing.json"), preprocessing)
        result = {"format": output_format, "path": os.path.join(output_dir, _FILES[output_format]),
                  "quantized": quantize, "int8": int8, **checked}
        write_json_atomic(os.path.join(staging, "export.json"), result)
        if os.path.isdir(output_dir):
            os.rmdir(output_dir)  # empty, checked above
        os.rename(staging, output_dir)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
    if not int8:
        logger.info("%s export checked on %d test images: largest difference %.3g (allowed %g)",
                    output_format, len(images), checked["max_abs_difference"], checked["tolerance"])
    return result


def _calibration(dataset, given: Optional[np.ndarray], count: int, *, seed: int) -> np.ndarray:
    """The images INT8 quantisation calibrates on: ``given``, else ``count`` of the training
    split drawn with the run's seed (all of them when it has fewer)."""
    if given is not None:
        return np.asarray(given, dtype=np.uint8)
    chosen = np.sort(np.random.default_rng(seed).permutation(len(dataset.y_train))[:count])
    return np.asarray(dataset.x_train[chosen], dtype=np.uint8)
