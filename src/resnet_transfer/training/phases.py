"""Phases: a run trains its head, then, if asked, fine-tunes part of the backbone.

As fastai's ``fine_tune`` and the Keras transfer-learning guide do it:

1. "head": the backbone is frozen; the head trains at ``learning_rate``, on cached
   features unless augmentation or ``--no-cache`` asks for images;
2. "fine-tune" (``fine_tune_epochs`` > 0): the backbone is unfrozen from a stage on
   (``unfreeze``), and the whole model trains end to end at ``fine_tune_lr``, with the
   head's optimizer state carried over.

Every BatchNormalization layer stays in inference mode in both phases, so its moving
statistics never change. Calling the backbone with ``training=False`` is not enough
in Keras 3: a functional model passes its own ``training=True`` down to every layer
during ``fit`` (keras-team/keras#20285; our frozen-weights check caught exactly that),
so ``unfreeze`` keeps every BatchNormalization layer's ``trainable`` off, which in
Keras 3 means inference mode (and its scale and offset stay as trained). At the end of
each phase ``frozen.FrozenWeights`` verifies that every weight the phase was meant to
leave alone is bit-identical; a violation stops the run before the model is saved.

Example:
    >>> outcome = run_phases(model, dataset, config, callbacks=[EpochTimer()], class_weight=None)
    >>> outcome.history["phase"]
    ['head', 'head', 'fine-tune']
"""

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Optional

import keras
import numpy as np

from resnet_transfer.config import PHASES, RunConfig, UNFREEZE_POINTS
from resnet_transfer.data.dataset import Dataset
from resnet_transfer.errors import ConfigError, FrozenWeightsError
from resnet_transfer.inference import predict_probabilities
from resnet_transfer.model.assembly import backbone_of, make_optimizer
from resnet_transfer.model.layer_decay import LayerwiseAdam, LayerwiseAdamW
from resnet_transfer.model.augmentation import build_augmentation
from resnet_transfer.model.layer_decay import stage_rate_factors
from resnet_transfer.registry import stage_of_layer
from resnet_transfer.training.checkpoints import Checkpoint, EpochCheckpoint, restore_weights, trainable_layers
from resnet_transfer.training.fitting import (
    Phase, adopt_optimizer, calibrates, carry_optimizer_state, choose_path, ema_momentum, fit_end_to_end, fit_on_features,
)
from resnet_transfer.training.frozen import FrozenWeights
from resnet_transfer.training.interpolation import interpolate, load_before, save_before

__all__ = ["PHASES", "PhasesOutcome", "fine_tune_optimizer", "freeze", "plan_phases", "run_phases", "trainable_count",
           "unfreeze"]

logger = logging.getLogger(__name__)


@dataclass
class PhasesOutcome:
    """Every phase's results: the history with a "phase" entry per epoch, seconds and figures."""

    history: dict = field(default_factory=dict)
    test_probabilities: Optional[np.ndarray] = None
    val_probabilities: Optional[np.ndarray] = None  # where the run calibrates (fitting.calibrates)
    train_seconds: float = 0.0
    feature_cache: str = "off"
    backbone_seconds: Optional[float] = None
    extract_runtime: Optional[str] = None
    conversion_seconds: Optional[float] = None
    phases: list = field(default_factory=list)
    interpolation: Optional[dict] = None  # --interpolate's record (training.interpolation.interpolate)
    int8_extraction: Optional[dict] = None  # --extract-runtime openvino-int8's distance from float (fitting.int8_distance)


def plan_phases(config: RunConfig) -> list:
    """The phases ``config`` asks for: the head phase, then a fine-tune phase if any."""
    train = config.train
    augmentation = build_augmentation(train.augment, flip=train.flip, seed=train.seed)
    phases = [Phase("head", train.epochs, 0, train.learning_rate,
                    augmentation=augmentation if train.augment_phase == "both" else None)]
    if train.fine_tune_epochs:
        phases.append(Phase("fine-tune", train.fine_tune_epochs, train.epochs, train.fine_tune_lr,
                            augmentation=augmentation, unfreeze=train.unfreeze, train_bn=train.train_bn))
    return phases


