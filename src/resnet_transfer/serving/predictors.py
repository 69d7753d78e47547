"""What computes the probabilities behind the service: the run's Keras model, the same model
converted to OpenVINO, or the run's INT8 OpenVINO export; and "auto", which times them.

- "keras": ``model.keras`` itself, called as ``resnet-transfer predict`` calls it
  (``inference.predict_probabilities``).
- "openvino": the whole model (preprocessing, backbone and head) converted at start-up
  with Keras's own ``Model.export(format="openvino")`` (what ``runtimes.conversion`` and
  ``export`` use), into a temporary folder that is removed once OpenVINO has compiled it,
  run by OpenVINO's CPU plugin in float32. It is checked beside Keras on ``CHECK_IMAGES``
  seeded random images: the largest difference in probability must be at most
  ``TOLERANCE`` (export's tolerance), else it is refused. Compiled with the "LATENCY"
  hint: the service runs one batch at a time from one thread, and the "THROUGHPUT" hint
  of the feature cache's runner (``runtimes.openvino``) would give each batch only its share
  of the cores (at 32 px on 2 cores, batches of 16: 382 against 330 images/s).
- "int8": ``RUN/export/openvino-int8/model.xml`` as ``export --int8`` writes it (uint8
  images in, probabilities out, ``labels.txt`` beside it), read with
  ``openvino.Core().read_model``. Its accuracy was gated when it was exported; here its
  labels and input size are checked against the run, and its largest difference from
  Keras on the check images is reported, not bounded (quantisation moves probabilities).
- "auto": "keras" and "openvino" (where it loads and passes its check) are timed on one
  batch of ``max_batch`` random images (after one warm-up batch; the median of
  ``TIMED_BATCHES``), and the faster is served; ``Predictor.reason`` says what was
  measured. "int8" is never chosen by itself: it loses accuracy, so it is served only
  when asked for.

Example:
    >>> predictor = load_predictor(Run("runs/quick"), model, runtime="auto", max_batch=16)
    >>> predictor.runtime, predictor.reason
    ('openvino', 'auto: openvino 381 images/s, keras 266 images/s ...')
    >>> probabilities = predictor.predict(images)  # uint8 (N, H, W, 3)
"""

import logging
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from resnet_transfer.errors import ConfigError, ExportCheckError, RunDirectoryError
from resnet_transfer.files import first_line
from resnet_transfer.runtimes.runner import cores
from resnet_transfer.signals import native_threads_without_sigint

__all__ = ["SERVE_RUNTIMES", "TOLERANCE", "CHECK_IMAGES", "TIMED_BATCHES", "INT8_EXPORT", "Predictor",
           "load_predictor", "int8_export_path"]

logger = logging.getLogger(__name__)

SERVE_RUNTIMES = ("auto", "keras", "openvino", "int8")
TOLERANCE = 1e-4  # largest difference in probability from Keras (export's parity check)
CHECK_IMAGES = 8
TIMED_BATCHES = 3
INT8_EXPORT = os.path.join("export", "openvino-int8", "model.xml")  # inside the run folder
_CHECK_SEED = 0


@dataclass
class Predictor:
    """One runtime ready to serve.

    Attributes:
        runtime: "keras", "openvino" or "int8".
        predict: uint8 images (N, H, W, 3) -> float32 probabilities (N, classes); called
            from one thread at a time.
        reason: why this runtime, and what was measured (for the log and ``/metadata``).
        images_per_second: as timed by "auto" (None when not timed).
        max_abs_difference: the largest difference in probability from Keras on the check
            images (0 for Keras itself).
    """

    runtime: str
    predict: Callable[[np.ndarray], np.ndarray]
    reason: str = ""
    images_per_second: Optional[float] = None
    max_abs_difference: float = 0.0
    details: dict = field(default_factory=dict)


def int8_export_path(run_dir: str) -> str:
    """Where ``export --format openvino --int8`` leaves the run's INT8 model."""
    return os.path.join(run_dir, INT8_EXPORT)


