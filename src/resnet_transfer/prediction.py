"""Prediction: top-k classes for new images with a trained run.

The images get the same preparation as in training (size and resize mode read
from the run's ``config.json``; scaling is inside the model), so a user never has
to remember it.

Example:
    >>> for row in predict("runs/photos", ["new/cat.jpg", "new/"]):
    ...     print(row["path"], row["top"][0])
"""

import csv
import glob
import io
import json
import os
from typing import Iterable, Optional, Union

import numpy as np

from resnet_transfer.config import PREDICT_FORMATS
from resnet_transfer.data.arrays import check_images
from resnet_transfer.data.images import ImageReadError, fit_images, read_image
from resnet_transfer.errors import DataError
from resnet_transfer.runs import Run
from resnet_transfer.inference import predict_probabilities, predict_with_tta

__all__ = ["expand_inputs", "predict", "format_predictions", "PREDICT_FORMATS"]

_BATCH = 64


def expand_inputs(inputs: Iterable[str]) -> list:
    """Files as given, folders walked (sorted), glob patterns expanded (sorted).

    Raises:
        DataError: an input names nothing that exists.
    """
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            paths += sorted(os.path.join(folder, name) for folder, _, names in os.walk(item) for name in names)
        elif os.path.isfile(item):
            paths.append(item)
        elif glob.has_magic(item) and glob.glob(item, recursive=True):
            paths += sorted(path for path in glob.glob(item, recursive=True) if os.path.isfile(path))
        else:
            raise DataError(f"no image file, folder or glob match at {item!r}; give an existing image file, a folder, "
                            "or a glob that matches files")
    return paths


def predict(run: Union[str, object], images, *, top_k: Optional[int] = None, class_names=None, image_size=None, resize=None,
            tta: bool = False, flip: Optional[bool] = None) -> list:
    """Predicts the top-k classes of each image.

    Args:
        run: a run directory, or a loaded Keras model (then give ``class_names``,
            ``image_size`` and ``resize``).
        images: paths (files, folders, globs) or an array of images (N x H x W [x C]).
        top_k: how many classes to return per image (at most the number of classes; None:
            3, or every class of a run with fewer).
        tta: average the outputs over test-time augmentation's views (``inference.tta_views``).
        flip: whether those views include a mirror (None: the run's ``--flip``; no mirror for a model).

    Returns:
        One dict per readable image: ``path`` (or the array index), ``top`` (a list of
        ``(class_name, probability)``, most probable first) and ``probabilities``. An
        unreadable file gives a dict with ``path`` and ``error`` instead.
    """
    if isinstance(run, (str, os.PathLike, Run)):
        run = run if isinstance(run, Run) else Run(run)
        model = run.load_model()  # (checks config.json's class names and image size against the model)
        class_names = run.labels
        image_size, resize = run.image_geometry
        flip = bool(run.record["config"]["train"].get("flip", False)) if flip is None else flip
    else:
        model = run
        if class_names is None or image_size is None:
            raise ValueError("with a model instead of a run directory, give class_names and image_size (and resize)")
        resize = resize or "pad"
    top_k = min(3, len(class_names)) if top_k is None else top_k
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= len(class_names):
        raise DataError(f"top_k must be between 1 and {len(class_names)} (the number of classes). Received: top_k={top_k}")
    if isinstance(images, np.ndarray):
        names = list(range(len(images)))
        prepared = list(fit_images(check_images(images, name="images"), size=image_size, resize=resize))
        results = [None] * len(images)
    else:
        names = expand_inputs(images)
        prepared, results = [], []
        for path in names:
            try:
                prepared.append(read_image(path, size=image_size, resize=resize))
                results.append(None)
            except ImageReadError as error:
                results.append({"path": path, "error": error.reason})
    readable = [index for index, result in enumerate(results) if result is None]
    if readable:
        pixels = np.stack(prepared).astype("float32")
        probabilities = (predict_with_tta(model, pixels, flip=bool(flip), batch_size=_BATCH)[0] if tta
                         else predict_probabilities(model, pixels, batch_size=_BATCH))
        for index, row in zip(readable, probabilities):
            order = np.argsort(-row)[:top_k]
            results[index] = {
                "path": names[index],
                "top": [(class_names[c], float(row[c])) for c in order],
                "probabilities": row,
            }
    return results


def _printable(path: str) -> str:
    """A file name on one line of the table: control characters (a newline in a name) as escapes."""
    return path if path.isprintable() else path.encode("unicode_escape").decode("ascii")


def format_predictions(results: list, output_format: str) -> str:
    """Renders ``predict`` results as an aligned table, JSON lines or CSV."""
    if output_format not in PREDICT_FORMATS:
        raise DataError(f"format must be one of: {', '.join(PREDICT_FORMATS)}. Received: format={output_format!r}")
    if output_format == "jsonl":
        return "".join(
            json.dumps({"path": str(r["path"]), "error": r["error"]} if "error" in r else
                       {"path": str(r["path"]), "top": [{"class": c, "probability": round(p, 6)} for c, p in r["top"]]}) + "\n"
            for r in results
        )
    buffer = io.StringIO()
    if output_format == "csv":
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "rank", "class", "probability", "error"])
        for r in results:
            if "error" in r:
                writer.writerow([r["path"], "", "", "", r["error"]])
            for rank, (name, probability) in enumerate(r.get("top", []), start=1):
                writer.writerow([r["path"], rank, name, f"{probability:.6f}", ""])
        return buffer.getvalue()
    shown = [_printable(str(r["path"])) for r in results]
    width = max([len(path) for path in shown] + [4])
    lines = [f"{'path':<{width}}  top classes"]
    for r, path in zip(results, shown):
        text = f"error: {r['error']}" if "error" in r else "  ".join(f"{c} {p:.3f}" for c, p in r["top"])
        lines.append(f"{path:<{width}}  {text}")
    return "\n".join(lines) + "\n"