def unfreeze(backbone: keras.Model, point: str, *, train_bn: bool = False) -> list:
    """Makes ``point`` ("all", or "convK": that stage and the stages above it) trainable
    and freezes the rest; returns the names of the trainable layers.

    BatchNormalization layers stay frozen everywhere (``trainable=False``, which Keras 3
    runs in inference mode), so their moving statistics never change. With ``train_bn``
    the unfrozen stages' BatchNormalization scale (gamma) and offset (beta) variables are
    marked trainable (``keras.Variable.trainable``) while their layers stay frozen: the
    optimizer trains them (``Model.trainable_variables`` gathers variables by their own
    flag) and the layers still normalise with their moving statistics
    (keras-team/keras#20285).

    Raises:
        ConfigError: an unknown point.
    """
    if point not in UNFREEZE_POINTS:
        raise ConfigError(f"unfreeze must be one of: {', '.join(UNFREEZE_POINTS)}. Received: unfreeze={point!r}")
    backbone.trainable = True
    first_stage = 0 if point == "all" else int(point[len("conv"):])
    for layer in backbone.layers:
        stage = stage_of_layer(layer.name)
        in_stage = point == "all" or (stage is not None and stage >= first_stage)
        batch_norm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = in_stage and not batch_norm
        if batch_norm:  # each time: setting a layer's trainable to the value it has leaves its variables' flags
            for variable in (layer.gamma if layer.scale else None, layer.beta if layer.center else None):
                if variable is not None:
                    variable.trainable = in_stage and train_bn
    return [layer.name for layer in backbone.layers if layer.trainable and layer.weights]


def freeze(backbone: keras.Model) -> None:
    """Freezes every layer and variable of ``backbone`` (undoing ``unfreeze``, ``train_bn`` included)."""
    backbone.trainable = False
    for variable in backbone.weights:
        variable.trainable = False


def trainable_count(model: keras.Model) -> int:
    """Parameters the optimizer updates."""
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))


def run_phases(model: keras.Model, dataset: Dataset, config: RunConfig, *, callbacks: list, class_weight,
               resume: Optional[Checkpoint] = None) -> PhasesOutcome:
    """Trains ``model`` through the phases of ``config``; raises ``FrozenWeightsError`` on a leak.

    ``resume``: a killed run's last checkpoint; the phases it had ended are skipped, the
    one it was in goes on from its weights, trainable layers and optimizer state.
    """
    phases = [phase for phase in plan_phases(config) if phase.epochs or phase.name == "head"]
    if phases[0].epochs == 0 and len(phases) > 1:
        phases = phases[1:]  # no head epochs: the fine-tune phase starts from the untrained head
    planned_epochs = {phase.name: phase.epochs for phase in phases}
    outcome = PhasesOutcome()
    checkpoints = [callback for callback in callbacks if isinstance(callback, EpochCheckpoint)]
    for callback in checkpoints:
        callback.phases = outcome.phases  # the ended phases' records go into every checkpoint
    if resume is not None:
        phases = _remaining(phases, resume)
        restore_weights(model, resume)
        outcome.history = {name: list(values) for name, values in resume.history.items()}
        outcome.phases.extend(resume.phases)
        for record in resume.phases:  # a head phase that ended before the kill: its cache figures
            if record.get("backbone_seconds") is not None:
                outcome.feature_cache, outcome.backbone_seconds = record["feature_cache"], record["backbone_seconds"]
                outcome.extract_runtime = record.get("extract_runtime")
                outcome.conversion_seconds = record.get("conversion_seconds")
    for phase in phases:
        last = phase is phases[-1]
        frozen = _prepare(model, phase)
        restored = resume if resume is not None and resume.phase == phase.name else None
        if restored is not None and trainable_layers(model) != restored.trainable:
            raise ConfigError(f"the checkpoint of the {phase.name} phase trained other backbone layers than these "
                              "settings unfreeze; resume with the run's own settings (its config.json)")
        logger.info("phase %s: %d epochs at learning rate %g, %s trainable parameters, %d frozen weights watched",
                    phase.name, phase.epochs, phase.learning_rate, f"{trainable_count(model):,}", len(frozen))
        interpolating = phase.name == "fine-tune" and config.train.interpolate != "none"
        before = _weights_before_fine_tune(model, checkpoints, resumed=restored is not None) if interpolating else None
        fitted = _fit_phase(model, dataset, config, phase, callbacks, class_weight, predict_test=last,
                            checkpoint=restored)
        moved = frozen.changed()
        outcome.phases.append({"name": phase.name, "epochs": planned_epochs[phase.name], "learning_rate": phase.learning_rate,
                               "trainable_parameters": trainable_count(model), "train_seconds": fitted.train_seconds,
                               "frozen_weights_checked": len(frozen), "frozen_weights_moved": moved,
                               "feature_cache": fitted.feature_cache, "backbone_seconds": fitted.backbone_seconds,
                               "extract_runtime": fitted.extract_runtime, "conversion_seconds": fitted.conversion_seconds})
        if moved:
            raise FrozenWeightsError(
                f"{len(moved)} weights that the {phase.name} phase was meant to leave frozen changed during it "
                f"({', '.join(moved[:5])}{', ...' if len(moved) > 5 else ''}); the model was not saved. This is a bug: "
                "please report it with the run folder's config.json",
                phase=phase.name, moved=moved,
            )
        _record(outcome, phase, fitted)
        if interpolating:
            outcome.interpolation = interpolate(model, before, setting=config.train.interpolate,
                                                validation=(dataset.x_val, dataset.y_val))
            logger.info("interpolation: the weights are (1 - a) * before + a * after the fine-tune phase with a=%g (%s)",
                        outcome.interpolation["alpha"], "picked on the validation split"
                        if config.train.interpolate == "auto" else "--interpolate")
            if last:  # (the fine-tuned model's own test accuracy, a = 1, beside the interpolated one's)
                outcome.interpolation["fine_tuned_test_accuracy"] = float(np.mean(
                    np.argmax(fitted.test_probabilities, axis=-1) == dataset.y_test)) if len(dataset.y_test) else None
                outcome.test_probabilities = predict_probabilities(model, dataset.x_test)
                if calibrates(config):
                    outcome.val_probabilities = predict_probabilities(model, dataset.x_val)
    return outcome


