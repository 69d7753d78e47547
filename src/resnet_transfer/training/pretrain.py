"""The ``pretrain`` verb: train a backbone on one's own images, for ``train --weights FILE``.

A ResNet from ``--backbone`` (random, or from ``--weights``) trains with a temporary
classification head (by default average pooling and one softmax layer, the shape of
the ImageNet classifier) on any data ``train`` accepts, end to end, every layer
trainable and every BatchNormalization layer in training mode, as when a network is
trained from scratch. Then every BatchNormalization layer's moving mean and variance are
recomputed with the final weights over a seeded sample of ``bn_images`` training images
(PreciseBN, ``model.batch_norm``): after a short pretraining the moving averages lag far
behind the weights, and every later use of the backbone (feature extraction, fine-tuning)
runs BatchNormalization in inference mode. The test metrics are taken after that, and:

- the backbone's weights go to ``out`` (Keras's ``save_weights``, a ``.weights.h5``
  file that ``create_backbone`` loads, and with it ``train --weights FILE``);
- a sidecar ``x.weights.json`` beside it records the backbone, the source data, the
  classes, the epochs, the final accuracies, the weights file's SHA-256 and the
  recalibration (``bn_recalibration``: images, and the validation accuracy in training
  and in inference mode before and after);
- a run folder records the run as ``train`` does (config, history, curves, model,
  metrics, report).

Nothing is overwritten. The weights file and its sidecar are written last, so a run that
fails or is interrupted leaves neither; one interrupted or stopped by a disk error leaves
nothing at all (there is no checkpoint to go on from), and any other failure after a
finished epoch leaves its run folder saying how it ended.

Example:
    >>> config = RunConfig.from_dict({"data": {"classes": "0,1,2,3,4"}, "model": {"backbone": "resnet50",
    ...                               "weights": "none", "head": "linear", "pooling": "avg"}, "train": {"epochs": 2}})
    >>> result = pretrain(config, out="digits04.weights.h5")
    >>> result.sidecar["classes"]
    ['0', '1', '2', '3', '4']
"""

import errno
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Optional

import keras
import numpy as np

from resnet_transfer.model.precision import precision_policy
from resnet_transfer.config import FEATURE_LAYERS, RunConfig, check_settings_take_effect
from resnet_transfer.errors import ConfigError
from resnet_transfer.files import atomic_path, first_line, hash_file, write_json_atomic
from resnet_transfer.model.assembly import backbone_of, head_of
from resnet_transfer.model.augmentation import build_augmentation
from resnet_transfer.model.backbone import MAX_MODE_GAP
from resnet_transfer.model.batch_norm import recalibrate, sample_indices, training_mode_probabilities
from resnet_transfer.model.weights import SIDECAR_FORMAT, sidecar_path
from resnet_transfer.report import compute_test_metrics, plot_curves, write_report
from resnet_transfer.runs import RunContext, default_run_dir
from resnet_transfer.training.distribution import (
    choose_strategy, cluster_role, replicas, strategy_name, strategy_scope, worker_role, worker_scratch,
)
from resnet_transfer.inference import predict_probabilities
from resnet_transfer.training.callbacks import EpochTimer, StopOnInterrupt
from resnet_transfer.training.fitting import Phase, balanced_class_weight, fit_end_to_end
from resnet_transfer.signals import watching_interrupts
from resnet_transfer.training.phases import trainable_count
from resnet_transfer.training.setup import check_before_run, config_record, prepare, tensorboard_callbacks

__all__ = ["PretrainResult", "pretrain", "check_weights_out", "precise_batch_norm"]

logger = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    """What ``pretrain`` produced: the weights file, its sidecar's content, and the run folder."""

    weights_file: str
    sidecar: dict
    run_dir: str
    metrics: dict


