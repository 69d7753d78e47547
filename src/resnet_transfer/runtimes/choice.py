"""Choosing the runtime of the frozen backbone's pass: Keras, OpenVINO, LiteRT or ONNX Runtime.

The backbone's one pass over every image is the longest stage of a cached run at 224 px,
and about half of the seed recipe's. On this project's 2-core machine OpenVINO ran it 1.14 to
1.17x as fast as Keras called batch by batch (which is how the cache runs Keras on a CPU,
``inference.predicts_locally``) at 224 and 32 px (1.48 to 1.87x Keras's ``predict``), and
converting and checking a ResNet took 17 to 43 s; LiteRT (XNNPACK) and ONNX Runtime ran 0.93
to 1.0x Keras at 224 px and took 30 to 100 s to convert (benchmarks/README.md).
``choose_runtime`` picks one per pass:

- "keras": Keras (``cache.extraction.predict_in_batches``), bit for bit what the model computes end to end;
- "openvino" (OpenVINO's CPU plugin, in float32), "tflite" (LiteRT, the ``ai-edge-litert``
  interpreter) and "onnx" (ONNX Runtime): the feature extractor converted once with
  ``keras.Model.export``, kept in the feature cache as an entry of its own, keyed like the
  features, and checked against Keras's outputs on a few of the images: the largest
  difference must stay within 1e-5 of the largest output (relative to the scale, as
  ReLU features hold many zeros), else no feature it computes is stored;
- "auto": Keras where converting cannot pay off, decided from what was measured on the
  user's machine and nowhere else (``worth_converting``): Keras's speed, timed on a batch of
  the pass's first images, and OpenVINO's speed-up and the cost of converting and checking,
  from the checks of backbones converted before in the same cache on a machine with as many
  cores (before any, the first conversion is the measurement, tried for a long pass); also
  Keras on a GPU, on a cluster of TF_CONFIG, with mixed precision or another Keras backend.
  Else OpenVINO when its check passes and it ran faster than Keras on the checked images,
  else Keras, saying why. The verdict is kept with the converted model, so a later run
  decides without converting.

Features are keyed by the runtime that computed them (``FeatureKey.runtime``); "auto" also
takes Keras's own features where the cache holds them.

Example:
    >>> choice = choose_runtime("auto", extractor, cache=cache, key=key, pending=[x_train[:100]])
    >>> choice.runtime  # 100 images: converting would take longer than it saves
    'keras'
    >>> choice = choose_runtime("openvino", extractor, cache=cache, key=key, pending=[x_train])  # converted and checked
    >>> features = predict_in_batches(choice.runner, x_train, 256)
"""

import logging
import os
import time
from dataclasses import dataclass, field, replace
from typing import Optional

import keras
import numpy as np

from resnet_transfer.cache.converted import RUNTIME_FILES, past_checks, read_conversion
from resnet_transfer.cache.extraction import predict_in_batches
from resnet_transfer.cache.keys import FeatureKey, conversion_digest, conversion_key, fingerprint_images
from resnet_transfer.cache.store import FeatureCache
from resnet_transfer.config import EXTRACT_RUNTIMES
from resnet_transfer.errors import ConfigError
from resnet_transfer.model.precision import visible_gpus
from resnet_transfer.runtimes.conversion import (
    CHECK_BATCH, NAMES, ConversionFailed, convert_and_check, load_runner,
)
from resnet_transfer.runtimes.runner import cores
from resnet_transfer.training.distribution import worker_role

__all__ = ["EXTRACT_RUNTIMES", "INT8_CALIBRATION_IMAGES", "RuntimeChoice", "choose_runtime", "int8_calibration",
           "int8_runtime_key", "keras_seconds", "keyed", "pass_batch_size", "worth_converting"]

logger = logging.getLogger(__name__)

AUTO_RUNTIME = "openvino"
INT8_CALIBRATION_IMAGES = 300  # NNCF's default subset size, as export --int8's default
# The one figure "auto" assumes, a policy rather than a measurement: before anything was measured on this
# machine, converting (itself the measurement) is tried only for a Keras pass measured to take longer than this.
FIRST_MEASUREMENT_AFTER_SECONDS = 120.0


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


