"""The report of a run: where the model goes wrong, as figures, a CSV and one HTML page.

Written into the run directory by ``train`` and by ``evaluate``:

    confusion_matrix.png        counts and row-normalised rates, class names on the axes
    classification_report.csv   precision, recall, F1 and support per class (scikit-learn)
    misclassified.png           the test images with the largest loss, true vs predicted
    report.html                 one self-contained page: settings, curves, metrics, the above

Class names and every other text go into the figures literally: matplotlib's
math text is off, so a class called ``$x$`` is shown as typed.

Example:
    >>> write_report(run_dir, probabilities=p, labels=y, images=x, class_names=names)
"""

import base64
import csv
import html
import io
import json
import logging
import os

import keras
import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import classification_report, confusion_matrix

from resnet_transfer.files import atomic_path, first_line, json_safe, write_text_atomic

__all__ = ["LITERAL_TEXT", "OPTIONAL_FIGURES", "REPORT_FILES", "refresh_report_page", "compute_test_metrics", "plot_curves", "save_figure", "subplots", "write_report"]

REPORT_FILES = ("confusion_matrix.png", "classification_report.csv", "misclassified.png", "report.html")
OPTIONAL_FIGURES = (("Calibration: reliability diagram (temperature scaling)", "reliability.png"),
                    ("Map of the features (t-SNE), from resnet-transfer audit", "feature_map.png"))
_ANNOTATE_UP_TO = 20
_WORST = 16


def compute_test_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """Sparse categorical cross-entropy (as Keras computes it) and accuracy from probabilities."""
    losses = keras.ops.convert_to_numpy(keras.losses.sparse_categorical_crossentropy(labels, probabilities))
    return {
        "test_loss": float(np.mean(losses)),
        "test_accuracy": float(np.mean(np.argmax(probabilities, axis=-1) == labels)),
        "n_test": int(len(labels)),
    }


LITERAL_TEXT = {"text.parse_math": False, "text.usetex": False}


def subplots(rows: int = 1, columns: int = 1, *, figsize: tuple, squeeze: bool = True) -> tuple:
    """A figure and its axes (as ``pyplot.subplots`` gives them) through matplotlib's object
    API: pyplot is never imported, so no backend is chosen or switched for the process (a
    notebook's stays as it is), and no figure is kept open anywhere."""
    figure = Figure(figsize=figsize)
    return figure, figure.subplots(rows, columns, squeeze=squeeze)


