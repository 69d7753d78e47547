"""Runtimes for the frozen backbone's pass: Keras, OpenVINO, LiteRT or ONNX Runtime.

The backbone's one pass over every image is the longest stage of a cached run at 224 px,
and about half of the seed recipe's. On this project's 2-core machine OpenVINO ran it 1.14 to
1.17x as fast as Keras called batch by batch (which is how the cache runs Keras on a CPU,
``distribution.predicts_locally``) at 224 and 32 px (1.48 to 1.87x Keras's ``predict``), and
converting and checking a ResNet took 17 to 43 s; LiteRT (XNNPACK) and ONNX Runtime ran 0.93
to 1.0x Keras at 224 px and took 30 to 100 s to convert (benchmarks/README.md).
``choose_runtime`` picks one per pass:

- "keras": Keras (``features.predict_in_batches``), bit for bit what the model computes end to end;
- "openvino" (OpenVINO's CPU plugin, in float32), "tflite" (LiteRT, the ``ai-edge-litert``
  interpreter) and "onnx" (ONNX Runtime): the feature extractor converted once with
  ``keras.Model.export``, kept in the feature cache as an entry of its own, keyed like the
  features, and checked against Keras's outputs on a few of the images: the largest
  difference must stay within 1e-5 of the largest output (relative to the scale, as
  ReLU features hold many zeros), else no feature it computes is stored;
- "auto": Keras where converting cannot pay off (a pass whose expected saving at the
  measured speed-up, ``AUTO_EXPECTED_SPEEDUP``, estimated from the backbone's multiply-adds,
  is smaller than converting and checking are estimated to take; a GPU; a cluster of
  TF_CONFIG; mixed precision; a Keras backend other than TensorFlow); else OpenVINO when its
  check passes and it ran faster than Keras on the checked images, else Keras, saying why.
  The verdict is kept with the converted model, so a later run decides without converting.

Features are keyed by the runtime that computed them (``FeatureKey.runtime``); "auto" also
takes Keras's own features where the cache holds them.

Example:
    >>> choice = choose_runtime("auto", extractor, cache=cache, key=key, pending=[x_train[:100]])
    >>> choice.runtime  # 100 images: converting would take longer than it saves
    'keras'
    >>> choice = choose_runtime("openvino", extractor, cache=cache, key=key, pending=[x_train])  # converted and checked
    >>> features = predict_in_batches(choice.runner, x_train, 256)
"""

import contextlib
import hashlib
import json
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Optional

import keras
import numpy as np

from resnet_transfer.config import EXTRACT_RUNTIMES
from resnet_transfer.errors import ConfigError
from resnet_transfer.files import first_line, write_json_atomic
from resnet_transfer.model.precision import visible_gpus
from resnet_transfer.signals import native_threads_without_sigint
from resnet_transfer.training.cache_admin import converted_digest, remove_folder
from resnet_transfer.training.distribution import worker_role
from resnet_transfer.training.features import FeatureCache, FeatureKey, predict_in_batches

__all__ = ["EXTRACT_RUNTIMES", "TOLERANCE", "RuntimeChoice", "choose_runtime", "worth_converting",
           "convert_and_check", "relative_difference",
           "multiply_adds", "projected_seconds", "keyed"]

logger = logging.getLogger(__name__)

TOLERANCE = 1e-5
# What "auto" weighs, measured on this project's 2-core machine (benchmarks/README.md): against Keras called batch by
# batch, as the cache runs it, OpenVINO ran 1.14 to 1.17x at 224 and 32 px (up to 1.45x in drafts at 32 px);
# converting the feature extractor (keras.Model.export) and checking it, Keras's tracing included, took 17 to 35 s
# for ResNet-152's 58.4 M parameters at 32 px and 18 s for ResNet-50's 23.6 M at 224 px. LiteRT ran 0.93 to 1.0x
# and took 1.2 to 1.3 s per million parameters, tf2onnx longer still. "auto" expects the low end of OpenVINO's speed-up.
AUTO_RUNTIME = "openvino"
AUTO_EXPECTED_SPEEDUP = 1.15
CONVERSION_SECONDS_PER_MILLION_PARAMETERS = 0.45
# Measured with predict on 2 cores (AVX-512): ResNet-50 at 224 px 23.5e9, at 32 px 31e9; ResNet-152 at 32 px 23e9.
KERAS_MULTIPLY_ADDS_PER_CORE_SECOND = 25e9
CHECK_IMAGES = 64
CHECK_BATCH = 32
_NAMES = {"keras": "Keras", "openvino": "OpenVINO", "tflite": "LiteRT", "onnx": "ONNX Runtime"}
# The file each runtime opens (cache_admin.CONVERTED_FILES: OpenVINO's weights lie beside it) and Keras's export format.
_FILES = {"openvino": "backbone.xml", "tflite": "backbone.tflite", "onnx": "backbone.onnx"}
_FORMATS = {"openvino": "openvino", "tflite": "litert", "onnx": "onnx"}