def check_weights_out(out) -> None:
    """Raises ``ConfigError`` unless ``out`` is a new ``.weights.h5`` file in a writable folder."""
    if not isinstance(out, str) or not out.endswith(".weights.h5"):
        raise ConfigError(f"out must be a file name ending in .weights.h5 (Keras's weights format). Received: out={out!r}")
    for path in (out, sidecar_path(out)):
        if os.path.exists(path):
            raise ConfigError(f"{path!r} already exists; pretrained weights are never overwritten. Choose another --out "
                              "or remove it")
    folder = os.path.dirname(os.path.abspath(out))
    try:
        with tempfile.TemporaryFile(dir=folder):  # what the run will do there, tried before hours of training
            pass
    except OSError as error:
        raise ConfigError(f"cannot write into the folder of --out {out!r} ({first_line(error)}); create it, make it "
                          "writable or choose another") from None


def _check_settings(config: RunConfig) -> None:
    if config.train.epochs < 1:
        raise ConfigError(f"pretrain needs at least 1 epoch. Received: epochs={config.train.epochs}")
    if config.train.fine_tune_epochs:
        raise ConfigError("pretrain trains the whole backbone in one phase; remove fine_tune_epochs from the config "
                          f"file. Received: fine_tune_epochs={config.train.fine_tune_epochs}")
    for name, value in (("bn_recalibrate", config.model.bn_recalibrate), ("train_bn", config.train.train_bn)):
        if value:
            raise ConfigError(f"pretrain trains every BatchNormalization layer in training mode and recomputes its "
                              f"statistics at the end (--bn-images); remove {name} from the config file. Received: "
                              f"{name}={value!r}")
    if config.model.feature_layer != FEATURE_LAYERS[-1]:
        raise ConfigError("pretrain trains the whole backbone, so its weights file holds every stage; remove "
                          "feature_layer from the config file and give --feature-layer to train instead. "
                          f"Received: feature_layer={config.model.feature_layer!r}")


def pretrain(config: RunConfig, *, out: str, callbacks: Optional[list] = None) -> PretrainResult:
    """Trains ``config``'s backbone with a temporary head and saves its weights to ``out``.

    Args:
        config: the data, backbone, starting weights, temporary head and training settings
            (``epochs``, ``learning_rate``, ``augment`` ...); the CLI lays
            ``recipes.PRETRAIN_SETTINGS`` under the user's.
        out: the new weights file, ending in ``.weights.h5``.
        callbacks: extra Keras callbacks.

    Returns:
        A ``PretrainResult``.

    Raises:
        ConfigError, DataError, WeightsError, RunDirectoryError: bad input; nothing is written.
    """
    check_weights_out(out)
    _check_settings(config)
    check_settings_take_effect(config, verb="pretrain")
    clustered = config.train.strategy in ("auto", "multi-worker") and cluster_role() is not None
    with watching_interrupts() as interrupts:
        run_dir = config.run_dir or default_run_dir(f"{config.model.backbone}-pretrain")
        if not clustered:
            check_before_run(config.updated({"train": {"feature_cache": "off"}}), run_dir)
        # On a cluster every worker joins first (see train._train), then checks.
        strategy = choose_strategy(config.train.strategy, batch_size=config.train.batch_size, command="pretrain")
        with worker_scratch(config.train.strategy, "pretrain") as scratch:
            if scratch:  # a worker of a cluster, not the chief: the chief keeps the run and the weights
                run_dir, out = os.path.join(scratch, "run"), os.path.join(scratch, os.path.basename(out))
            if clustered:
                check_before_run(config.updated({"train": {"feature_cache": "off"}}), run_dir)
            with strategy_scope(strategy), precision_policy(config.train.mixed_precision):
                return _pretrain_in_scope(config, out, callbacks, interrupts, run_dir, strategy)


