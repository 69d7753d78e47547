"""INT8 models with an accuracy gate: post-training quantisation of a run's model,
calibrated on its own training images, and kept only when it loses at most a stated
share of top-1 accuracy on the run's test split.

- OpenVINO: the float IR (``keras.Model.export(format="openvino")``) quantised by NNCF
  (``nncf.quantize``, OpenVINO's own post-training quantisation);
- TFLite (LiteRT): TensorFlow's converter, full-integer path (``Optimize.DEFAULT``, a
  representative dataset, ``TFLITE_BUILTINS_INT8`` kernels), through ``keras.Model.export``.

Both the float model and the INT8 one run in the format's own runtime on every test image
of the run; the export records both accuracies, their files' sizes and their images per
second (one timed pass over a batch, after a warm-up), and refuses (``AccuracyDropError``)
when the drop exceeds ``max_accuracy_drop`` points.

Example:
    >>> record = quantize_and_gate(model, "openvino", folder, calibration=x_train[:300], images=x_test, labels=y_test)
    >>> record["int8"]["accuracy"], record["accuracy_drop_points"]
"""

import contextlib
import logging
import os
import shutil
import sys
import time

import numpy as np

from resnet_transfer.errors import ExportCheckError, ResnetTransferError
from resnet_transfer.files import first_line
from resnet_transfer.signals import native_threads_without_sigint
from resnet_transfer.verbosity import shows_progress

__all__ = ["AccuracyDropError", "INT8_FORMATS", "DEFAULT_CALIBRATION_IMAGES", "DEFAULT_MAX_ACCURACY_DROP",
           "openvino_predictor", "quantize_and_gate", "quantize_openvino", "int8_file"]

logger = logging.getLogger(__name__)

INT8_FORMATS = ("openvino", "tflite")
DEFAULT_CALIBRATION_IMAGES = 300  # NNCF's default subset size
DEFAULT_MAX_ACCURACY_DROP = 1.0  # points of top-1 accuracy
_BATCH = 64
_FILES = {"openvino": "model.xml", "tflite": "model.tflite"}


class AccuracyDropError(ResnetTransferError):
    """The INT8 model loses more top-1 accuracy than allowed; nothing is written."""


def int8_file(output_format: str) -> str:
    """The INT8 model's file name in an export folder."""
    return _FILES[output_format]


def openvino_predictor(path: str):
    """A function from uint8 images to the outputs of the OpenVINO IR at ``path`` (CPU, float32
    precision hint, batches of 64, each call guarded against Ctrl-C in OpenVINO's threads)."""
    import openvino

    with native_threads_without_sigint():
        compiled = openvino.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

    def predict(images: np.ndarray) -> np.ndarray:
        outputs = []
        for start in range(0, len(images), _BATCH):
            with native_threads_without_sigint():
                outputs.append(compiled(np.ascontiguousarray(images[start : start + _BATCH]))[0].copy())
        return np.concatenate(outputs)

    return predict


def _litert_predict(path: str):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    index_in = interpreter.get_input_details()[0]["index"]
    details_out = interpreter.get_output_details()[0]

    def predict(images: np.ndarray) -> np.ndarray:
        outputs = []
        for start in range(0, len(images), _BATCH):
            batch = np.ascontiguousarray(images[start : start + _BATCH])
            interpreter.resize_tensor_input(index_in, list(batch.shape))
            interpreter.allocate_tensors()
            interpreter.set_tensor(index_in, batch)
            interpreter.invoke()
            output = interpreter.get_tensor(details_out["index"]).astype(np.float32)
            scale, zero = details_out.get("quantization", (0.0, 0))
            outputs.append((output - zero) * scale if scale else output)  # (an int8 output is dequantised)
        return np.concatenate(outputs)

    return predict


def _predictor(output_format: str, path: str):
    return openvino_predictor(path) if output_format == "openvino" else _litert_predict(path)


def _write_float(model, output_format: str, path: str) -> None:
    if output_format == "openvino":
        model.export(path, format="openvino", verbose=False)
    else:
        model.export(path, format="litert", verbose=False)


def quantize_openvino(float_path: str, path: str, calibration: np.ndarray) -> None:
    """Writes the INT8 model of the OpenVINO IR at ``float_path`` to ``path`` (an .xml, its .bin
    beside it): NNCF's post-training quantisation, calibrated on ``calibration`` (one image per
    call, in the model's input dtype)."""
    import nncf
    import openvino

    with contextlib.ExitStack() as stack:
        # NNCF's progress bars go to stdout, which holds the command's result: onto stderr, nowhere with --quiet
        shown = sys.stderr if shows_progress() else stack.enter_context(open(os.devnull, "w"))
        stack.enter_context(native_threads_without_sigint())
        stack.enter_context(contextlib.redirect_stdout(shown))
        float_model = openvino.Core().read_model(float_path)
        dataset = nncf.Dataset(list(calibration), lambda image: np.ascontiguousarray(image[None]))
        quantized = nncf.quantize(float_model, dataset, subset_size=len(calibration))
        openvino.save_model(quantized, path, compress_to_fp16=False)


def _write_int8(model, output_format: str, float_path: str, path: str, calibration: np.ndarray) -> None:
    if output_format == "openvino":
        quantize_openvino(float_path, path, calibration)
        return
    import tensorflow as tf

    def representative():
        for image in calibration:
            yield [np.ascontiguousarray(image[None])]

    model.export(path, format="litert", verbose=False, optimizations=[tf.lite.Optimize.DEFAULT],
                 representative_dataset=representative,
                 target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]})


