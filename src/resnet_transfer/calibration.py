"""Calibrated probabilities: temperature scaling (Guo et al. 2017), folded into the model.

A network's softmax is rarely calibrated: among the images it gives "0.99", far fewer
than 99 % may be right. Temperature scaling divides the logits ``z`` by one number ``T``,
fitted on the validation split by minimising the negative log-likelihood; the predicted
class never changes (``T`` > 0 keeps the order). Since the model's last layer is a Dense
with a softmax, ``softmax(z / T)`` is that layer with kernel ``W / T`` and bias ``b / T``:
``fold_temperature`` writes that into the layer, so the saved model stays plain Keras,
with no extra layer, and every later use of it (evaluate, predict, export) is calibrated.

The fit and the figures work from the model's float32 probabilities: log p is the logits
less a constant per row, which the softmax ignores. Where a probability underflows to 0 (a gap
of more than about 87 between two logits), it is floored at float32's smallest number, so for
a very confident head the fit sees those logits clipped; the folded model itself is exact.

The figures: the expected calibration error (ECE: the gap between confidence and
accuracy, averaged over 15 equal-width confidence bins, weighted by their images) and
the negative log-likelihood (NLL), before and after.

A temperature is only folded in where the validation split can tell it: ``calibrate``
leaves the model as it is, with a warning and the reason in its record ("skipped"), when
the split has fewer than ``MIN_CALIBRATION_IMAGES`` images (one image, or a handful, would
set the model's confidence for every later image), when its probabilities are not finite
numbers (training diverged), or when the model classifies every image of it correctly
(or the fit lands on the smallest temperature searched): such a split has no finite
optimum (the likelihood keeps rising as T -> 0), and folding logits sharpened up to
1/0.05 = 20 times would make every later mistake near-certain.

Example:
    >>> record, calibrated = calibrate(model, val_probabilities, y_val, test_probabilities, y_test)
    >>> record["temperature"], record["test"]["ece_after"]
    (1.8, 0.012)
"""

import logging

import matplotlib
import numpy as np
from scipy.optimize import minimize_scalar

from resnet_transfer.model.assembly import head_of
from resnet_transfer.report import LITERAL_TEXT, save_figure, subplots

__all__ = ["CALIBRATION_BINS", "MIN_CALIBRATION_IMAGES", "calibrate", "expected_calibration_error", "fit_temperature",
           "fold_temperature", "negative_log_likelihood", "plot_reliability", "scale_probabilities", "skip_reason"]

logger = logging.getLogger(__name__)

CALIBRATION_BINS = 15  # Guo et al.'s
# Fewer validation images than this and the fitted temperature is mostly noise (Guo et al. fit it on thousands).
MIN_CALIBRATION_IMAGES = 50
_TEMPERATURES = (0.05, 20.0)  # the search's bounds; a fit at a bound is reported as such
_SMALLEST = np.finfo(np.float32).tiny


def _log_probabilities(probabilities) -> np.ndarray:
    """log p, with p = 0 (a float32 softmax underflows) taken as float32's smallest number."""
    return np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), _SMALLEST))


def scale_probabilities(probabilities, temperature: float) -> np.ndarray:
    """``softmax(log(p) / T)``: the softmax of the logits divided by ``temperature`` (log p is
    the logits less a constant per row, which the softmax ignores)."""
    scaled = _log_probabilities(probabilities) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exponentials = np.exp(scaled)
    return (exponentials / exponentials.sum(axis=1, keepdims=True)).astype(np.float32)


def negative_log_likelihood(probabilities, labels) -> float:
    """The mean of ``-log p[label]``, p floored at float32's smallest number (Keras's cross-entropy
    clips p at 1e-7 instead, so the two differ where a confident prediction is wrong)."""
    labels = np.asarray(labels, dtype=np.int64)
    return float(-np.mean(_log_probabilities(probabilities)[np.arange(len(labels)), labels]))


