"""Run folders: the ``Run`` object that train, evaluate, predict and export all use.

A run folder holds, under fixed names:

    config.json   every setting, versions, seed, data source with its fingerprint
    status.json   "running", "finished" or "failed" (with the error)
    history.csv   epoch, phase ("head" or "fine-tune"), loss, accuracy, val_loss, val_accuracy, seconds
    curves.png    loss and accuracy, train vs validation
    metrics.json  test metrics, sizes and timings (strict JSON: no NaN)
    model.keras   the full model; loads with plain ``keras.saving.load_model``
    labels.txt    class names, one per line, in the order of the model's outputs
    skipped.csv   inputs left out, and why (only when some were)
    and the report files of ``report.REPORT_FILES``.

Every file is written atomically (``files.atomic_path``). A folder that holds
files is never written into by a new run. ``RunContext`` owns a run's lifecycle for
every verb that writes one (train, pretrain, probe, lr-find): what a failure or a
signal leaves behind, and what it raises.

Example:
    >>> run = Run("runs/quick")
    >>> run.labels, run.image_geometry
    (['0', '1', ...], (32, 'pad'))
    >>> model = run.load_model()
"""

from resnet_transfer.runs.context import RunContext
from resnet_transfer.runs.folders import check_run_dir_free, default_run_dir, environment_versions
from resnet_transfer.runs.run import ARTIFACTS, HISTORY_COLUMNS, Run

__all__ = ["ARTIFACTS", "HISTORY_COLUMNS", "Run", "RunContext", "check_run_dir_free", "default_run_dir",
           "environment_versions"]
