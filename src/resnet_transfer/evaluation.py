"""Evaluation: the test metrics of a finished run, recomputed from its saved model.

Example:
    >>> metrics = evaluate_run("runs/20261130T000000Z-resnet152")
"""

from resnet_transfer.report import compute_test_metrics, write_report
from resnet_transfer.runs import Run
from resnet_transfer.training.batches import predict_probabilities

__all__ = ["evaluate_run", "load_run_model"]


def load_run_model(run_dir: str):
    """Loads ``model.keras`` of a run with plain ``keras.saving.load_model``."""
    return Run(run_dir).load_model()


def evaluate_run(run_dir: str, *, allow_changed_data: bool = False) -> dict:
    """Re-computes the test metrics of a run from its saved model and saved config.

    Only the test split is decoded, split exactly as in training (same settings, seed
    and classes); the report files are written again into the run directory.

    Args:
        run_dir: a finished run.
        allow_changed_data: use the data even when it no longer matches the run's fingerprint.

    Returns:
        A dict with test_loss, test_accuracy and n_test.

    Raises:
        RunDirectoryError: not a finished run, or a damaged model.
        DataError: the data changed since training (without ``allow_changed_data``) or is unreadable.
    """
    run = Run(run_dir)
    model = run.load_model()  # first: it checks config.json against the model before anything is computed
    dataset = run.load_dataset(splits=("test",), allow_changed_data=allow_changed_data)
    probabilities = predict_probabilities(model, dataset.x_test)
    metrics = compute_test_metrics(probabilities, dataset.y_test)
    write_report(
        run.path, probabilities=probabilities, labels=dataset.y_test, images=dataset.x_test,
        class_names=tuple(run.labels), metrics={**run.metrics, **metrics}, settings=run.record,
    )
    return metrics
