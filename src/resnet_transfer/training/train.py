"""The ``train`` verb: from a ``RunConfig`` to a finished run folder, step by step.

1. check: the run folder is free, optional packages are there, the cache is writable;
2. prepare: load the data, fetch the weights, build the model -- everything that can
   fail on bad input fails here, before anything is written;
3. record: create the run folder with its config, labels and skipped inputs;
4. fit: the head phase, then the fine-tune phase if asked (``phases``), each on cached
   features or end to end (``fitting``), each followed by the frozen-weights check;
5. finish: history, curves, model, metrics, report, and status "finished".

A failure before the first finished epoch removes the run folder (so the same
command can run again); a later one leaves it marked "failed" in status.json. Every
finished epoch leaves a checkpoint (``checkpoints``), so a run stopped in any way,
Ctrl-C or SIGKILL included, goes on with ``train(config, resume=True)`` (the CLI's
``--resume --run-dir DIR``) from its last finished epoch, in the phase it was in; the
checkpoint is removed once the run has finished.

Example:
    >>> config = RunConfig.from_dict({"model": {"weights": "none"},
    ...                               "data": {"limit": 512, "val_size": 128, "test_limit": 256},
    ...                               "train": {"epochs": 2}})
    >>> result = train(config)
    >>> result.metrics["test_accuracy"]
"""

import json
import logging
import os
import shutil
from dataclasses import dataclass
from typing import Optional

import keras

from resnet_transfer.calibration import calibrate, plot_reliability
from resnet_transfer.config import HOW_SETTINGS, RunConfig, check_settings_take_effect, flat_settings
from resnet_transfer.data.dataset import Dataset
from resnet_transfer.errors import ConfigError, DataError, FrozenWeightsError, RunDirectoryError, WeightsError
from resnet_transfer.inference import TTA_SHIFT, predict_with_tta
from resnet_transfer.model.precision import precision_policy
from resnet_transfer.model.weights import weights_identity
from resnet_transfer.report import compute_test_metrics, plot_curves, write_report
from resnet_transfer.runs import Run, RunContext, default_run_dir
from resnet_transfer.signals import Interrupts, watching_interrupts
from resnet_transfer.training.checkpoints import CHECKPOINTS, Checkpoint, EpochCheckpoint, clear_partial, read_checkpoint
from resnet_transfer.training.distribution import (
    check_same_on_every_worker, choose_strategy, cluster_role, replicas, strategy_name, strategy_scope, worker_role,
    worker_scratch,
)
from resnet_transfer.cache.store import FeatureCache
from resnet_transfer.training.callbacks import EpochTimer, StopOnInterrupt
from resnet_transfer.training.fitting import balanced_class_weight
from resnet_transfer.training.phases import run_phases, trainable_count
from resnet_transfer.training.setup import (
    check_before_run, check_tensorboard, config_record, config_values, prepare, tensorboard_callbacks,
)