def expected_calibration_error(probabilities, labels, *, bins: int = CALIBRATION_BINS) -> float:
    """ECE: ``sum over bins of |accuracy - confidence| * share of images``, the images binned by
    their top probability into ``bins`` equal-width bins over [0, 1]."""
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    if len(labels) == 0:
        raise ValueError("expected_calibration_error needs at least one image. Received: 0 images")
    if not np.isfinite(probabilities).all():  # (NaN would fall in no bin and the error would read 0)
        return float("nan")
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    which = _bins_of(confidence, bins)
    error = 0.0
    for index in range(bins):
        members = which == index
        if members.any():
            error += abs(correct[members].mean() - confidence[members].mean()) * members.mean()
    return float(error)


def _bins_of(confidence: np.ndarray, bins: int) -> np.ndarray:
    """Each confidence's bin, 0 to ``bins - 1``; -1 (no bin) for one that is not a finite number."""
    confidence = np.asarray(confidence, dtype=np.float64)
    finite = np.isfinite(confidence)
    which = np.full(confidence.shape, -1, dtype=np.int64)
    which[finite] = np.clip(confidence[finite] * bins, 0, bins - 1).astype(np.int64)
    return which


def fit_temperature(probabilities, labels) -> float:
    """The temperature that minimises the NLL of ``scale_probabilities(probabilities, T)`` on
    ``labels`` (a bounded search over log T in [log 0.05, log 20]).

    Raises:
        ValueError: no images, probabilities that are not finite numbers, or labels outside
            the probabilities' columns.
    """
    probabilities, labels = np.asarray(probabilities), np.asarray(labels, dtype=np.int64)
    if len(labels) == 0 or probabilities.ndim != 2 or len(probabilities) != len(labels):
        raise ValueError(f"fit_temperature needs N x classes probabilities and N labels, N >= 1. Received: "
                         f"probabilities of shape {probabilities.shape} and {len(labels)} labels")
    if not np.isfinite(probabilities).all():
        raise ValueError("fit_temperature needs finite probabilities. Received: probabilities with "
                         f"{int(np.sum(~np.isfinite(probabilities)))} NaN or infinite values (did training diverge?)")
    if labels.min() < 0 or labels.max() >= probabilities.shape[1]:
        raise ValueError(f"labels must be class indices below {probabilities.shape[1]}. Received: labels from "
                         f"{labels.min()} to {labels.max()}")
    logits = _log_probabilities(probabilities)
    rows = np.arange(len(labels))

    def loss(log_temperature: float) -> float:
        scaled = logits / np.exp(log_temperature)
        top = scaled.max(axis=1, keepdims=True)
        log_partition = top[:, 0] + np.log(np.exp(scaled - top).sum(axis=1))
        return float(np.mean(log_partition - scaled[rows, labels]))

    found = minimize_scalar(loss, bounds=tuple(np.log(_TEMPERATURES)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x))


def fold_temperature(model, temperature: float) -> None:
    """Divides the kernel and bias of ``model``'s last layer (the head's "probabilities" Dense,
    softmax) by ``temperature``: the model then outputs ``softmax(z / temperature)``."""
    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0. Received: temperature={temperature!r}")
    layer = head_of(model).get_layer("probabilities")
    for variable in layer.weights:
        variable.assign(variable / temperature)


def _figures(probabilities, labels) -> dict:
    return {"ece": expected_calibration_error(probabilities, labels),
            "nll": negative_log_likelihood(probabilities, labels)}