class ConversionFailed(Exception):
    """The converter could not convert the extractor, or its runtime could not load or run the
    converted one (a conversion that fails is not kept: the next run tries again; a stored one
    that its runtime cannot load stays, and each run says so)."""


@dataclass
class RuntimeChoice:
    """The runtime of a pass and why.

    Attributes:
        runtime: "keras", "openvino", "tflite" or "onnx".
        reason: for the log.
        runner: what computes the features: the Keras extractor, or a converted backbone's runner.
        conversion_seconds: converting and checking in this process (0: reused from the cache;
            None: nothing was converted).
        check: the converted backbone's check (its entry.json "check"), if any.
    """

    runtime: str
    reason: str
    runner: object
    conversion_seconds: Optional[float] = None
    check: dict = field(default_factory=dict)


def relative_difference(features: np.ndarray, reference: np.ndarray) -> float:
    """The largest absolute difference, relative to the largest absolute reference value."""
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    return float(np.max(np.abs(features - reference))) / scale if scale > 0 else float(np.max(np.abs(features)))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _ConvertedRunner:
    """A converted extractor run batch by batch; the last batch is padded (fixed shapes)."""

    def __init__(self, output_shape: tuple, batch_size: int):
        self.output_shape, self.batch_size = output_shape, batch_size

    def predict_chunk(self, chunk: np.ndarray) -> np.ndarray:
        chunk = np.asarray(chunk, dtype="float32")
        outputs = []
        for start in range(0, len(chunk), self.batch_size):
            batch = chunk[start : start + self.batch_size]
            padding = self.batch_size - len(batch)
            if padding:
                batch = np.concatenate([batch, np.zeros((padding, *batch.shape[1:]), batch.dtype)])
            outputs.append(self._run(np.ascontiguousarray(batch))[: len(batch) - padding])
        return self._joined(outputs)

    def _joined(self, outputs: list) -> np.ndarray:
        return np.concatenate(outputs) if outputs else np.zeros((0, *self.output_shape[1:]), "float32")


class _OpenVINORunner(_ConvertedRunner):
    """OpenVINO's CPU plugin in float32 (its default is bfloat16 on CPUs that have it) and in
    its throughput mode: a queue of requests, one batch in flight per stream of cores. The
    batch dimension stays dynamic, so the last batch is not padded (at 32 px, batches of 256
    with a dynamic batch ran 431 to 441 images/s here, fixed ones 406 to 422)."""

    def __init__(self, path: str, output_shape: tuple, batch_size: int):
        super().__init__(output_shape, batch_size)
        import openvino

        with native_threads_without_sigint():
            self._compiled = openvino.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                                         "PERFORMANCE_HINT": "THROUGHPUT",
                                                                         "INFERENCE_NUM_THREADS": _cores()})
            self._queue = openvino.AsyncInferQueue(self._compiled)

    def predict_chunk(self, chunk: np.ndarray) -> np.ndarray:
        chunk, outputs = np.asarray(chunk, dtype="float32"), []

        def finished(request, index):
            outputs[index] = request.get_output_tensor(0).data.copy()

        self._queue.set_callback(finished)
        for start in range(0, len(chunk), self.batch_size):
            outputs.append(None)
            with native_threads_without_sigint():  # Ctrl-C is raised between batches
                self._queue.start_async({0: np.ascontiguousarray(chunk[start : start + self.batch_size])},
                                        len(outputs) - 1)
        with native_threads_without_sigint():
            self._queue.wait_all()
        return self._joined(outputs)


class _LiteRTRunner(_ConvertedRunner):
    def __init__(self, path: str, output_shape: tuple, batch_size: int):
        super().__init__(output_shape, batch_size)
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=path, num_threads=_cores())
        details = self._interpreter.get_input_details()[0]
        self._input, self._output = details["index"], self._interpreter.get_output_details()[0]["index"]
        self._interpreter.resize_tensor_input(self._input, [batch_size, *details["shape"][1:]])
        self._interpreter.allocate_tensors()

    def _run(self, batch: np.ndarray) -> np.ndarray:
        self._interpreter.set_tensor(self._input, batch)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output).copy()