def _missing_package(runtime: str) -> Optional[str]:
    """What to install for ``runtime``, or None when it is there."""
    modules = {"openvino": ("openvino", "pip install openvino"), "openvino-int8": ("nncf", "pip install nncf openvino"),
               "tflite": ("ai_edge_litert", "pip install ai-edge-litert"),
               "onnx": ("onnxruntime", "pip install 'resnet-transfer[export]'")}
    needed = [modules[runtime]] + ([("tf2onnx", "pip install 'resnet-transfer[export]'")] if runtime == "onnx" else [])
    needed += [modules["openvino"]] if runtime == "openvino-int8" else []
    for module, command in needed:
        try:
            __import__(module)
        except ImportError:
            return f"{NAMES[runtime]} needs the Python package {module!r}, which is not installed ({command})"
    return None


def _describe(runtime: str, check: dict) -> str:
    speed = check["runtime_images_per_second"] / check["keras_images_per_second"]
    tolerance = "INT8: no tolerance" if check["tolerance"] is None else f"tolerance {check['tolerance']:.0e}"
    return (f"{NAMES[runtime]} ran {speed:.2f}x Keras's speed on {check['images']} checked images, largest difference "
            f"{check['max_relative_difference']:.1e} of the scale ({tolerance})")


def keras_seconds(extractor: keras.Model, pending: list) -> float:
    """Keras's pass over ``pending``, projected from a batch of its first images timed here,
    after a warm-up call (which traces what the pass then reuses)."""
    sample = np.asarray(next(images for images in pending if len(images))[:CHECK_BATCH], dtype="float32")
    predict_in_batches(extractor, sample[:1], CHECK_BATCH)
    started = time.perf_counter()
    predict_in_batches(extractor, sample, CHECK_BATCH)
    rate = len(sample) / max(time.perf_counter() - started, 1e-9)
    return sum(len(images) for images in pending) / rate


def worth_converting(extractor: keras.Model, pending: list, *, cache: FeatureCache) -> tuple:
    """Whether converting the extractor for OpenVINO is expected to pay off over the pass of
    ``pending``, and why, from what was measured on this machine alone: Keras's speed, timed
    now (``keras_seconds``), and OpenVINO's speed-up and the cost of converting and checking
    per million parameters, from the checks of the backbones converted before in this cache
    on a machine with as many cores (``cache.converted.past_checks``; the newest decides).
    With none yet, the first conversion is the measurement, tried for a pass longer than
    ``FIRST_MEASUREMENT_AFTER_SECONDS``."""
    name, projected = NAMES[AUTO_RUNTIME], keras_seconds(extractor, pending)
    checks = [check for check in past_checks(cache.directory, AUTO_RUNTIME, cores=cores())
              if all(isinstance(check.get(field), (int, float)) and check[field] > 0 for field in
                     ("keras_images_per_second", "runtime_images_per_second", "convert_seconds", "parameters"))]
    if not checks:
        if projected <= FIRST_MEASUREMENT_AFTER_SECONDS:
            return False, (f"the pass is measured at about {projected:.0f} s in Keras here, and {name} has not been "
                           f"measured on this machine yet: tried for passes over {FIRST_MEASUREMENT_AFTER_SECONDS:.0f} s "
                           f"(--extract-runtime {AUTO_RUNTIME} measures it now)")
        return True, (f"the pass is measured at about {projected:.0f} s in Keras here; {name} has not been measured on "
                      "this machine yet: converting measures it")
    last = checks[0]
    speedup = last["runtime_images_per_second"] / last["keras_images_per_second"]
    if speedup <= 1:
        return False, (f"{name} ran {speedup:.2f}x Keras's speed when last measured here; --extract-runtime "
                       f"{AUTO_RUNTIME} converts all the same")
    saving = projected * (1 - 1 / speedup)
    cost = (last["convert_seconds"] + last.get("check_seconds", 0)) / last["parameters"] * extractor.count_params()
    if saving <= cost:
        return False, (f"the pass is measured at about {projected:.0f} s in Keras here; {name} ({speedup:.2f}x when "
                       f"last measured here) would save about {saving:.0f} s of it, less than converting and checking "
                       f"the backbone take (about {cost:.0f} s)")
    return True, (f"the pass is measured at about {projected:.0f} s in Keras here; {name} ({speedup:.2f}x when last "
                  f"measured here) would save about {saving:.0f} s")


def _keras(extractor: keras.Model, reason: str, **values) -> RuntimeChoice:
    return RuntimeChoice("keras", reason, extractor, **values)