def calibrate(model, val_probabilities, val_labels, test_probabilities, test_labels) -> tuple:
    """Fits a temperature on the validation split, folds it into ``model``, and measures ECE
    and NLL before and after on both splits.

    Where the validation split cannot tell a temperature (``skip_reason``), the model is left
    as it is, a warning says why, and the record says ``"method": "none"`` with the reason
    under ``"skipped"`` (its temperature is 1, and "after" equals "before").

    Returns:
        (the record for metrics.json: {"method": "temperature", "temperature": T, "bins": 15,
        "val": {...}, "test": {...}} with ece_before, ece_after, nll_before and nll_after;
        the test probabilities after scaling, as the folded model gives them).

    Example:
        >>> record, calibrated = calibrate(model, val_probabilities, y_val, test_probabilities, y_test)
        >>> record.get("skipped") or record["temperature"]
        1.8
    """
    reason = skip_reason(val_probabilities, val_labels)
    temperature = None if reason else fit_temperature(val_probabilities, val_labels)
    if temperature is not None and np.isclose(temperature, _TEMPERATURES[0], rtol=1e-3):
        reason = (f"the fit reached the smallest temperature searched, {_TEMPERATURES[0]}: the model classifies the "
                  f"{len(val_labels)} validation images (nearly) without error, so they cannot tell how confident it "
                  "should be; a larger --val-size may")
    if reason:
        logger.warning("calibration skipped, the model's probabilities are left as they are: %s", reason)
        record = {"method": "none", "skipped": reason, "temperature": 1.0, "bins": CALIBRATION_BINS, "at_bound": False}
        temperature = 1.0
    else:
        fold_temperature(model, temperature)
        record = {"method": "temperature", "temperature": temperature, "bins": CALIBRATION_BINS,
                  "at_bound": bool(np.isclose(temperature, _TEMPERATURES, rtol=1e-3).any())}
    calibrated = np.asarray(test_probabilities) if reason else scale_probabilities(test_probabilities, temperature)
    for split, before, labels in (("val", val_probabilities, val_labels), ("test", test_probabilities, test_labels)):
        if len(labels) == 0:
            continue
        after = calibrated if split == "test" else (before if reason else scale_probabilities(before, temperature))
        was, now = _figures(before, labels), _figures(after, labels)
        record[split] = {"ece_before": was["ece"], "ece_after": now["ece"], "nll_before": was["nll"],
                         "nll_after": now["nll"], "images": int(len(labels))}
    return record, calibrated


def skip_reason(val_probabilities, val_labels) -> str:
    """Why a temperature cannot be fitted on this validation split ("" when it can): probabilities
    that are not finite numbers, too few images (``MIN_CALIBRATION_IMAGES``), or none misclassified
    (no finite temperature is best).

    Example:
        >>> skip_reason(np.full((3, 2), 0.5), [0, 1, 0])
        'the validation split has 3 image(s), fewer than the 50 ...'
    """
    if not np.isfinite(np.asarray(val_probabilities, dtype=np.float64)).all():
        return ("the model's validation probabilities are not finite numbers (NaN or infinite): training diverged; "
                "lower --learning-rate")
    count = len(val_labels)
    if count < MIN_CALIBRATION_IMAGES:
        return (f"the validation split has {count} image(s), fewer than the {MIN_CALIBRATION_IMAGES} a temperature "
                f"needs to be more than noise; give --val-size {MIN_CALIBRATION_IMAGES} or more (or --calibrate none)")
    if np.array_equal(np.asarray(val_probabilities).argmax(axis=1), np.asarray(val_labels)):
        return (f"the model classifies all {count} validation images correctly, so the likelihood keeps rising as the "
                "temperature falls: they cannot tell how confident the model should be (a larger --val-size may)")
    return ""


@matplotlib.rc_context(LITERAL_TEXT)
def plot_reliability(before, after, labels, path: str, *, bins: int = CALIBRATION_BINS) -> None:
    """The reliability diagram of the test split: accuracy against confidence per bin, before
    and after temperature scaling, with the diagonal of perfect calibration."""
    figure, axis = subplots(figsize=(5.5, 5))
    edges = np.linspace(0, 1, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for probabilities, name, marker in ((before, "before", "o"), (after, "after", "s")):
        confidence = np.asarray(probabilities).max(axis=1)
        correct = np.asarray(probabilities).argmax(axis=1) == np.asarray(labels)
        which = _bins_of(confidence, bins)
        filled = [index for index in range(bins) if (which == index).any()]
        accuracy = [correct[which == index].mean() for index in filled]
        ece = expected_calibration_error(probabilities, labels, bins=bins)
        axis.plot(centres[filled], accuracy, marker=marker, label=f"{name} scaling (ECE {ece:.3f})")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("confidence (top probability)")
    axis.set_ylabel("accuracy")
    axis.set_title("Reliability diagram (test set)")
    axis.grid(alpha=0.3)
    axis.legend(loc="upper left")
    save_figure(figure, path)