def _pretrain_in_scope(config: RunConfig, out: str, callbacks: Optional[list], interrupts, run_dir: str,
                       strategy) -> PretrainResult:
    dataset, model, weights_path = prepare(config, frozen_backbone=False)
    class_weight = balanced_class_weight(dataset.y_train, dataset.num_classes) if config.train.class_weight else None
    # pretrain keeps no checkpoints, so a run stopped by Ctrl-C, SIGTERM or a full or read-only disk has nothing to go
    # on with: removed, so that the same command runs again (RunContext without resumable).
    with RunContext(run_dir, interrupts=interrupts) as context:
        run = context.run

        def written(history: dict, seconds: list) -> None:  # a row per finished epoch, at once
            context.epochs_done = len(seconds)
            run.write_history(history, seconds)

        timer = EpochTimer(write=written)
        record = config_record(config, run_dir, dataset, model, weights_path, class_weight)
        record["pretrain"] = {"out": os.path.abspath(out)}
        record["resolved"].update(strategy=strategy_name(strategy), replicas=replicas(strategy),
                                  workers=role.count if (role := worker_role()) else 1)
        run.write_config(record)
        run.write_labels(dataset.class_names)
        if dataset.skipped:
            run.write_skipped(dataset.skipped)
        logger.info("pretraining %s: %s parameters, all %s trainable; the temporary head: %s",
                    config.model.backbone, f"{model.count_params():,}", f"{trainable_count(model):,}", config.model.head)
        phase = Phase("pretrain", config.train.epochs, 0, config.train.learning_rate,
                      augmentation=build_augmentation(config.train.augment, flip=config.train.flip, seed=config.train.seed))
        fitted = fit_end_to_end(model, dataset, config, phase=phase, class_weight=class_weight,
                                callbacks=[timer, StopOnInterrupt(interrupts)] + tensorboard_callbacks(config, run.path)
                                + list(callbacks or []), predict_test=False)
        history = {**fitted.history, "phase": ["pretrain"] * len(timer.seconds)}
        run.write_history(history, timer.seconds)
        plot_curves(history, run.file("curves.png"))
        recalibration = precise_batch_norm(model, dataset, config)
        test_probabilities = predict_probabilities(model, dataset.x_test)
        run.save_model(model)
        metrics = {
            **compute_test_metrics(test_probabilities, dataset.y_test),
            "n_train": int(len(dataset.y_train)), "n_val": int(len(dataset.y_val)),
            "n_skipped": len(dataset.skipped), "epochs": config.train.epochs, "backbone": config.model.backbone,
            "weights": config.model.weights, "train_seconds": fitted.train_seconds,
            "seconds_per_epoch": fitted.train_seconds / config.train.epochs, "weights_file": os.path.abspath(out),
            "bn_recalibration": recalibration,
        }
        run.write_metrics(metrics)
        write_report(run.path, probabilities=test_probabilities, labels=dataset.y_test,
                     images=dataset.x_test, class_names=dataset.class_names, metrics=metrics, settings=record)
        sidecar = _save_backbone(backbone_of(model), out, config, dataset, history, metrics, run_dir)
        try:
            context.finish(epochs_done=len(timer.seconds))
        except BaseException:
            _remove_backbone(out)
            raise
    logger.info("backbone weights in %s (sidecar %s); test accuracy on the source data %.4f; run folder %s",
                out, sidecar_path(out), metrics["test_accuracy"], run.path)
    return PretrainResult(weights_file=out, sidecar=sidecar, run_dir=run.path, metrics=metrics)


