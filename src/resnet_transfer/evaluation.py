"""Evaluation: test metrics of a trained model, and the training curves figure.

Example:
    >>> metrics = evaluate_run("runs/20261130T000000Z-resnet152")
    >>> plot_curves(read_history(run_dir), "curves.png")
"""

import logging
import os

from resnet_transfer.report import pyplot, save_figure

__all__ = ["plot_curves", "evaluate_run", "load_run_model"]

logger = logging.getLogger(__name__)


def plot_curves(history: dict, path: str) -> None:
    """Writes the two-panel figure: loss (train vs val) and accuracy (train vs val) per epoch."""
    from matplotlib.ticker import MaxNLocator

    epochs = list(range(1, len(history["loss"]) + 1))
    figure, (loss_axis, accuracy_axis) = pyplot().subplots(1, 2, figsize=(11, 4))
    for axis, metric, title in ((loss_axis, "loss", "Loss"), (accuracy_axis, "accuracy", "Accuracy")):
        axis.plot(epochs, history[metric], marker="o", label="train")
        axis.plot(epochs, history[f"val_{metric}"], marker="o", label="validation")
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    save_figure(figure, path)


def load_run_model(run_dir: str):
    """Loads ``model.keras`` of a run (our preprocessing layer is registered on import)."""
    import keras

    from resnet_transfer import backbones  # noqa: F401  registers ImagePreprocessing
    from resnet_transfer.errors import RunDirectoryError

    path = os.path.join(run_dir, "model.keras")
    if not os.path.isfile(path):
        raise RunDirectoryError(f"{path} does not exist: is {run_dir!r} a finished resnet-transfer run?")
    return keras.saving.load_model(path)


def evaluate_run(run_dir: str) -> dict:
    """Re-computes the test metrics of a run from its saved model and saved config.

    The data are reloaded with the run's own data settings and seed, so the same test
    images are used; the report files (confusion matrix, classification report,
    largest-loss images, report.html) are written again into the run directory.

    Returns:
        A dict with test_loss, test_accuracy and n_test.
    """
    from resnet_transfer.config import DataConfig
    from resnet_transfer.data import load_dataset
    from resnet_transfer.report import compute_test_metrics, write_report
    from resnet_transfer.runs import read_config, read_metrics
    from resnet_transfer.training import predict_probabilities

    record = read_config(run_dir)
    dataset = load_dataset(DataConfig(**record["config"]["data"]), seed=record["seed"])
    model = load_run_model(run_dir)
    probabilities = predict_probabilities(model, dataset.x_test)
    metrics = compute_test_metrics(probabilities, dataset.y_test)
    write_report(
        run_dir, probabilities=probabilities, labels=dataset.y_test, images=dataset.x_test,
        class_names=tuple(record["class_names"]), metrics={**read_metrics(run_dir), **metrics}, settings=record,
    )
    return metrics