__all__ = ["RunResult", "changed_settings", "train"]

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What ``train`` produced: the run folder, the trained model, history and metrics."""

    run_dir: str
    model: keras.Model
    history: dict
    metrics: dict


def train(config: Optional[RunConfig] = None, *, callbacks: Optional[list] = None, resume: bool = False) -> RunResult:
    """Runs one training run and writes its run folder; the default config is the seed recipe.

    Args:
        config: the run's settings (None: ``RunConfig()``, the seed recipe).
        callbacks: extra Keras callbacks for ``fit``.
        resume: go on with the stopped run in ``config.run_dir`` (same settings) from its
            last finished epoch.

    Returns:
        A ``RunResult``.

    Raises:
        ConfigError, DataError, WeightsError, RunDirectoryError: bad input; nothing is written.
        RunInterrupted: Ctrl-C after a finished epoch (a ``KeyboardInterrupt``); the run can be resumed.
    """
    config = config or RunConfig()
    with watching_interrupts() as interrupts, precision_policy(config.train.mixed_precision):
        try:
            return _train(config, callbacks, interrupts, resume)
        except Exception as error:
            if interrupts:  # Ctrl-C, which TensorFlow's C++ code turned into another exception
                raise interrupts.stop() from error
            raise


def _train(config: RunConfig, callbacks: Optional[list], interrupts: Interrupts, resume: bool) -> RunResult:
    if not resume:  # (a resumed run keeps the settings it recorded, from whichever version)
        check_settings_take_effect(config)
    clustered = config.train.strategy in ("auto", "multi-worker") and cluster_role() is not None
    if resume and clustered:
        raise ConfigError("--resume does not run on a cluster yet: start the run again, or resume it on one machine "
                          "without TF_CONFIG")
    if clustered:
        # Every worker joins first: a worker stopped by a check after that stops the others with it (they lose it
        # at their next step), where one stopped before would leave them waiting to join forever.
        strategy = choose_strategy(config.train.strategy, batch_size=config.train.batch_size)
        with worker_scratch(config.train.strategy, "train") as scratch:  # (only the chief keeps files)
            run_dir = os.path.join(scratch, "run") if scratch else config.run_dir or default_run_dir(config.model.backbone)
            check_before_run(config, run_dir, resumable=True)
            with strategy_scope(strategy):
                return _train_in_scope(config, callbacks, interrupts, run_dir, strategy, None, None)
    run_dir = config.run_dir or default_run_dir(config.model.backbone)
    run, checkpoint = None, None
    if resume:
        run, checkpoint = _reopen(config)
    else:
        check_before_run(config, run_dir, resumable=True)
    try:
        strategy = choose_strategy(config.train.strategy, batch_size=config.train.batch_size)
        with strategy_scope(strategy):  # the model's variables, its optimizer's and every step on every replica
            return _train_in_scope(config, callbacks, interrupts, run_dir, strategy, run, checkpoint)
    finally:
        if run is not None:
            run.release()


def _what_it_trains(config: RunConfig, dataset: Dataset) -> str:
    """The settings that change what a run computes (not ``HOW_SETTINGS``, not where its
    data lies) and the data's fingerprint, as one text."""
    settings = {name: value for name, value in flat_settings(json.loads(json.dumps(config.to_dict()))).items()
                if name not in HOW_SETTINGS and name != "data.source"}
    return json.dumps({"settings": settings, "data": dataset.source.get("fingerprint")}, sort_keys=True, default=str)


def _reopen(config: RunConfig) -> tuple:
    """The stopped run to go on with, and its last checkpoint (None: no epoch had finished)."""
    if config.run_dir is None:
        raise ConfigError("--resume needs --run-dir: the folder of the stopped run to go on with")
    if os.path.isfile(os.path.join(config.run_dir, "tune.json")):
        raise RunDirectoryError(f"--resume: {config.run_dir!r} holds a search of tune, not a train run; go on with it "
                                "with 'resnet-transfer tune ... --resume', or give the --run-dir of a stopped train run")
    run = Run.reopen(config.run_dir)
    try:
        changed = changed_settings(run.record["config"], config_values(config, config.run_dir))
        if changed:
            raise ConfigError(
                f"--resume: {len(changed)} setting(s) differ from the run's config.json: {'; '.join(changed)}. A "
                "resumed run keeps its settings: give the same ones, or start a new run with another --run-dir"
            )
        _check_same_weights(run, config)
        check_tensorboard(config)
        if config.train.feature_cache != "off":
            FeatureCache(config.train.cache_dir).check_writable()
        return run, read_checkpoint(run.path)
    except BaseException:
        run.release()
        raise


def _check_same_weights(run: Run, config: RunConfig) -> None:
    """Raises ``WeightsError`` when the weights are not those the run started from: the same
    path may now hold another file."""
    recorded = (run.record.get("weights") or {}).get("identity")
    current = weights_identity(config.model.backbone, config.model.weights, config.train.seed)
    if recorded is not None and recorded != current:
        raise WeightsError(f"--resume: the weights {config.model.weights!r} are not those the run in {run.path!r} started "
                           f"from (then {recorded}, now {current}): put the original file back, or start a new run "
                           "with another --run-dir")