def save_figure(figure, path: str) -> None:
    """Writes ``figure`` as a PNG at ``path`` atomically."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100, format="png", bbox_inches="tight")


@matplotlib.rc_context(LITERAL_TEXT)
def plot_curves(history: dict, path: str) -> None:
    """Writes the two-panel figure: loss (train vs val) and accuracy (train vs val) per epoch.

    With a "phase" per epoch in ``history``, the phases share one epoch axis and a
    dashed line marks where the fine-tune phase starts.
    """
    epochs = list(range(1, len(history["loss"]) + 1))
    phases = list(history.get("phase", ["head"] * len(epochs)))
    boundaries = [index + 0.5 for index in range(1, len(phases)) if phases[index] != phases[index - 1]]
    figure, (loss_axis, accuracy_axis) = subplots(1, 2, figsize=(11, 4))
    for axis, metric, title in ((loss_axis, "loss", "Loss"), (accuracy_axis, "accuracy", "Accuracy")):
        axis.plot(epochs, history[metric], marker="o", label="train")
        axis.plot(epochs, history[f"val_{metric}"], marker="o", label="validation")
        for boundary in boundaries:
            axis.axvline(boundary, color="grey", linestyle="--", linewidth=1)
            axis.annotate(f"{phases[int(boundary - 0.5)]} phase", (boundary, 1), xycoords=("data", "axes fraction"),
                          xytext=(4, -12), textcoords="offset points", color="grey")
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    save_figure(figure, path)


@matplotlib.rc_context(LITERAL_TEXT)
def plot_confusion_matrix(matrix: np.ndarray, class_names: tuple, path: str) -> None:
    totals = matrix.sum(axis=1, keepdims=True)
    rates = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    side = max(5.0, 0.55 * len(class_names) + 2)
    figure, axis = subplots(figsize=(side, side))
    image = axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axis, fraction=0.046, label="share of the true class")
    ticks = np.arange(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=45, ha="right")
    axis.set_yticks(ticks, class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title("Confusion matrix (test set)")
    if len(class_names) <= _ANNOTATE_UP_TO:
        for row, column in np.ndindex(matrix.shape):
            colour = "white" if rates[row, column] > 0.5 else "black"
            axis.text(column, row, f"{matrix[row, column]}\n{rates[row, column]:.0%}", ha="center", va="center", fontsize=8, color=colour)
    save_figure(figure, path)


def worst_indices(losses) -> np.ndarray:
    """The test images the report shows: the largest losses first."""
    return np.argsort(-np.asarray(losses))[:_WORST]


@matplotlib.rc_context(LITERAL_TEXT)
def plot_worst(images, labels, probabilities, losses, class_names: tuple, path: str, heatmaps=None) -> None:
    """The largest-loss test images; with ``heatmaps`` (one per image of ``worst_indices``,
    Grad-CAM's of the predicted class) each is shown with its heat map over it."""
    worst = worst_indices(losses)
    columns = 4
    rows = max(1, int(np.ceil(len(worst) / columns)))
    figure, axes = subplots(rows, columns, figsize=(3 * columns, 3.2 * rows), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for position, (axis, index) in enumerate(zip(axes.ravel(), worst)):
        predicted = int(np.argmax(probabilities[index]))
        image = np.asarray(images[index])
        if heatmaps is not None:
            from resnet_transfer.explanation import overlay

            image = overlay(image, heatmaps[position])
        axis.imshow(image)
        axis.set_title(
            f"true {class_names[labels[index]]} / predicted {class_names[predicted]}\n"
            f"p={probabilities[index, predicted]:.2f}, loss {losses[index]:.2f}",
            fontsize=9, color="black" if predicted == labels[index] else "darkred",
        )
    figure.suptitle("Test images with the largest loss" + ("" if heatmaps is None else
                                                          ", each with Grad-CAM's heat map of its predicted class"))
    save_figure(figure, path)


def _classification_rows(labels, predictions, class_names: tuple) -> list:
    report = classification_report(
        labels, predictions, labels=list(range(len(class_names))), target_names=list(class_names),
        output_dict=True, zero_division=0,
    )
    rows = []
    for name, values in report.items():
        if name == "accuracy":
            rows.append({"class": name, "precision": "", "recall": "", "f1-score": values, "support": len(labels)})
        else:
            rows.append({"class": name, **values, "support": int(values["support"])})
    return rows


def _write_csv(rows: list, path: str) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["class", "precision", "recall", "f1-score", "support"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: f"{value:.4f}" if isinstance(value, float) else value for key, value in row.items()})
    write_text_atomic(path, buffer.getvalue())


def _embedded(path: str, alt: str) -> str:
    if not os.path.isfile(path):
        return f"<p>({html.escape(alt)}: not available)</p>"
    with open(path, "rb") as handle:
        data = base64.b64encode(handle.read()).decode("ascii")
    return f'<img class="figure" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(rows: list, columns: list) -> str:
    head = "".join(f"<th>{html.escape(column)}</th>" for column in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(f'{row.get(c):.4f}' if isinstance(row.get(c), float) else str(row.get(c, '')))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _interpolation_section(record) -> str:
    """--interpolate's curve: the validation accuracy of each ``a`` tried, the one used marked."""
    if not isinstance(record, dict) or not record.get("curve"):
        return ""
    rows = [{"a": f"{point['alpha']:g}", "validation accuracy": point["val_accuracy"],
             "used": "yes" if point["alpha"] == record.get("alpha") else ""} for point in record["curve"]]
    plain = record.get("fine_tuned_test_accuracy")
    note = (f"<p>The fine-tuned model's own test accuracy (a = 1): {plain:.4f}.</p>"
            if isinstance(plain, float) else "")
    return (f"<h2>Weight interpolation after fine-tuning (--interpolate {html.escape(str(record.get('setting')))})</h2>"
            f"{note}{_table(rows, ['a', 'validation accuracy', 'used'])}")


def _html_page(run_dir: str, metrics: dict, settings: dict, rows: list) -> str:
    metric_rows = [{"metric": key, "value": value} for key, value in metrics.items()
                   if key not in ("phases", "interpolation", "tta", "calibration", "int8_extraction")]
    if isinstance(metrics.get("int8_extraction"), dict):  # (--extract-runtime openvino-int8)
        metric_rows += [{"metric": f"int8 extraction: {key.replace('_', ' ')}", "value": value}
                        for key, value in metrics["int8_extraction"].items()]
    if isinstance(metrics.get("tta"), dict):  # (train --tta, evaluate --tta)
        metric_rows += [{"metric": f"tta {key}", "value": metrics["tta"].get(key)} for key in ("test_loss", "test_accuracy")]
    calibration = metrics.get("calibration")
    if isinstance(calibration, dict) and calibration.get("skipped"):
        metric_rows.append({"metric": "calibration", "value": f"skipped: {calibration['skipped']}"})
    elif isinstance(calibration, dict):  # (train's --calibrate temperature)
        metric_rows.append({"metric": "calibration temperature", "value": calibration.get("temperature")})
        for split in ("val", "test"):
            for key in ("ece_before", "ece_after", "nll_before", "nll_after"):
                if isinstance(calibration.get(split), dict):
                    metric_rows.append({"metric": f"{split} {key.replace('_', ' ')}", "value": calibration[split].get(key)})
    phase_columns = ["name", "epochs", "learning_rate", "trainable_parameters", "train_seconds", "frozen_weights_checked",
                     "frozen_weights_moved"]
    phase_rows = [{**phase, "learning_rate": f"{phase['learning_rate']:g}",
                   "frozen_weights_moved": len(phase.get("frozen_weights_moved", []))}
                  for phase in metrics.get("phases", [])]
    phases = f"<h2>Phases</h2>{_table(phase_rows, phase_columns)}" if phase_rows else ""
    phases += _interpolation_section(metrics.get("interpolation"))
    title = f"resnet-transfer report: {os.path.basename(os.path.abspath(run_dir))}"
    figures = "".join(
        f"<h2>{html.escape(heading)}</h2>{_embedded(os.path.join(run_dir, name), heading)}"
        for heading, name in (("Training curves", "curves.png"), ("Confusion matrix", "confusion_matrix.png"),
                              ("Largest-loss test images", "misclassified.png"))
    )
    figures += "".join(  # what only some runs have: calibration's diagram, audit's feature map
        f"<h2>{html.escape(heading)}</h2>{_embedded(os.path.join(run_dir, name), heading)}"
        for heading, name in OPTIONAL_FIGURES if os.path.isfile(os.path.join(run_dir, name))
    )
    if os.path.isfile(os.path.join(run_dir, "audit.html")):
        figures += ('<h2>Data audit</h2><p><a href="audit.html">audit.html</a>: label issues, near-duplicates and '
                    'leakage across splits, outliers and overlapping classes (<code>resnet-transfer audit</code>).</p>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:75em}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:right}} th{{background:#eee}} img.figure{{max-width:100%;border:1px solid #ddd}}
pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style></head>
<body><h1>{html.escape(title)}</h1>
<h2>Metrics</h2>{_table(metric_rows, ["metric", "value"])}
{phases}
<h2>Per class (precision, recall, F1, support)</h2>{_table(rows, ["class", "precision", "recall", "f1-score", "support"])}
{figures}
<h2>Settings</h2><pre>{html.escape(json.dumps(json_safe(settings), indent=2))}</pre>
</body></html>
"""


def write_report(run_dir: str, *, probabilities, labels, images, class_names: tuple, metrics: dict, settings: dict,
                 model=None) -> None:
    """Writes the four report files of ``REPORT_FILES`` into ``run_dir`` (atomically).

    Args:
        probabilities: N x classes, the model's outputs on the test images.
        labels: N true class indices.
        images: the N test images (uint8, as the model took them), read only for the worst few.
        class_names: names shown on every axis and table.
        metrics: shown in the page's metrics table.
        settings: the run's config record, shown in the page.
        model: the run's model (``build_model``'s): the worst images then show Grad-CAM's heat
            map of their predicted class (``explanation.grad_cam``; on TensorFlow only).
    """
    labels = np.asarray(labels)
    predictions = np.argmax(probabilities, axis=-1)
    matrix = confusion_matrix(labels, predictions, labels=list(range(len(class_names))))
    plot_confusion_matrix(matrix, class_names, os.path.join(run_dir, "confusion_matrix.png"))
    losses = keras.ops.convert_to_numpy(keras.losses.sparse_categorical_crossentropy(labels, probabilities))
    heatmaps = None
    if model is not None and keras.backend.backend() == "tensorflow" and len(labels):
        from resnet_transfer.explanation import grad_cam  # (TensorFlow's: the report needs none on another backend)

        try:
            heatmaps = grad_cam(model, np.asarray(images)[worst_indices(losses)])[0]
        except Exception as error:  # (the heat maps only illustrate: a finished run is not failed for them)
            logging.getLogger(__name__).warning("the report's worst images are shown without Grad-CAM heat maps: "
                                                "%s: %s", type(error).__name__, first_line(error))
    plot_worst(images, labels, probabilities, losses, class_names, os.path.join(run_dir, "misclassified.png"),
               heatmaps=heatmaps)
    rows = _classification_rows(labels, predictions, class_names)
    _write_csv(rows, os.path.join(run_dir, "classification_report.csv"))
    write_text_atomic(os.path.join(run_dir, "report.html"), _html_page(run_dir, metrics, settings, rows))


def refresh_report_page(run_dir: str) -> None:
    """Writes report.html again from the run folder's files (metrics.json, config.json,
    classification_report.csv and the figures), for what a later command added to the folder
    (``audit``'s feature map and page)."""
    with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as handle:
        metrics = json.load(handle)
    with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as handle:
        settings = json.load(handle)
    with open(os.path.join(run_dir, "classification_report.csv"), encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    write_text_atomic(os.path.join(run_dir, "report.html"), _html_page(run_dir, metrics, settings, rows))
