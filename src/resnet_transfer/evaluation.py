"""Evaluation: the test metrics of a finished run, recomputed from its saved model.

Example:
    >>> metrics = evaluate_run("runs/20261130T000000Z-resnet152")
"""

import json
import os
from typing import Optional

from resnet_transfer.errors import RunDirectoryError
from resnet_transfer.files import first_line, json_safe
from resnet_transfer.report import compute_test_metrics, write_report
from resnet_transfer.runs import Run
from resnet_transfer.inference import TTA_SHIFT, predict_probabilities, predict_with_tta

__all__ = ["evaluate_run", "load_run_model"]


def load_run_model(run_dir: str):
    """Loads ``model.keras`` of a run with plain ``keras.saving.load_model``."""
    return Run(run_dir).load_model()


def evaluate_run(run_dir: str, *, allow_changed_data: bool = False, output_dir: Optional[str] = None,
                 tta: bool = False) -> dict:
    """Re-computes the test metrics of a run from its saved model and saved config.

    Only the test split is decoded, split exactly as in training (same settings, seed
    and classes); the report files are written again into the run directory.

    Args:
        run_dir: a finished run.
        allow_changed_data: use the data even when it no longer matches the run's fingerprint.
        output_dir: where the report files go (None: the run folder, replacing its report).
        tta: also the metrics of test-time augmentation (``inference.predict_with_tta``; flips
            only where the run trained with ``--flip``), under "tta"; the report keeps the
            model's own outputs.

    Returns:
        A dict with test_loss, test_accuracy and n_test (and "tta" with test_loss,
        test_accuracy and its views).

    Raises:
        RunDirectoryError: not a finished run, a damaged model, a config.json that does not
            fit it, an ``output_dir`` that holds files, or a report that cannot be written (a
            read-only run folder: the message holds the metrics).
        DataError: the data changed since training (without ``allow_changed_data``) or is unreadable.
    """
    if output_dir is not None and not str(output_dir).strip():
        raise RunDirectoryError("--output must name a folder; leave it out to write the report into the run folder. "
                                "Received: --output ''")
    if output_dir is not None and os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)):
        raise RunDirectoryError(f"--output {output_dir!r} is a file or a folder that holds files; a report is never "
                                "written over others. Give a new or empty folder")
    run = Run(run_dir)
    run.record  # noqa: B018 -- a folder without config.json is no run, whatever else it holds
    model = run.load_model()  # before the data: it checks config.json against the model
    dataset = run.load_dataset(splits=("test",), allow_changed_data=allow_changed_data)
    probabilities = predict_probabilities(model, dataset.x_test)
    metrics = compute_test_metrics(probabilities, dataset.y_test)
    if tta:
        flip = bool(run.record["config"]["train"].get("flip", False))
        averaged, views = predict_with_tta(model, dataset.x_test, flip=flip)
        tested = compute_test_metrics(averaged, dataset.y_test)
        metrics["tta"] = {"test_loss": tested["test_loss"], "test_accuracy": tested["test_accuracy"], "views": views,
                          "flip": flip, "shift": TTA_SHIFT}
    folder = output_dir or run.path
    try:
        os.makedirs(folder, exist_ok=True)
        write_report(
            folder, probabilities=probabilities, labels=dataset.y_test, images=dataset.x_test,
            class_names=tuple(run.labels), metrics={**run.metrics, **metrics}, settings=run.record, model=model,
        )
    except OSError as error:
        raise RunDirectoryError(
            f"the test metrics are {json.dumps(json_safe(metrics))}, but the report cannot be written into {folder!r} "
            f"({first_line(error)}): give --output DIR to write it into another folder") from error
    return metrics