def _weights_before_fine_tune(model: keras.Model, checkpoints: list, *, resumed: bool) -> list:
    """The weights the fine-tune phase starts from: the model's now, kept in the run's checkpoints
    folder; those kept there when the fine-tune phase is resumed."""
    folder = checkpoints[0].directory if checkpoints else None
    if not resumed:
        if folder is not None:
            save_before(model, folder)
        return model.get_weights()
    before = load_before(folder, model) if folder is not None else None
    if before is None:
        raise ConfigError("--interpolate: the weights this run started its fine-tune phase from are not in its "
                          "checkpoints folder (it was started by a version without --interpolate, or the file was "
                          "removed); start the run again")
    return before


def _prepare(model: keras.Model, phase: Phase) -> FrozenWeights:
    """Sets the trainable flags of ``phase`` and takes the digests of what must stay frozen."""
    if phase.unfreeze is None:
        freeze(backbone_of(model))
    else:
        unfrozen = unfreeze(backbone_of(model), phase.unfreeze, train_bn=phase.train_bn)
        logger.info("fine-tune: %d backbone layers with weights train (%s); every BatchNormalization layer stays "
                    "in inference mode, its moving statistics frozen%s",
                    len(unfrozen), "all" if phase.unfreeze == "all" else f"{phase.unfreeze} and above",
                    " (its scale and offset train: --train-bn)" if phase.train_bn else "")
    return FrozenWeights.of(model)