def _keras_predictor(model) -> Predictor:
    from resnet_transfer.inference import predict_probabilities

    def predict(images: np.ndarray) -> np.ndarray:
        return predict_probabilities(model, np.asarray(images, dtype="float32"), batch_size=max(len(images), 1))

    return Predictor("keras", predict)


def _compiled_predictor(runtime: str, source) -> Predictor:
    """OpenVINO's CPU plugin, float32, "LATENCY" hint, on ``source`` (an .xml path or an
    ``openvino.Model``), behind one infer request (the batcher's one thread uses it)."""
    import openvino

    with native_threads_without_sigint():
        core = openvino.Core()
        model = core.read_model(source) if isinstance(source, str) else source
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                                                     "INFERENCE_NUM_THREADS": cores()})
    request = compiled.create_infer_request()
    dtype = compiled.input(0).get_element_type().to_dtype()

    def predict(images: np.ndarray) -> np.ndarray:
        with native_threads_without_sigint():  # (a no-op off the main thread: the batcher's worker)
            request.infer({0: np.ascontiguousarray(images, dtype=dtype)})
        return np.array(request.get_output_tensor(0).data, dtype="float32")

    predictor = Predictor(runtime, predict)
    predictor.details["input_shape"] = str(compiled.input(0).get_partial_shape())
    return predictor


def _openvino_predictor(model) -> Predictor:
    """The whole Keras model converted with ``Model.export(format="openvino")`` and compiled.

    Raises:
        ConfigError: the conversion or OpenVINO failed (the cause in one line).
    """
    folder = tempfile.mkdtemp(prefix="resnet-transfer-serve-")
    try:
        path = os.path.join(folder, "model.xml")
        with native_threads_without_sigint():
            model.export(path, format="openvino", verbose=False)
        return _compiled_predictor("openvino", path)
    except (OSError, KeyboardInterrupt):
        raise
    except Exception as error:  # the converter's or OpenVINO's own
        raise ConfigError(f"OpenVINO could not convert or load the run's model ({type(error).__name__}: "
                          f"{first_line(error)}); serve it with --runtime keras") from error
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # compiled: OpenVINO holds what it needs


def _int8_predictor(run) -> Predictor:
    """The run's INT8 export, checked to fit the run (labels, input size).

    Raises:
        RunDirectoryError: no such export, or it does not fit the run, or OpenVINO cannot load it.
    """
    path = int8_export_path(run.path)
    if not os.path.isfile(path):
        raise RunDirectoryError(f"--runtime int8 needs the run's INT8 export at {path}, which does not exist; write it "
                                f"with 'resnet-transfer export {run.path} --format openvino --int8', or choose another "
                                "--runtime (auto, keras or openvino)")
    labels_file = os.path.join(os.path.dirname(path), "labels.txt")
    try:
        with open(labels_file, encoding="utf-8") as handle:
            labels = handle.read().split("\n")[:-1]
    except (OSError, UnicodeDecodeError) as error:
        raise RunDirectoryError(f"{labels_file} cannot be read ({first_line(error)}); export the INT8 model again") from error
    if labels != run.labels:
        raise RunDirectoryError(f"{labels_file} names the classes {labels!r} and the run {run.labels!r}: the INT8 "
                                "export is not this run's; export it again")
    try:
        predictor = _compiled_predictor("int8", path)
    except (OSError, KeyboardInterrupt):
        raise
    except Exception as error:
        raise RunDirectoryError(f"OpenVINO cannot load {path} ({type(error).__name__}: {first_line(error)}); export the "
                                "INT8 model again") from error
    size, _ = run.image_geometry
    shape = predictor.details["input_shape"]
    if not shape.replace(" ", "").endswith(f",{size},{size},3]"):
        raise RunDirectoryError(f"{path} takes images of shape {shape} and the run's are {size}x{size}x3: the INT8 "
                                "export is not this run's; export it again")
    return predictor


def _check_images(size: int, count: int) -> np.ndarray:
    return np.random.default_rng(_CHECK_SEED).integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)


def _rate(predictor: Predictor, images: np.ndarray) -> float:
    """Images per second on ``images``: one warm-up call, then the median of ``TIMED_BATCHES``."""
    predictor.predict(images)
    seconds = []
    for _ in range(TIMED_BATCHES):
        started = time.perf_counter()
        predictor.predict(images)
        seconds.append(time.perf_counter() - started)
    return len(images) / max(statistics.median(seconds), 1e-9)


