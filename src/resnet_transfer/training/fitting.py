"""Fitting: one training phase, in one of two ways, with ``keras.Model.fit``.

- on features (a head phase with a frozen backbone and no augmentation): the backbone
  runs once over every image (``backbone_pass.stored_features``), pooled by the head's
  pooling, and the head is fit on the stored features;
- end to end: images go through the whole model (behind the augmentation layers, if
  any) in every epoch: the article's way with ``--no-cache``, a head phase with
  augmentation, and every fine-tune phase.

Both use the same head, optimizer, loss, batch size and seeded order, so the cached
way gives the end-to-end way's history; both take Keras callbacks (TensorBoard,
BackupAndRestore, early stopping).

Example:
    >>> outcome = fit_on_features(model, dataset, config, phase=phase, callbacks=[EpochTimer()], class_weight=None)
"""

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Optional

import keras
import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from resnet_transfer._keras_compat import own_train_function, start_averages_at_weights, unbind_from_strategy
from resnet_transfer.config import RunConfig
from resnet_transfer.data.dataset import Dataset
from resnet_transfer.errors import ConfigError
from resnet_transfer.inference import predict_probabilities
from resnet_transfer.cache.extraction import predict_in_batches
from resnet_transfer.model.assembly import backbone_of, compile_model, feature_extractor, head_of, make_optimizer
from resnet_transfer.model.augmentation import augmenter
from resnet_transfer.model.heads import classifier_on_features
from resnet_transfer.training.backbone_pass import stored_features
from resnet_transfer.training.batches import (
    INFERENCE_BATCH_SIZE, ArrayBatches, EpochOrder, TensorBatches, class_weight_to_sample_weight, fits_in_memory,
)
from resnet_transfer.training.callbacks import EpochTimer, StepProgress
from resnet_transfer.training.checkpoints import Checkpoint, restore_optimizer
from resnet_transfer.training.mixing import batch_mixer, one_hot_labels
from resnet_transfer.training.distribution import distributed_batches, replicas_in_scope, trains_locally, worker_role
from resnet_transfer.verbosity import shows_progress