def pass_batch_size(runtime: str, extractor: keras.Model) -> int:
    """Images per call of a converted backbone in a pass: 32 (LiteRT, ONNX Runtime); for
    OpenVINO about 256 images' worth of 32-px pixels (256 at 32 px, 8 at 224 px; at 32 px
    batches of 256 ran 406 to 441 images/s here against 395 to 399 for batches of 32)."""
    if runtime not in ("openvino", "openvino-int8"):
        return CHECK_BATCH
    height, width = extractor.input_shape[1:3]
    return max(8, min(256, 256 * 32 * 32 // (int(height) * int(width))))


def choose_runtime(setting: str, extractor: keras.Model, *, cache: FeatureCache, key: FeatureKey, pending: list,
                   batch_size: Optional[int] = None, calibration: Optional[np.ndarray] = None) -> RuntimeChoice:
    """The runtime for the backbone's pass over ``pending`` (arrays of images to compute).

    Args:
        setting: "auto", "keras", "openvino", "tflite", "onnx" or "openvino-int8" (``--extract-runtime``;
            "auto" never chooses "openvino-int8").
        key: a feature key of the pass (its runtime field is ignored).
        batch_size: images per call of a converted backbone (None: ``pass_batch_size``).
        calibration: for "openvino-int8", the images the quantisation calibrates on
            (``int8_calibration``); they are part of the converted backbone's key.

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
    if runtime == "openvino-int8":
        calibration = calibration if calibration is not None else int8_calibration(
            next(images for images in pending if len(images)))
        conversion["calibration"] = fingerprint_images(calibration)
    folder = os.path.join(cache.directory, conversion_digest(conversion))
    record, seconds = read_conversion(folder, conversion, runtime), 0.0
    if setting == "auto" and record is None:  # a stored one costs nothing more: its verdict decides
        worth, why = worth_converting(extractor, pending, cache=cache)
        if not worth:
            return _keras(extractor, f"auto: {why}")
    if record is None:
        started = time.perf_counter()
        try:
            record = convert_and_check(runtime, extractor, conversion=conversion, cache=cache,
                                       images=next(images for images in pending if len(images)), calibration=calibration)
        except ConversionFailed as error:
            if setting != "auto":
                raise ConfigError(f"--extract-runtime {setting}: {error}; use --extract-runtime keras") from error
            logger.warning("auto: %s: Keras computes the features", error)
            return _keras(extractor, f"auto: {error}")
        seconds = time.perf_counter() - started
    check = record["check"]
    if not check["passed"]:
        message = (f"{NAMES[runtime]}'s features differ from Keras's by {check['max_relative_difference']:.1e} of the "
                   f"scale, more than the tolerance {check['tolerance']:.0e}")
        if setting != "auto":
            raise ConfigError(f"--extract-runtime {setting}: {message}; use --extract-runtime keras")
        logger.warning("auto: %s: Keras computes the features", message)
        return _keras(extractor, f"auto: {message}", conversion_seconds=seconds, check=check)
    if setting == "auto" and check["runtime_images_per_second"] <= check["keras_images_per_second"]:
        return _keras(extractor, f"auto: {_describe(runtime, check)}: Keras is as fast", conversion_seconds=seconds,
                      check=check)
    try:
        runner = load_runner(runtime, os.path.join(folder, RUNTIME_FILES[runtime]), tuple(extractor.output_shape),
                             batch_size or pass_batch_size(runtime, extractor))
    except ConversionFailed as error:
        if setting != "auto":
            raise ConfigError(f"--extract-runtime {setting}: {error}; use --extract-runtime keras") from error
        logger.warning("auto: %s: Keras computes the features", error)
        return _keras(extractor, f"auto: {error}", conversion_seconds=seconds, check=check)
    reason = ("reused from the cache: " if seconds == 0 else "") + _describe(runtime, check)
    return RuntimeChoice(runtime, f"{setting}: {reason}", runner, conversion_seconds=seconds, check=check)


def int8_calibration(images: np.ndarray) -> np.ndarray:
    """The images ``--extract-runtime openvino-int8`` calibrates on: ``INT8_CALIBRATION_IMAGES`` of
    ``images`` (the run's training images), evenly spaced, as float32 pixels."""
    chosen = np.unique(np.linspace(0, len(images) - 1, min(INT8_CALIBRATION_IMAGES, len(images))).astype(np.int64))
    return np.asarray(images[chosen], dtype="float32")


def int8_runtime_key(calibration: np.ndarray) -> str:
    """The runtime field of the feature keys of an INT8 pass: "openvino-int8" and its calibration
    images' fingerprint, so runs calibrated on other images never share INT8 features."""
    return f"openvino-int8:{fingerprint_images(calibration)[:16]}"


def keyed(key: FeatureKey, runtime: str) -> FeatureKey:
    """``key`` for features computed by ``runtime``."""
    return replace(key, runtime=runtime)