class _OnnxRunner(_ConvertedRunner):
    def __init__(self, path: str, output_shape: tuple, batch_size: int):
        super().__init__(output_shape, batch_size)
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = _cores()
        self._session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: batch})[0]


_RUNNERS = {"openvino": _OpenVINORunner, "tflite": _LiteRTRunner, "onnx": _OnnxRunner}


def _cause(error: BaseException) -> str:
    """A runtime's error in one line: OpenVINO's begin with "Exception from <source>:<line>:"
    lines, and the cause is the last line after them."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    causes = [line for line in lines if not line.startswith("Exception from ")]
    return f"{type(error).__name__}: {causes[-1] if causes else first_line(error)}"


def _load(runtime: str, path: str, output_shape: tuple, batch_size: int) -> _ConvertedRunner:
    """The runner of a converted backbone; ConversionFailed where its runtime cannot load it."""
    try:
        return _RUNNERS[runtime](path, output_shape, batch_size)
    except (OSError, KeyboardInterrupt):
        raise
    except Exception as error:  # the runtime's own (OpenVINO: RuntimeError; a CPU it does not support, ...)
        raise ConversionFailed(f"{_NAMES[runtime]} could not load the converted backbone ({_cause(error)})") from error


def _missing_package(runtime: str) -> Optional[str]:
    """What to install for ``runtime``, or None when it is there."""
    modules = {"openvino": ("openvino", "pip install openvino"),
               "tflite": ("ai_edge_litert", "pip install ai-edge-litert"),
               "onnx": ("onnxruntime", "pip install 'resnet-transfer[export]'")}
    needed = [modules[runtime]] + ([("tf2onnx", "pip install 'resnet-transfer[export]'")] if runtime == "onnx" else [])
    for module, command in needed:
        try:
            __import__(module)
        except ImportError:
            return f"{_NAMES[runtime]} needs the Python package {module!r}, which is not installed ({command})"
    return None


def conversion_key(key: FeatureKey, runtime: str) -> dict:
    """What a converted extractor depends on: the features' key but the images, the stored
    dtype and the runtime that computes them; and the runtime it is converted for."""
    values = asdict(key)
    for name in ("images", "dtype", "runtime"):
        values.pop(name, None)
    return {**values, "converted_for": runtime}


def _digest(conversion: dict) -> str:
    return hashlib.sha256(json.dumps(conversion, sort_keys=True).encode()).hexdigest()[:32]


def _read_conversion(folder: str, key: dict, runtime: str) -> Optional[dict]:
    """A stored conversion's entry.json, or None (absent, or damaged: then moved out of the way)."""
    if not os.path.isdir(folder):
        return None
    try:
        with open(os.path.join(folder, "entry.json"), encoding="utf-8") as handle:
            record = json.load(handle)
        if (isinstance(record, dict) and record.get("key") == json.loads(json.dumps(key)) and isinstance(record.get("check"), dict)
                and converted_digest(folder, _FILES[runtime]) == record.get("sha256")):
            try:
                os.utime(folder)  # its last use, for `resnet-transfer cache prune`
            except OSError:
                pass
            return record
        problem = "its record or its file does not match"
    except (OSError, ValueError, UnicodeDecodeError) as error:
        problem = f"it cannot be read ({error})"
    logger.warning("converted backbone %s is discarded and converted again: %s", folder, problem)
    try:
        remove_folder(folder)
    except OSError:
        pass
    return None


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
                      images: np.ndarray) -> dict:
    """Converts the extractor for ``runtime``, checks it on up to 64 of ``images`` beside Keras,
    and stores both in the cache entry of ``conversion`` (atomically, as feature entries are).

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
        path = os.path.join(partial, _FILES[runtime])
        try:
            with _quiet_converter(), native_threads_without_sigint():
                extractor.export(path, format=_FORMATS[runtime], verbose=False)
        except (OSError, KeyboardInterrupt):
            raise  # a full or read-only disk, Ctrl-C: the run's own handling
        except Exception as error:  # the converter's own failure (an operation it cannot convert, ...)
            raise ConversionFailed(f"converting the backbone for {_NAMES[runtime]} failed "
                                   f"({type(error).__name__}: {first_line(error)})") from error
        converted_seconds = time.perf_counter() - exporting
        runner = _load(runtime, path, tuple(extractor.output_shape), CHECK_BATCH)
        try:
            outputs, runtime_rate = _time(runner.predict_chunk, sample)
        except (OSError, KeyboardInterrupt):
            raise
        except Exception as error:  # the runtime's own failure on this machine
            raise ConversionFailed(f"{_NAMES[runtime]} could not run the converted backbone "
                                   f"({_cause(error)})") from error
        difference = relative_difference(outputs, reference)
        check = {"images": len(sample), "max_relative_difference": difference, "tolerance": TOLERANCE,
                 "keras_images_per_second": keras_rate, "runtime_images_per_second": runtime_rate,
                 "passed": bool(difference <= TOLERANCE), "convert_seconds": converted_seconds,
                 "check_seconds": time.perf_counter() - started - converted_seconds, "cores": _cores()}
        record = {"key": conversion, "file": _FILES[runtime], "sha256": converted_digest(partial, _FILES[runtime]),
                  "check": check, "created": time.time()}
        write_json_atomic(os.path.join(partial, "entry.json"), record)

    record = None
    logger.info("converting the frozen backbone for %s (once; kept in %s)", _NAMES[runtime],
                os.path.join(cache.directory, _digest(conversion)))
    cache.store_folder(_digest(conversion), fill)
    return record


def _describe(runtime: str, check: dict) -> str:
    speed = check["runtime_images_per_second"] / check["keras_images_per_second"]
    return (f"{_NAMES[runtime]} ran {speed:.2f}x Keras's speed on {check['images']} checked images, largest difference "
            f"{check['max_relative_difference']:.1e} of the scale (tolerance {check['tolerance']:.0e})")


def multiply_adds(model: keras.Model) -> int:
    """Multiply-adds of one image through ``model``'s convolutions and dense layers (nested
    models included), from the layers' kernels and output shapes."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += multiply_adds(layer)
        elif isinstance(layer, keras.layers.Conv2D):
            total += int(np.prod(layer.output.shape[1:-1])) * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return total


