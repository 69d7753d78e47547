"""Converting the frozen backbone for another runtime, and checking it: ``convert_and_check``
exports the feature extractor with ``keras.Model.export`` (in the runtime's format), loads it
in its runtime (``load_runner``: ``openvino``, ``litert`` or ``onnx``), runs it beside Keras on
a few of the images, and keeps both the converted model and the check's verdict in the feature
cache as an entry of its own (``cache.converted``). The largest difference must stay within
``TOLERANCE`` (1e-5) of the largest output (``relative_difference``: relative to the scale, as
ReLU features hold many zeros), else no feature it computes is stored.

Example:
    >>> record = convert_and_check("openvino", extractor, conversion=conversion_key(key, "openvino"), cache=cache,
    ...                            images=x_train)
    >>> record["check"]["passed"], record["check"]["max_relative_difference"]
"""

import contextlib
import logging
import os
import time
import warnings
from typing import Optional

import keras
import numpy as np

from resnet_transfer.cache.converted import RUNTIME_FILES, converted_digest
from resnet_transfer.cache.extraction import predict_in_batches
from resnet_transfer.cache.keys import conversion_digest
from resnet_transfer.cache.store import FeatureCache
from resnet_transfer.files import first_line, write_json_atomic
from resnet_transfer.quantization import quantize_openvino
from resnet_transfer.runtimes.litert import LiteRTRunner
from resnet_transfer.runtimes.onnx import OnnxRunner
from resnet_transfer.runtimes.openvino import OpenVINORunner
from resnet_transfer.runtimes.runner import ConvertedRunner, cores
from resnet_transfer.signals import native_threads_without_sigint

__all__ = ["TOLERANCE", "CHECK_IMAGES", "CHECK_BATCH", "NAMES", "ConversionFailed", "relative_difference",
           "load_runner", "convert_and_check"]

logger = logging.getLogger(__name__)

TOLERANCE = 1e-5
CHECK_IMAGES = 64
CHECK_BATCH = 32
NAMES = {"keras": "Keras", "openvino": "OpenVINO", "tflite": "LiteRT", "onnx": "ONNX Runtime",
         "openvino-int8": "OpenVINO INT8"}
# Keras's export format for each runtime (the file it writes: cache.converted.RUNTIME_FILES).
_FORMATS = {"openvino": "openvino", "tflite": "litert", "onnx": "onnx", "openvino-int8": "openvino"}


class ConversionFailed(Exception):
    """The converter could not convert the extractor, or its runtime could not load or run the
    converted one (a conversion that fails is not kept: the next run tries again; a stored one
    that its runtime cannot load stays, and each run says so)."""


def relative_difference(features: np.ndarray, reference: np.ndarray) -> float:
    """The largest absolute difference, relative to the largest absolute reference value."""
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    return float(np.max(np.abs(features - reference))) / scale if scale > 0 else float(np.max(np.abs(features)))


_RUNNERS = {"openvino": OpenVINORunner, "tflite": LiteRTRunner, "onnx": OnnxRunner, "openvino-int8": OpenVINORunner}


def _cause(error: BaseException) -> str:
    """A runtime's error in one line: OpenVINO's begin with "Exception from <source>:<line>:"
    lines, and the cause is the last line after them."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    causes = [line for line in lines if not line.startswith("Exception from ")]
    return f"{type(error).__name__}: {causes[-1] if causes else first_line(error)}"


def load_runner(runtime: str, path: str, output_shape: tuple, batch_size: int) -> ConvertedRunner:
    """The runner of a converted backbone; ConversionFailed where its runtime cannot load it."""
    try:
        return _RUNNERS[runtime](path, output_shape, batch_size)
    except (OSError, KeyboardInterrupt):
        raise
    except Exception as error:  # the runtime's own (OpenVINO: RuntimeError; a CPU it does not support, ...)
        raise ConversionFailed(f"{NAMES[runtime]} could not load the converted backbone ({_cause(error)})") from error


@contextlib.contextmanager
def _quiet_converter():
    """TensorFlow's converter logs its temporary SavedModel ("Assets written to: /tmp/..."); kept off the log."""
    loggers = [logging.getLogger(name) for name in ("tensorflow", "absl")]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():  # Keras's tf2onnx shim tests for np.object, which numpy 2 deprecates
            warnings.filterwarnings("ignore", message=".*np\\.object", category=FutureWarning)
            yield
    finally:
        for each, level in zip(loggers, levels):
            each.setLevel(level)