def _remaining(phases: list, checkpoint: Checkpoint) -> list:
    """The phases still to run after ``checkpoint``: the one it was taken in, from its next
    epoch (possibly none, to hand its optimizer state on), and those after it."""
    names = [phase.name for phase in phases]
    if checkpoint.phase not in names:
        raise ConfigError(f"the checkpoint is of a {checkpoint.phase} phase, which these settings do not have; "
                          "resume with the run's own settings (its config.json)")
    remaining = phases[names.index(checkpoint.phase):]
    current = remaining[0]
    left = current.first_epoch + current.epochs - checkpoint.epochs_done
    if left < 0 or checkpoint.epochs_done < current.first_epoch:
        raise ConfigError(f"the checkpoint is after epoch {checkpoint.epochs_done}, outside the {current.name} phase "
                          "of these settings; resume with the run's own settings (its config.json)")
    logger.info("resuming after epoch %d, in the %s phase (%d of its epochs left)", checkpoint.epochs_done,
                current.name, left)
    return [dataclasses.replace(current, first_epoch=checkpoint.epochs_done, epochs=left)] + remaining[1:]


def fine_tune_optimizer(model: keras.Model, *, learning_rate: float, weight_decay: float, train_bn: bool,
                        ema_momentum: Optional[float] = None, lr_decay: float = 1.0) -> keras.optimizers.Optimizer:
    """The fine-tune phase's optimizer (``make_optimizer``); with ``train_bn`` and weight decay,
    BatchNormalization's scale and offset are not decayed (fastai's ``bn_wd=False``: no pull
    of the scale towards 0); with ``lr_decay`` < 1, each backbone stage steps at its factor
    of the rate (``layer_decay``)."""
    factors = stage_rate_factors(backbone_of(model), lr_decay) if lr_decay < 1 else None
    optimizer = make_optimizer(learning_rate=learning_rate, weight_decay=weight_decay, ema_momentum=ema_momentum,
                               rate_factors=factors)
    if train_bn and weight_decay > 0:
        optimizer.exclude_from_weight_decay(var_list=[
            variable for layer in backbone_of(model).layers if isinstance(layer, keras.layers.BatchNormalization)
            for variable in layer.weights if variable.trainable])
    return optimizer


def _fit_phase(model, dataset: Dataset, config: RunConfig, phase: Phase, callbacks: list, class_weight, *,
               predict_test: bool, checkpoint: Optional[Checkpoint] = None):
    use_cache, reason = choose_path(config, model, phase)
    logger.info("phase %s: %s (%s)", phase.name, "cached features" if use_cache else "end-to-end", reason)
    if use_cache:
        return fit_on_features(model, dataset, config, phase=phase, callbacks=callbacks, class_weight=class_weight,
                               predict_test=predict_test, checkpoint=checkpoint)
    optimizer = None
    if phase.name == "fine-tune":
        optimizer = fine_tune_optimizer(model, learning_rate=phase.learning_rate,
                                        weight_decay=config.train.weight_decay, train_bn=phase.train_bn,
                                        ema_momentum=ema_momentum(config), lr_decay=config.train.lr_decay)
        optimizer.build(model.trainable_variables)
        if getattr(model, "optimizer", None) is not None and model.optimizer.built:
            carry_optimizer_state(model.optimizer, optimizer, learning_rate=False, variables=model.trainable_variables)
    fitted = fit_end_to_end(model, dataset, config, phase=phase, callbacks=callbacks, class_weight=class_weight,
                            optimizer=optimizer, predict_test=predict_test, checkpoint=checkpoint)
    if isinstance(model.optimizer, (LayerwiseAdam, LayerwiseAdamW)):
        adopt_optimizer(model, model.optimizer, config)  # the saved model loads in plain Keras
    return fitted


def _record(outcome: PhasesOutcome, phase: Phase, fitted) -> None:
    epochs = len(next(iter(fitted.history.values()), []))
    for name, values in fitted.history.items():
        outcome.history.setdefault(name, []).extend(values)
    outcome.history.setdefault("phase", []).extend([phase.name] * epochs)
    outcome.train_seconds += fitted.train_seconds
    if fitted.test_probabilities is not None:
        outcome.test_probabilities = fitted.test_probabilities
        outcome.val_probabilities = fitted.val_probabilities
    if getattr(fitted, "int8_extraction", None) is not None:
        outcome.int8_extraction = fitted.int8_extraction
    if fitted.backbone_seconds is not None:
        outcome.feature_cache, outcome.backbone_seconds = fitted.feature_cache, fitted.backbone_seconds
        outcome.extract_runtime, outcome.conversion_seconds = fitted.extract_runtime, fitted.conversion_seconds