def changed_settings(recorded: dict, given: dict) -> list:
    """The settings that differ between two ``config`` records, as "name (was X, now Y)",
    but for ``HOW_SETTINGS`` (a resumed run may, say, name its folder another way or run on
    more GPUs)."""
    recorded, given = flat_settings(recorded), flat_settings(given)
    # A setting newer than the run's config.json had its default then (a run started by an earlier version).
    defaults = flat_settings(json.loads(json.dumps(RunConfig().to_dict())))
    recorded = {**{name: defaults[name] for name in given if name not in recorded and name in defaults}, **recorded}
    return [f"{name} (was {recorded.get(name)!r}, now {given.get(name)!r})" for name in sorted(set(recorded) | set(given))
            if name not in HOW_SETTINGS and recorded.get(name) != given.get(name)]


def _train_in_scope(config: RunConfig, callbacks: Optional[list], interrupts: Interrupts, run_dir: str,
                    strategy, run: Optional[Run], checkpoint: Optional[Checkpoint]) -> RunResult:
    dataset, model, weights_path = prepare(config)
    check_same_on_every_worker(_what_it_trains(config, dataset), "settings or data")  # (on a cluster)
    class_weight = balanced_class_weight(dataset.y_train, dataset.num_classes) if config.train.class_weight else None

    if run is not None:
        if run.record["data_source"].get("fingerprint") != dataset.source.get("fingerprint"):
            raise DataError(f"--resume: the data at {config.data.source!r} (or its --exclude list) changed since the run "
                            f"in {run.path!r} "
                            "started (files or arrays were added, removed or changed); start a new run instead")
        clear_partial(run.path)  # what a kill or a full disk left in the middle of a checkpoint
        run.write_status("running")
        record = run.record
        context = RunContext(run=run, interrupts=interrupts, resumable=True, epochs_done=checkpoint.epochs_done
                             if checkpoint else 0)
    else:
        record = config_record(config, run_dir, dataset, model, weights_path, class_weight)
        record["resolved"].update(strategy=strategy_name(strategy), replicas=replicas(strategy),
                                  workers=role.count if (role := worker_role()) else 1)
        # config.json first: a folder killed now can be resumed
        context = RunContext(run_dir, record=record, interrupts=interrupts, resumable=True)
    timer = EpochTimer(history=checkpoint.history if checkpoint else None, seconds=checkpoint.seconds if checkpoint else None)
    with context:
        run = context.run

        def saved(history: dict, seconds: list) -> None:  # what a failure keeps: epochs whose checkpoint is written
            context.epochs_done = len(seconds)
            run.write_history(history, seconds)

        # A history.csv row per finished epoch, written once the epoch's checkpoint is: a row is an epoch --resume keeps.
        saver = EpochCheckpoint(run.path, model, timer, epochs_saved=context.epochs_done, then=saved)
        if context.resumed:
            logger.info("run directory: %s, resumed after epoch %d", os.path.abspath(run.path), context.epochs_done)
        else:
            logger.info("run directory: %s", os.path.abspath(run_dir))
        if not context.resumed or not os.path.isfile(run.file("labels.txt")):  # (a run killed as it started has none)
            run.write_labels(dataset.class_names)
            if dataset.skipped:
                run.write_skipped(dataset.skipped)
        # The timer records the epoch, the checkpoint saves it, and only then may Ctrl-C stop the run.
        callbacks = ([timer, saver, StopOnInterrupt(interrupts, finish_epoch=True)]
                     + tensorboard_callbacks(config, run.path) + list(callbacks or []))
        return _fit_and_finish(context, model, dataset, config, record, timer, callbacks, class_weight, checkpoint)