def _accuracies(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy with BatchNormalization in training mode (each batch's statistics) and in
    inference mode (the moving statistics), as fractions; None for both without images."""
    if len(images) == 0:
        return {"training_mode": None, "inference_mode": None}
    inference = predict_probabilities(model, images)
    training = training_mode_probabilities(backbone_of(model), images, preprocess=model.get_layer("preprocessing"),
                                           head=head_of(model))
    return {"training_mode": float(np.mean(training.argmax(axis=1) == labels)),
            "inference_mode": float(np.mean(inference.argmax(axis=1) == labels))}


def precise_batch_norm(model: keras.Model, dataset, config: RunConfig) -> dict:
    """PreciseBN: the backbone's BatchNormalization statistics recomputed with the final
    weights over a seeded sample of ``config.model.bn_images`` training images; returns the
    record for the sidecar, with the validation split's training-mode and inference-mode
    accuracies before and after. Warns when they still differ by more than
    ``MAX_MODE_GAP`` points after."""
    started = time.perf_counter()
    before = _accuracies(model, dataset.x_val, dataset.y_val)
    sample = dataset.x_train[sample_indices(len(dataset.x_train), config.model.bn_images, seed=config.train.seed)]
    done = recalibrate(backbone_of(model), sample, preprocess=model.get_layer("preprocessing"))
    after = _accuracies(model, dataset.x_val, dataset.y_val)
    record = {"method": "PreciseBN", **done.to_dict(), "split": "val", "before": before, "after": after,
              "seconds": time.perf_counter() - started}
    if after["inference_mode"] is None:
        logger.info("BatchNormalization statistics recomputed over %d training images; no validation images to "
                    "compare the two modes on", done.images)
        return record
    logger.info("BatchNormalization statistics recomputed over %d training images: validation accuracy in training "
                "mode / inference mode %.4f / %.4f before, %.4f / %.4f after", done.images, before["training_mode"],
                before["inference_mode"], after["training_mode"], after["inference_mode"])
    gap = 100 * (after["training_mode"] - after["inference_mode"])
    if gap > MAX_MODE_GAP:
        logger.warning("the backbone still scores %.1f points lower in inference mode than in training mode after "
                       "recomputing its BatchNormalization statistics: most likely too few --bn-images (%d) or too "
                       "short a pretraining for its weights to settle; pretrain longer, or pass --bn-recalibrate "
                       "to train", gap, done.images)
    return record


def _save_backbone(backbone: keras.Model, out: str, config: RunConfig, dataset, history: dict, metrics: dict,
                   run_dir: str) -> dict:
    """Writes the weights file, then its sidecar, each atomically; neither is left alone on failure."""
    check_weights_out(out)  # again: another process may have written it meanwhile
    _check_room(out, backbone)
    with atomic_path(out) as temporary:
        backbone.save_weights(temporary)
        sha256 = hash_file(temporary)
    sidecar = {
        "format": SIDECAR_FORMAT,
        "backbone": config.model.backbone,
        "weights_sha256": sha256,
        "started_from": config.model.weights,
        "source": {**dataset.source, "classes_setting": None if config.data.classes is None else list(config.data.classes)},
        "classes": list(dataset.class_names),
        "epochs": config.train.epochs,
        "image_size": int(dataset.image_shape[0]),
        "preprocess": config.model.preprocess,
        "n_train": metrics["n_train"],
        "final": {name: float(history[name][-1]) for name in ("accuracy", "val_accuracy") if history.get(name)},
        "test_accuracy": metrics["test_accuracy"],
        "bn_recalibration": metrics["bn_recalibration"],
        "run_dir": os.path.abspath(run_dir),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        write_json_atomic(sidecar_path(out), sidecar)
    except BaseException:
        _remove_backbone(out)
        raise
    return sidecar


def _check_room(out: str, backbone: keras.Model) -> None:
    """Raises ``OSError`` (ENOSPC, naming ``out``) when its folder cannot hold the weights:
    h5py on a full disk prints tracebacks of its own and can end the process with a
    segmentation fault."""
    needed = sum(int(np.prod(weight.shape)) * np.dtype(weight.dtype).itemsize for weight in backbone.weights)
    free = free_bytes(os.path.dirname(os.path.abspath(out)))
    if free < needed * 1.1 + 2**20:  # (HDF5's own structures, and a margin)
        raise OSError(errno.ENOSPC, f"No space left on device for the weights ({needed / 1e6:,.0f} MB needed, "
                      f"{free / 1e6:,.0f} MB free)", out)


def free_bytes(folder: str) -> int:
    """Bytes an unprivileged process can still write in ``folder``'s file system."""
    return shutil.disk_usage(folder).free


def _remove_backbone(out: str) -> None:
    """Removes what ``_save_backbone`` wrote, so that a failed run leaves no weights file behind."""
    for path in (out, sidecar_path(out)):
        if os.path.exists(path):
            os.remove(path)