def _size(path: str) -> int:
    """Bytes of a model file (with an OpenVINO IR, its .bin too)."""
    total = os.path.getsize(path)
    weights = os.path.splitext(path)[0] + ".bin"
    return total + (os.path.getsize(weights) if path.endswith(".xml") and os.path.isfile(weights) else 0)


def _measure(predict, images: np.ndarray, labels: np.ndarray) -> dict:
    """Top-1 accuracy over every image, and images per second over one batch after a warm-up one."""
    probabilities = predict(images)
    batch = images[:_BATCH]
    predict(batch)
    started = time.perf_counter()
    predict(batch)
    rate = len(batch) / max(time.perf_counter() - started, 1e-9)
    return {"accuracy": float(np.mean(np.argmax(probabilities, axis=1) == labels)), "images_per_second": rate,
            "probabilities": probabilities}


def quantize_and_gate(model, output_format: str, folder: str, *, calibration: np.ndarray, images: np.ndarray,
                      labels: np.ndarray, max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP) -> dict:
    """Writes the INT8 model of ``model`` (a Keras model from uint8 images to probabilities)
    into ``folder`` as ``int8_file(output_format)``, once it has passed the accuracy gate.

    Args:
        output_format: "openvino" or "tflite".
        folder: where the model goes (the float model used for the comparison goes into a
            subfolder "float", removed at the end).
        calibration: uint8 images (N x H x W x 3) the quantisation calibrates on.
        images, labels: the test split the two models are compared on.
        max_accuracy_drop: the most top-1 accuracy, in points, the INT8 model may lose.

    Returns:
        {"float": {accuracy, images_per_second, bytes}, "int8": {...}, "accuracy_drop_points",
        "max_accuracy_drop", "calibration_images", "test_images"}.

    Raises:
        ValueError: an unknown format, or no calibration or test images.
        AccuracyDropError: the INT8 model loses more than ``max_accuracy_drop`` points (it is removed).
        ExportCheckError: the converter or NNCF could not quantise the model.
    """
    if output_format not in INT8_FORMATS:
        raise ValueError(f"INT8 export is for: {', '.join(INT8_FORMATS)}. Received: format={output_format!r}")
    if not len(calibration) or not len(images):
        raise ValueError(f"quantize_and_gate needs calibration and test images. Received: {len(calibration)} "
                         f"calibration and {len(images)} test images")
    float_folder = os.path.join(folder, "float")
    os.makedirs(float_folder, exist_ok=True)
    float_path = os.path.join(float_folder, _FILES[output_format])
    path = os.path.join(folder, _FILES[output_format])
    labels = np.asarray(labels)
    try:
        try:
            _write_float(model, output_format, float_path)
            started = time.perf_counter()
            _write_int8(model, output_format, float_path, path, np.asarray(calibration, dtype=np.uint8))
        except (OSError, KeyboardInterrupt):
            raise  # (a full or read-only disk, Ctrl-C: the command's own handling)
        except Exception as error:  # the converter's or NNCF's own failure
            raise ExportCheckError(f"INT8 quantisation for {output_format} failed ({type(error).__name__}: "
                                   f"{first_line(error)}); nothing was written: export without --int8") from error
        quantize_seconds = time.perf_counter() - started
        measured = {name: _measure(_predictor(output_format, where), images, labels)
                    for name, where in (("float", float_path), ("int8", path))}
        sizes = {"float": _size(float_path), "int8": _size(path)}
    finally:
        shutil.rmtree(float_folder, ignore_errors=True)
    drop = 100 * (measured["float"]["accuracy"] - measured["int8"]["accuracy"])
    agreement = float(np.mean(measured["float"]["probabilities"].argmax(axis=1)
                              == measured["int8"]["probabilities"].argmax(axis=1)))
    record = {
        name: {"accuracy": measured[name]["accuracy"], "images_per_second": measured[name]["images_per_second"],
               "bytes": sizes[name]} for name in ("float", "int8")
    }
    record.update(accuracy_drop_points=drop, max_accuracy_drop=max_accuracy_drop, top1_agreement=agreement,
                  calibration_images=int(len(calibration)), test_images=int(len(images)),
                  quantize_seconds=quantize_seconds)
    if drop > max_accuracy_drop:
        for leftover in (path, os.path.splitext(path)[0] + ".bin"):
            if os.path.isfile(leftover):
                os.remove(leftover)
        raise AccuracyDropError(
            f"the INT8 {output_format} model loses {drop:.2f} points of top-1 accuracy on the run's {len(images)} test "
            f"images ({100 * measured['float']['accuracy']:.2f} % in float, {100 * measured['int8']['accuracy']:.2f} % "
            f"in INT8; allowed: {max_accuracy_drop:g}); nothing was written. Calibrate on more images "
            "(--calibration-images N), or allow more (--max-accuracy-drop)")
    logger.info("INT8 %s: top-1 %.4f (float %.4f, a drop of %.2f points, allowed %g), %.0f images/s (float %.0f), "
                "%.1f MB (float %.1f MB)", output_format, record["int8"]["accuracy"], record["float"]["accuracy"], drop,
                max_accuracy_drop, record["int8"]["images_per_second"], record["float"]["images_per_second"],
                sizes["int8"] / 1e6, sizes["float"] / 1e6)
    return record