def _fit_and_finish(context: RunContext, model, dataset: Dataset, config: RunConfig, record: dict, timer: EpochTimer,
                    callbacks: list, class_weight, checkpoint: Optional[Checkpoint]) -> RunResult:
    run = context.run
    logger.info("model: %s parameters, %s trainable (the head: %s pooling, %s)", f"{model.count_params():,}",
                f"{trainable_count(model):,}", record["resolved"]["pooling"], record["resolved"]["pooling_reason"])
    try:
        outcome = run_phases(model, dataset, config, callbacks=callbacks, class_weight=class_weight, resume=checkpoint)
    except FrozenWeightsError as error:
        run.write_metrics({"frozen_weights_unchanged": False, "frozen_weights_moved": error.moved, "phase": error.phase})
        raise

    run.write_history(outcome.history, timer.seconds)
    if timer.seconds:
        plot_curves(outcome.history, run.file("curves.png"))
    calibration = None
    if outcome.val_probabilities is not None:  # (--calibrate temperature) before the model is saved: it is folded in
        raw = outcome.test_probabilities
        calibration, outcome.test_probabilities = calibrate(model, outcome.val_probabilities, dataset.y_val, raw,
                                                            dataset.y_test)
    if calibration is not None and not calibration.get("skipped"):
        plot_reliability(raw, outcome.test_probabilities, dataset.y_test, run.file("reliability.png"))
        logger.info("calibration: temperature %.3f fitted on the validation split; test ECE %.4f -> %.4f, NLL %.4f -> "
                    "%.4f", calibration["temperature"], calibration["test"]["ece_before"],
                    calibration["test"]["ece_after"], calibration["test"]["nll_before"], calibration["test"]["nll_after"])
    run.save_model(model)
    epochs = config.train.epochs + config.train.fine_tune_epochs
    metrics = {
        **compute_test_metrics(outcome.test_probabilities, dataset.y_test),
        "n_train": int(len(dataset.y_train)),
        "n_val": int(len(dataset.y_val)),
        "n_skipped": len(dataset.skipped),
        "epochs": epochs,
        "backbone": config.model.backbone,
        "weights": config.model.weights,
        "train_seconds": outcome.train_seconds,
        "seconds_per_epoch": outcome.train_seconds / epochs if epochs else None,
        "feature_cache": outcome.feature_cache,
        "backbone_seconds": outcome.backbone_seconds,
        "extract_runtime": outcome.extract_runtime,
        "conversion_seconds": outcome.conversion_seconds,
        "frozen_weights_unchanged": True,
        "phases": outcome.phases,
        "interpolation": outcome.interpolation,
        "calibration": calibration,
        "int8_extraction": outcome.int8_extraction,
    }
    if config.train.tta:
        averaged, views = predict_with_tta(model, dataset.x_test, flip=config.train.flip)
        tested = compute_test_metrics(averaged, dataset.y_test)
        metrics["tta"] = {"test_loss": tested["test_loss"], "test_accuracy": tested["test_accuracy"], "views": views,
                          "flip": config.train.flip, "shift": TTA_SHIFT}
        logger.info("with test-time augmentation (%d views): test loss %.4f, test accuracy %.4f", views,
                    tested["test_loss"], tested["test_accuracy"])
    if checkpoint is not None:  # train_seconds: this process's epochs; seconds_per_epoch: every epoch's
        metrics["resumed_after_epoch"] = checkpoint.epochs_done
        metrics["seconds_per_epoch"] = sum(timer.seconds) / len(timer.seconds) if timer.seconds else None
    run.write_metrics(metrics)
    write_report(
        run.path, probabilities=outcome.test_probabilities, labels=dataset.y_test, images=dataset.x_test,
        class_names=dataset.class_names, metrics=metrics, settings=record, model=model,
    )
    context.finish(epochs_done=len(timer.seconds))
    shutil.rmtree(run.file(CHECKPOINTS), ignore_errors=True)  # model.keras holds the end, as BackupAndRestore does
    logger.info("test loss %.4f, test accuracy %.4f; frozen weights unchanged; artifacts and report.html in %s",
                metrics["test_loss"], metrics["test_accuracy"], run.path)
    return RunResult(run_dir=run.path, model=model, history=outcome.history, metrics=metrics)