def _time(predict, images: np.ndarray) -> tuple:
    """(outputs, images per second) of ``predict`` over ``images``, after one warm-up batch."""
    predict(images[:CHECK_BATCH])
    started = time.perf_counter()
    outputs = predict(images)
    return outputs, len(images) / max(time.perf_counter() - started, 1e-9)


def convert_and_check(runtime: str, extractor: keras.Model, *, conversion: dict, cache: FeatureCache,
                      images: np.ndarray, calibration: Optional[np.ndarray] = None) -> dict:
    """Converts the extractor for ``runtime``, checks it on up to 64 of ``images`` beside Keras,
    and stores both in the cache entry of ``conversion`` (atomically, as feature entries are).

    "openvino-int8" (``--extract-runtime openvino-int8``) is OpenVINO's conversion quantised to
    INT8 by NNCF (``quantization.quantize_openvino``), calibrated on ``calibration`` (the run's
    training images). Its check records how far its features are from Keras's and always
    passes: INT8 features are not within 1e-5, and the run measures what that costs (its
    validation accuracy on Keras's features beside INT8's: ``fitting.fit_on_features``).

    Returns:
        The entry's record (its entry.json).

    Raises:
        ConversionFailed: the converter could not convert the extractor, or the runtime could not
            load or run it.
    """
    def fill(partial: str) -> None:
        nonlocal record
        started = time.perf_counter()
        # Keras's reference first: it also calls the extractor, which Keras's ONNX export requires of a model.
        sample = np.asarray(images[:CHECK_IMAGES], dtype="float32")
        reference, keras_rate = _time(lambda batch: predict_in_batches(extractor, batch, CHECK_BATCH), sample)
        exporting = time.perf_counter()
        path = os.path.join(partial, RUNTIME_FILES[runtime])
        try:
            with _quiet_converter(), native_threads_without_sigint():
                extractor.export(path, format=_FORMATS[runtime], verbose=False)
            if runtime == "openvino-int8":
                quantized = os.path.join(partial, "int8.xml")
                quantize_openvino(path, quantized, np.asarray(calibration if calibration is not None else sample,
                                                              dtype="float32"))
                for extension in (".xml", ".bin"):
                    os.replace(os.path.splitext(quantized)[0] + extension, os.path.splitext(path)[0] + extension)
        except (OSError, KeyboardInterrupt):
            raise  # a full or read-only disk, Ctrl-C: the run's own handling
        except Exception as error:  # the converter's own failure (an operation it cannot convert, ...)
            raise ConversionFailed(f"converting the backbone for {NAMES[runtime]} failed "
                                   f"({type(error).__name__}: {first_line(error)})") from error
        converted_seconds = time.perf_counter() - exporting
        runner = load_runner(runtime, path, tuple(extractor.output_shape), CHECK_BATCH)
        try:
            outputs, runtime_rate = _time(runner.predict_chunk, sample)
        except (OSError, KeyboardInterrupt):
            raise
        except Exception as error:  # the runtime's own failure on this machine
            raise ConversionFailed(f"{NAMES[runtime]} could not run the converted backbone "
                                   f"({_cause(error)})") from error
        difference = relative_difference(outputs, reference)
        int8 = runtime == "openvino-int8"
        check = {"images": len(sample), "max_relative_difference": difference, "tolerance": None if int8 else TOLERANCE,
                 "keras_images_per_second": keras_rate, "runtime_images_per_second": runtime_rate,
                 "passed": True if int8 else bool(difference <= TOLERANCE), "convert_seconds": converted_seconds,
                 "check_seconds": time.perf_counter() - started - converted_seconds, "cores": cores(),
                 "parameters": int(extractor.count_params())}
        record = {"key": conversion, "file": RUNTIME_FILES[runtime],
                  "sha256": converted_digest(partial, RUNTIME_FILES[runtime]), "check": check, "created": time.time()}
        write_json_atomic(os.path.join(partial, "entry.json"), record)

    record = None
    logger.info("converting the frozen backbone for %s (once; kept in %s)", NAMES[runtime],
                os.path.join(cache.directory, conversion_digest(conversion)))
    cache.store_folder(conversion_digest(conversion), fill)
    return record