def _checked(predictor: Predictor, reference: np.ndarray, images: np.ndarray, *, bounded: bool) -> Predictor:
    """Records the largest difference from Keras; refuses it (ExportCheckError) beyond ``TOLERANCE`` if ``bounded``."""
    difference = float(np.max(np.abs(predictor.predict(images) - reference)))
    predictor.max_abs_difference = difference
    if bounded and not difference <= TOLERANCE:
        raise ExportCheckError(f"the model converted to OpenVINO differs from Keras by {difference:.3g} in probability on "
                               f"{len(images)} random images (allowed: {TOLERANCE:g}); serve it with --runtime keras")
    return predictor


def load_predictor(run, model, *, runtime: str, max_batch: int) -> Predictor:
    """The runtime that serves ``model`` (the run's loaded Keras model).

    Args:
        run: the ``runs.Run``.
        model: ``run.load_model()``.
        runtime: one of ``SERVE_RUNTIMES``.
        max_batch: the batch size "auto" times.

    Returns:
        A ``Predictor`` whose ``reason`` says why it was chosen.

    Raises:
        ConfigError: an unknown runtime, or OpenVINO could not convert the model.
        ExportCheckError: the converted model differs from Keras by more than ``TOLERANCE``.
        RunDirectoryError: "int8" without a usable INT8 export.
    """
    if runtime not in SERVE_RUNTIMES:
        raise ConfigError(f"runtime must be one of: {', '.join(SERVE_RUNTIMES)}. Received: runtime={runtime!r}")
    size, _ = run.image_geometry
    images = _check_images(size, CHECK_IMAGES)
    keras_predictor = _keras_predictor(model)
    reference = keras_predictor.predict(images)
    if runtime == "keras":
        keras_predictor.reason = "runtime keras: the run's model.keras"
        return keras_predictor
    if runtime == "openvino":
        predictor = _checked(_openvino_predictor(model), reference, images, bounded=True)
        predictor.reason = (f"runtime openvino: the model converted at start-up, within "
                            f"{predictor.max_abs_difference:.2g} of Keras's probabilities on {len(images)} random images")
        return predictor
    if runtime == "int8":
        predictor = _checked(_int8_predictor(run), reference, images, bounded=False)
        predictor.reason = (f"runtime int8: {int8_export_path(run.path)} (accuracy gated at export), "
                            f"{predictor.max_abs_difference:.2g} from Keras's probabilities on {len(images)} random images")
        return predictor
    return _choose_fastest(run, model, keras_predictor, reference, images, max_batch=max_batch)


def _choose_fastest(run, model, keras_predictor: Predictor, reference: np.ndarray, images: np.ndarray, *,
                    max_batch: int) -> Predictor:
    """"auto": the fastest of the runtimes that load and pass their check, and why."""
    candidates, left_out = [keras_predictor], []
    try:
        candidates.append(_checked(_openvino_predictor(model), reference, images, bounded=True))
    except (ConfigError, ExportCheckError) as error:
        left_out.append(f"openvino left out: {error}")
    if os.path.isfile(int8_export_path(run.path)):  # (lossy: served only when asked for, --runtime int8)
        left_out.append("int8 left out: it loses accuracy (its export's gate says how much): ask for it with "
                        "--runtime int8")
    timed = _check_images(run.image_geometry[0], max_batch)
    for candidate in candidates:
        candidate.images_per_second = _rate(candidate, timed)
    chosen = max(candidates, key=lambda candidate: candidate.images_per_second)
    rates = ", ".join(f"{candidate.runtime} {candidate.images_per_second:.0f}" for candidate in candidates)
    chosen.reason = (f"runtime auto chose {chosen.runtime}: images/s on a batch of {max_batch} random images (median of "
                     f"{TIMED_BATCHES}): {rates}; largest difference from Keras's probabilities "
                     f"{chosen.max_abs_difference:.2g}" + "".join(f"; {note}" for note in left_out))
    return chosen