def projected_seconds(extractor: keras.Model, count: int) -> float:
    """Keras's pass over ``count`` images, estimated from the extractor's multiply-adds at
    the rate Keras's ``predict`` reached per core on this project's machine."""
    return multiply_adds(extractor) * count / (KERAS_MULTIPLY_ADDS_PER_CORE_SECOND * _cores())


def worth_converting(extractor: keras.Model, count: int) -> tuple:
    """Whether converting the extractor for OpenVINO is expected to pay off over a pass of
    ``count`` images, and why: an expected speed-up over 1 (``AUTO_EXPECTED_SPEEDUP``), and the
    pass's expected saving larger than converting (estimated from the parameters) and checking
    (the check's images through Keras and OpenVINO) are estimated to take."""
    name = _NAMES[AUTO_RUNTIME]
    if AUTO_EXPECTED_SPEEDUP <= 1:
        return False, (f"{name} ran no faster than Keras where it was measured; --extract-runtime {AUTO_RUNTIME} "
                       "converts all the same")
    projected = projected_seconds(extractor, count)
    saving = projected * (1 - 1 / AUTO_EXPECTED_SPEEDUP)
    checking = projected_seconds(extractor, CHECK_IMAGES + CHECK_BATCH) * (1 + 1 / AUTO_EXPECTED_SPEEDUP)
    conversion = CONVERSION_SECONDS_PER_MILLION_PARAMETERS * extractor.count_params() / 1e6 + checking
    if saving <= conversion:
        return False, (f"the pass is estimated at {projected:.0f} s in Keras; {name} would save about {saving:.0f} s "
                       f"of it, less than converting and checking the backbone take (about {conversion:.0f} s)")
    return True, f"the pass is estimated at {projected:.0f} s in Keras; {name} would save about {saving:.0f} s"


def _keras(extractor: keras.Model, reason: str, **values) -> RuntimeChoice:
    return RuntimeChoice("keras", reason, extractor, **values)