__all__ = [
    "FitOutcome", "Phase", "adopt_optimizer", "balanced_class_weight", "calibrates", "carry_optimizer_state", "choose_path",
    "compile_on_features", "fit", "fit_end_to_end",
    "fit_on_features", "int8_distance", "jit_compile_for",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Phase:
    """One phase of a run.

    Attributes:
        name: "head" or "fine-tune".
        epochs: its epochs.
        first_epoch: epochs of the phases before it (Keras's ``initial_epoch``).
        learning_rate: its optimizer's learning rate.
        augmentation: the augmentation layers it trains behind (None: none).
        unfreeze: for "fine-tune", what of the backbone it trains (``phases.unfreeze``).
        train_bn: for "fine-tune", whether the unfrozen BatchNormalization layers' scale and
            offset train too (their moving statistics never do).
    """

    name: str
    epochs: int
    first_epoch: int
    learning_rate: float
    augmentation: Optional[keras.Sequential] = None
    unfreeze: Optional[str] = None
    train_bn: bool = False


@dataclass
class FitOutcome:
    """What a phase gives back: Keras's history, seconds, test probabilities (when asked
    for; then also the validation split's, where the run calibrates), and the cache's figures."""

    history: dict
    train_seconds: float
    test_probabilities: Optional[np.ndarray]
    feature_cache: str
    backbone_seconds: Optional[float]
    extract_runtime: Optional[str] = None
    conversion_seconds: Optional[float] = None
    val_probabilities: Optional[np.ndarray] = None
    int8_extraction: Optional[dict] = None  # --extract-runtime openvino-int8: how far from float (int8_distance)


def balanced_class_weight(labels: np.ndarray, num_classes: int) -> dict:
    """scikit-learn's "balanced" weights, n_samples / (n_classes * count), for classes present."""
    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    return {int(label): float(weight) for label, weight in zip(present, weights) if label < num_classes}


def _loss_labels(labels: np.ndarray, config: RunConfig, num_classes: int) -> np.ndarray:
    # Keras's sparse cross-entropy has no label smoothing, and labels are mixed as one-hot rows.
    return keras.utils.to_categorical(labels, num_classes) if one_hot_labels(config.train) else labels


def _loss(config: RunConfig) -> dict:
    return {"label_smoothing": config.train.label_smoothing, "one_hot": one_hot_labels(config.train)}


def fit(model, inputs, labels, validation, *, config: RunConfig, phase: Phase, callbacks: list,
        class_weight: Optional[dict] = None, small_model: bool = False) -> dict:
    """Fits ``model`` for ``phase``'s epochs with the run's batch size and seeded order.

    ``validation`` is ``(inputs, labels)`` in the same space as ``inputs`` (images for
    the full model, features for the head). Epochs are numbered on from the phases
    before. ``small_model`` (a head on stored features): with its inputs in memory, and
    where ``distribution.trains_locally``, its steps run through
    ``TensorBatches.train_function``. Returns Keras's history dict ({} for 0 epochs).
    """
    if phase.epochs == 0:
        # (a resumed run whose phase had ended: its fit would have ended with the weights set to their average)
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and optimizer.built:
            optimizer.finalize_variable_values(model.trainable_weights)
        return {}
    keras.utils.set_random_seed(config.train.seed)
    num_classes = model.output_shape[-1]
    augment = augmenter(phase.augmentation)
    mix = batch_mixer(config.train, on_features=small_model)
    role = worker_role()
    if role is not None:
        batches, validation_batches, order = _cluster_batches(model, inputs, labels, validation, config=config,
                                                              phase=phase, class_weight=class_weight, transform=augment,
                                                              mix=mix, role=role)
        data, class_weight = batches, None  # class weights in the batches, as sample weights
    else:
        batches, validation_batches = _local_batches(inputs, labels, validation, config=config, phase=phase,
                                                     num_classes=num_classes, transform=augment, mix=mix,
                                                     class_weight=class_weight)
        order, data = EpochOrder(batches), batches
        if isinstance(batches, TensorBatches):
            class_weight = None  # in the batches, as sample weights
            data = batches.dataset
    own_steps = isinstance(batches, TensorBatches) and small_model and not model.run_eagerly and trains_locally()
    callbacks = [order, *([StepProgress()] if shows_progress() else []), *callbacks]
    for callback in callbacks:
        if isinstance(callback, EpochTimer):
            callback.phase = phase.name
    # shuffle=False: the batches' order is theirs alone. Keras's own shuffle of a PyDataset's batches draws from
    # Python's global random state, so an epoch's order would depend on the epochs run before it in the process,
    # and a resumed run would see other batch orders than the run it continues.
    steps = own_train_function(model, batches.train_function(model)) if own_steps else contextlib.nullcontext(False)
    with steps as own:
        if own:
            data = batches.step_counter
            logger.debug("%s phase steps: %d batches a call, gathered in this thread (TensorBatches.train_function)",
                         phase.name, model.steps_per_execution)
        history = model.fit(
            data, validation_data=validation_batches,
            initial_epoch=phase.first_epoch, epochs=phase.first_epoch + phase.epochs, callbacks=callbacks,
            class_weight=class_weight, verbose="auto" if shows_progress() else 0, shuffle=False,
        )
    return history.history


def _local_batches(inputs, labels, validation, *, config: RunConfig, phase: Phase, num_classes: int,
                   transform, mix, class_weight: Optional[dict]) -> tuple:
    """One process's input: its arrays held in memory when they fit (``batches.fits_in_memory``;
    ``class_weight`` then goes into the batches, as sample weights), else read batch by batch;
    the same batches either way."""
    weights = class_weight_to_sample_weight(labels, class_weight) if class_weight else None
    labels = _loss_labels(labels, config, num_classes)
    validation = (validation[0], _loss_labels(validation[1], config, num_classes))
    if transform or mix:
        in_memory, why = False, "augmented or mixed batch by batch"
    else:
        in_memory, why = fits_in_memory(inputs, labels, *validation)
    logger.debug("%s phase inputs: %s", phase.name, why)
    if in_memory:
        return (TensorBatches(inputs, labels, batch_size=config.train.batch_size, shuffle=True, seed=config.train.seed,
                              first_epoch=phase.first_epoch, sample_weight=weights),
                TensorBatches(*validation, batch_size=INFERENCE_BATCH_SIZE, prefetch=False).dataset)
    # Worker threads prepare the next batches while the model runs (same order); with
    # augmentation one thread, so that the seeded random changes come in a fixed order.
    return (ArrayBatches(inputs, labels, batch_size=config.train.batch_size, shuffle=True, seed=config.train.seed,
                         first_epoch=phase.first_epoch, transform=transform, mix=mix, workers=1 if transform else 2),
            ArrayBatches(*validation, batch_size=INFERENCE_BATCH_SIZE))


def _cluster_batches(model, inputs, labels, validation, *, config: RunConfig, phase: Phase, class_weight, transform,
                     mix, role) -> tuple:
    """A worker's input on a cluster: its replicas' pieces of every batch (the global
    batches of one process, in the same order), and the whole validation split (so that
    every worker's validation metrics, which Keras averages over the replicas, are the
    split's own)."""
    import tensorflow as tf

    num_classes = model.output_shape[-1]
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    local = replicas // role.count  # replicas of this worker (the same on every worker)
    weights = class_weight_to_sample_weight(labels, class_weight) if class_weight else None
    batches = ArrayBatches(inputs, _loss_labels(labels, config, num_classes), batch_size=config.train.batch_size,
                           shuffle=True, seed=config.train.seed, first_epoch=phase.first_epoch, transform=transform,
                           mix=mix, pieces=replicas, mine=range(role.index * local, (role.index + 1) * local),
                           sample_weight=weights)
    if len(batches) == 0:
        raise ConfigError(f"{len(labels)} training images cannot give each of the cluster's {replicas} replicas one; "
                          "use more images or fewer workers")
    validation_batches = ArrayBatches(validation[0], _loss_labels(validation[1], config, num_classes),
                                      batch_size=INFERENCE_BATCH_SIZE)
    unbind_from_strategy(model)
    return distributed_batches(batches), distributed_batches(validation_batches), EpochOrder(batches)


def steps_per_execution_for(config: RunConfig) -> int:
    """``steps_per_execution``, but 1 inside a strategy with several replicas: Keras's loop
    over several steps per call fails there ("You must feed a value for placeholder
    tensor", keras-team/keras#19246, open)."""
    if replicas_in_scope() > 1 and config.train.steps_per_execution > 1:
        logger.info("steps_per_execution 1 instead of %d: several steps per call fail under a strategy with several "
                    "replicas (keras-team/keras#19246)", config.train.steps_per_execution)
        return 1
    return config.train.steps_per_execution


def choose_path(config: RunConfig, model: keras.Model, phase: Optional[Phase] = None) -> tuple:
    """Whether a phase can train the head on stored features, and why (for the log)."""
    if config.train.feature_cache == "off":
        return False, "--no-cache was given: the backbone runs in every epoch (the article's way)"
    if backbone_of(model).trainable_weights:
        return False, "the backbone has trainable weights: its outputs change every step"
    if phase is not None and phase.augmentation is not None:
        return False, ("augmentation changes the pixels in every epoch, so the backbone's outputs cannot be stored "
                       "(--augment-phase fine-tune keeps the head phase on cached features)")
    return True, "the backbone is frozen and no augmentation is asked for: it runs once, the head trains on stored features"


def jit_compile_for(config: RunConfig, *, measured_faster: bool):
    """Keras's ``jit_compile`` for a phase.

    "auto" turns XLA on where it was measured faster on CPU (benchmarks/README.md): the
    head's small steps on stored features, and the fine-tune phase (2.6-3.8x); a frozen
    backbone's forward pass end to end is 3.9x slower under XLA and is left to Keras.
    On the torch backend jit_compile means torch.compile, which is left to Keras too, and
    so is a strategy with several replicas (measured on one device; over logical CPU
    devices XLA cannot reach the other replicas' variables, and Keras's own "auto" keeps
    XLA off on a machine without accelerators).
    """
    if config.train.jit_compile != "auto":
        return config.train.jit_compile == "on"
    if replicas_in_scope() > 1:
        return "auto"
    return True if measured_faster and keras.backend.backend() in ("tensorflow", "jax") else "auto"


def fit_on_features(model, dataset: Dataset, config: RunConfig, *, phase: Phase, callbacks: list, class_weight,
                    predict_test: bool = True, checkpoint: Optional[Checkpoint] = None) -> FitOutcome:
    """Runs the backbone once (or reads the cache), fits the head on the pooled features,
    and compiles ``model`` with the head's optimizer and its state (``checkpoint``: the
    optimizer goes on from a resumed run's state)."""
    splits, status, backbone = stored_features(model, dataset, config)
    # The head's layers without its pooling, shared with the model: training it trains the head.
    trainer = classifier_on_features(head_of(model))
    compile_on_features(trainer, config, phase.learning_rate)
    if checkpoint is not None:
        restore_optimizer(trainer.optimizer, trainer.trainable_variables, checkpoint)
    started = time.perf_counter()
    history = fit(trainer, splits["train"], dataset.y_train, (splits["val"], dataset.y_val),
                  config=config, phase=phase, callbacks=callbacks, class_weight=class_weight, small_model=True)
    train_seconds = time.perf_counter() - started
    probabilities = predict_probabilities(trainer, splits["test"]) if predict_test else None
    validation = predict_probabilities(trainer, splits["val"]) if predict_test and calibrates(config) else None
    distance = int8_distance(model, trainer, splits["val"], dataset) if config.train.extract_runtime == "openvino-int8" \
        else None
    adopt_optimizer(model, trainer.optimizer, config)
    return FitOutcome(history, train_seconds, probabilities, status, backbone.seconds, backbone.runtime,
                      backbone.conversion_seconds, val_probabilities=validation, int8_extraction=distance)


def int8_distance(model, trainer, int8_features: np.ndarray, dataset: Dataset) -> dict:
    """How far ``--extract-runtime openvino-int8`` is from float on the validation split: the
    largest difference of its features from Keras's (relative to their scale, as the converted
    backbones' check measures it), and the head's validation accuracy on each (one Keras pass
    over the validation images)."""
    reference = predict_in_batches(feature_extractor(model), np.asarray(dataset.x_val), INFERENCE_BATCH_SIZE)
    accuracy = {name: float(np.mean(np.argmax(predict_probabilities(trainer, features), axis=-1) == dataset.y_val))
                for name, features in (("int8", int8_features), ("float", reference))}
    scale = float(np.max(np.abs(reference))) or 1.0
    record = {"images": int(len(dataset.y_val)),
              "max_relative_feature_difference": float(np.max(np.abs(np.asarray(int8_features) - reference))) / scale,
              "val_accuracy_int8_features": accuracy["int8"], "val_accuracy_float_features": accuracy["float"],
              "val_accuracy_points_from_float": 100 * (accuracy["int8"] - accuracy["float"])}
    logger.info("INT8 extraction: validation accuracy %.4f on its features, %.4f on Keras's float features "
                "(%+.2f points); features within %.3g of the scale", accuracy["int8"], accuracy["float"],
                record["val_accuracy_points_from_float"], record["max_relative_feature_difference"])
    return record


def compile_on_features(trainer: keras.Model, config: RunConfig, learning_rate: float) -> None:
    """Compiles a head on features (``heads.classifier_on_features``) as the head phase trains it."""
    compile_model(trainer, learning_rate=learning_rate, optimizer=run_optimizer(config, learning_rate),
                  **_loss(config), steps_per_execution=steps_per_execution_for(config),
                  jit_compile=jit_compile_for(config, measured_faster=True), run_eagerly=config.train.run_eagerly)


def adopt_optimizer(model: keras.Model, source: keras.optimizers.Optimizer, config: RunConfig) -> None:
    """Compiles ``model`` with the run's plain optimizer (``run_optimizer``) holding ``source``'s
    state and learning rate: after a head phase on features (``source``: the head's optimizer;
    the full model's trainable variables are the head's, so every optimizer variable carries
    over), and after a phase with ``--lr-decay``, whose optimizer class is ours, so that the
    saved model loads in plain Keras. An optimizer that never ran (0 epochs: never built)
    leaves the model a fresh one."""
    learning_rate = float(keras.ops.convert_to_numpy(source.learning_rate))  # a MirroredVariable too
    compile_model(model, learning_rate=0.0, optimizer=run_optimizer(config, learning_rate), **_loss(config))
    if source.built:
        model.optimizer.build(model.trainable_variables)
        carry_optimizer_state(source, model.optimizer, learning_rate=False, variables=model.trainable_variables)


def run_optimizer(config: RunConfig, learning_rate: float) -> keras.optimizers.Optimizer:
    """A phase's optimizer with the run's weight decay and ``--ema`` (``make_optimizer``)."""
    return make_optimizer(learning_rate=learning_rate, weight_decay=config.train.weight_decay,
                          ema_momentum=ema_momentum(config))


def ema_momentum(config: RunConfig) -> Optional[float]:
    """``--ema-momentum`` where ``--ema`` is on, else None (no average)."""
    return config.train.ema_momentum if config.train.ema else None


def carry_optimizer_state(source: keras.optimizers.Optimizer, target: keras.optimizers.Optimizer, *,
                          learning_rate: bool, variables: Optional[list] = None) -> int:
    """Copies every optimizer variable that ``target`` shares with ``source`` by name.

    Optimizer variables are named after the model variable they belong to (Keras:
    ``{variable.path}_{slot}``), so Adam's moments of the head carry over from the
    head phase to the fine-tune phase, whose optimizer also trains the backbone.
    The step count always carries over; the learning rate only if ``learning_rate``. With
    ``--ema``, the averages of ``variables`` (``target``'s) that ``source`` did not have start
    at the variables' values (``_keras_compat.start_averages_at_weights``): the carried step
    count would otherwise start them at zero.

    Returns:
        How many variables were copied.
    """
    values = {variable.name: variable for variable in source.variables}
    copied = set()
    for variable in target.variables:
        if variable.name == "learning_rate" and not learning_rate:
            continue
        if variable.name in values and tuple(values[variable.name].shape) == tuple(variable.shape):
            variable.assign(values[variable.name])
            copied.add(variable.name)
    start_averages_at_weights(target, variables or [], keep=copied)
    return len(copied)


def fit_end_to_end(model, dataset: Dataset, config: RunConfig, *, phase: Phase, callbacks: list, class_weight,
                   optimizer: Optional[keras.optimizers.Optimizer] = None, predict_test: bool = True,
                   checkpoint: Optional[Checkpoint] = None) -> FitOutcome:
    """Fits the whole model on images (augmented by ``phase.augmentation``, if any).

    ``optimizer`` (built on the model's trainable variables) is used as given: the
    fine-tune phase passes one with the head phase's state. ``checkpoint``: the
    optimizer goes on from a resumed run's state.
    """
    jit_compile = jit_compile_for(config, measured_faster=bool(backbone_of(model).trainable_weights))
    compile_model(model, learning_rate=phase.learning_rate, optimizer=optimizer or run_optimizer(config, phase.learning_rate),
                  **_loss(config), steps_per_execution=steps_per_execution_for(config),
                  jit_compile=jit_compile, run_eagerly=config.train.run_eagerly)
    if checkpoint is not None:
        restore_optimizer(model.optimizer, model.trainable_variables, checkpoint)
    started = time.perf_counter()
    history = fit(model, dataset.x_train, dataset.y_train, (dataset.x_val, dataset.y_val),
                  config=config, phase=phase, callbacks=callbacks, class_weight=class_weight)
    train_seconds = time.perf_counter() - started
    probabilities = predict_probabilities(model, dataset.x_test) if predict_test else None
    validation = predict_probabilities(model, dataset.x_val) if predict_test and calibrates(config) else None
    return FitOutcome(history, train_seconds, probabilities, "off", None, val_probabilities=validation)


def calibrates(config: RunConfig) -> bool:
    """Whether the run calibrates its probabilities after training (``--calibrate``)."""
    return config.train.calibrate != "none"
