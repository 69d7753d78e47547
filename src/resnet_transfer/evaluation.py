"""Evaluation: test metrics of a trained model, and the training curves figure.

Example:
    >>> metrics = evaluate_run("runs/20261130T000000Z-resnet152")
    >>> plot_curves(read_history(run_dir), "curves.png")
"""

import logging
import os

import numpy as np

from resnet_transfer.files import atomic_path

__all__ = ["plot_curves", "evaluate_run", "load_run_model"]

logger = logging.getLogger(__name__)


def plot_curves(history: dict, path: str) -> None:
    """Writes the two-panel figure: loss (train vs val) and accuracy (train vs val) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    epochs = list(range(1, len(history["loss"]) + 1))
    figure, (loss_axis, accuracy_axis) = pyplot.subplots(1, 2, figsize=(11, 4))
    for axis, metric, title in ((loss_axis, "loss", "Loss"), (accuracy_axis, "accuracy", "Accuracy")):
        axis.plot(epochs, history[metric], marker="o", label="train")
        axis.plot(epochs, history[f"val_{metric}"], marker="o", label="validation")
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100, format="png")
    pyplot.close(figure)


def load_run_model(run_dir: str):
    """Loads ``model.keras`` of a run (our preprocessing layer is registered on import)."""
    import keras

    from resnet_transfer import backbones  # noqa: F401  registers ImagePreprocessing
    from resnet_transfer.errors import RunDirectoryError

    path = os.path.join(run_dir, "model.keras")
    if not os.path.isfile(path):
        raise RunDirectoryError(f"{path} does not exist: is {run_dir!r} a finished resnet-transfer run?")
    return keras.saving.load_model(path)


def evaluate_run(run_dir: str, *, batch_size: int = 256) -> dict:
    """Re-computes the test metrics of a run from its saved model and saved config.

    The data are reloaded with the run's own data settings, so the same test images
    are used. Returns a dict with test_loss, test_accuracy and n_test.
    """
    from resnet_transfer.config import DataConfig
    from resnet_transfer.data import load_dataset
    from resnet_transfer.runs import read_config
    from resnet_transfer.training import ArrayBatches

    config = read_config(run_dir)["config"]
    dataset = load_dataset(DataConfig(**config["data"]))
    model = load_run_model(run_dir)
    test_loss, test_accuracy = model.evaluate(
        ArrayBatches(dataset.x_test, dataset.y_test, batch_size=batch_size), verbose=0
    )
    return {"test_loss": float(test_loss), "test_accuracy": float(test_accuracy), "n_test": int(len(dataset.y_test))}


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose most probable class is the label."""
    return float(np.mean(np.argmax(probabilities, axis=-1) == labels))