def pass_batch_size(runtime: str, extractor: keras.Model) -> int:
    """Images per call of a converted backbone in a pass: 32 (LiteRT, ONNX Runtime); for
    OpenVINO about 256 images' worth of 32-px pixels (256 at 32 px, 8 at 224 px; at 32 px
    batches of 256 ran 406 to 441 images/s here against 395 to 399 for batches of 32)."""
    if runtime != "openvino":
        return CHECK_BATCH
    height, width = extractor.input_shape[1:3]
    return max(8, min(256, 256 * 32 * 32 // (int(height) * int(width))))


def choose_runtime(setting: str, extractor: keras.Model, *, cache: FeatureCache, key: FeatureKey, pending: list,
                   batch_size: Optional[int] = None) -> RuntimeChoice:
    """The runtime for the backbone's pass over ``pending`` (arrays of images to compute).

    Args:
        setting: "auto", "keras", "openvino", "tflite" or "onnx" (``--extract-runtime``).
        key: a feature key of the pass (its runtime field is ignored).
        batch_size: images per call of a converted backbone (None: ``pass_batch_size``).

    Raises:
        ConfigError: an explicit "openvino", "tflite" or "onnx" that cannot be used here (a package missing,
            a Keras backend other than TensorFlow), or whose check failed.
    """
    if setting not in EXTRACT_RUNTIMES:
        raise ConfigError(f"extract_runtime must be one of: {', '.join(EXTRACT_RUNTIMES)}. Received: {setting!r}")
    if setting == "keras":
        return _keras(extractor, "--extract-runtime keras")
    if not any(len(images) for images in pending):
        return _keras(extractor, "every feature is in the cache: nothing to compute")
    runtime = AUTO_RUNTIME if setting == "auto" else setting
    problem = _missing_package(runtime)
    if problem is None and keras.backend.backend() != "tensorflow":
        problem = f"converting needs the TensorFlow backend of Keras (this is {keras.backend.backend()!r})"
    if setting == "auto":
        if visible_gpus():
            return _keras(extractor, "auto: Keras runs the backbone on the GPU; the converted runtimes here are for CPUs")
        if keras.config.dtype_policy().compute_dtype != "float32":
            return _keras(extractor, "auto: --mixed-precision computes the backbone in 16 bits in Keras; the converted "
                                     "runtimes take a float32 backbone")
        if worker_role() is not None:
            return _keras(extractor, "auto: a cluster's workers extract with Keras, so that every worker stores the "
                                     "same runtime's features")
        if problem is not None:
            return _keras(extractor, f"auto: {problem}")
    elif problem is not None:
        raise ConfigError(f"--extract-runtime {setting}: {problem}; or choose --extract-runtime keras")
    conversion = conversion_key(key, runtime)
    folder = os.path.join(cache.directory, _digest(conversion))
    record, seconds = _read_conversion(folder, conversion, runtime), 0.0
    if setting == "auto" and record is None:  # a stored one costs nothing more: its verdict decides
        worth, why = worth_converting(extractor, sum(len(images) for images in pending))
        if not worth:
            return _keras(extractor, f"auto: {why}")
    if record is None:
        started = time.perf_counter()
        try:
            record = convert_and_check(runtime, extractor, conversion=conversion, cache=cache,
                                       images=next(images for images in pending if len(images)))
        except ConversionFailed as error:
            if setting != "auto":
                raise ConfigError(f"--extract-runtime {setting}: {error}; use --extract-runtime keras") from error
            logger.warning("auto: %s: Keras computes the features", error)
            return _keras(extractor, f"auto: {error}")
        seconds = time.perf_counter() - started
    check = record["check"]
    if not check["passed"]:
        message = (f"{_NAMES[runtime]}'s features differ from Keras's by {check['max_relative_difference']:.1e} of the "
                   f"scale, more than the tolerance {check['tolerance']:.0e}")
        if setting != "auto":
            raise ConfigError(f"--extract-runtime {setting}: {message}; use --extract-runtime keras")
        logger.warning("auto: %s: Keras computes the features", message)
        return _keras(extractor, f"auto: {message}", conversion_seconds=seconds, check=check)
    if setting == "auto" and check["runtime_images_per_second"] <= check["keras_images_per_second"]:
        return _keras(extractor, f"auto: {_describe(runtime, check)}: Keras is as fast", conversion_seconds=seconds,
                      check=check)
    try:
        runner = _load(runtime, os.path.join(folder, _FILES[runtime]), tuple(extractor.output_shape),
                       batch_size or pass_batch_size(runtime, extractor))
    except ConversionFailed as error:
        if setting != "auto":
            raise ConfigError(f"--extract-runtime {setting}: {error}; use --extract-runtime keras") from error
        logger.warning("auto: %s: Keras computes the features", error)
        return _keras(extractor, f"auto: {error}", conversion_seconds=seconds, check=check)
    reason = ("reused from the cache: " if seconds == 0 else "") + _describe(runtime, check)
    return RuntimeChoice(runtime, f"{setting}: {reason}", runner, conversion_seconds=seconds, check=check)


def keyed(key: FeatureKey, runtime: str) -> FeatureKey:
    """``key`` for features computed by ``runtime``."""
    return replace(key, runtime=runtime)
