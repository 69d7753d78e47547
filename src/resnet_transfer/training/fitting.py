"""Fitting: one training phase, in one of two ways, with ``keras.Model.fit``.

- on features (a head phase with a frozen backbone and no augmentation): the backbone
  runs once over every image (``features.cached_features``), pooled by the head's
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
from typing import Callable, Optional

import keras
import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from resnet_transfer._keras_compat import own_train_function, unbind_from_strategy
from resnet_transfer.config import RunConfig
from resnet_transfer.data.dataset import Dataset
from resnet_transfer.errors import ConfigError
from resnet_transfer.model.assembly import backbone_of, compile_model, feature_extractor, head_of, make_optimizer
from resnet_transfer.model.augmentation import augmenter
from resnet_transfer.model.heads import classifier_on_features
from resnet_transfer.model.weights import weights_identity
from resnet_transfer.training.adaptation import adapted_weights_identity
from resnet_transfer.training.batches import (
    INFERENCE_BATCH_SIZE, ArrayBatches, EpochOrder, TensorBatches, class_weight_to_sample_weight, fits_in_memory,
    predict_probabilities,
)
from resnet_transfer.training.checkpoints import Checkpoint, restore_optimizer
from resnet_transfer.training.distribution import (
    barrier, distributed_batches, replicas_in_scope, trains_locally, worker_role,
)
from resnet_transfer.training.features import FeatureCache, FeatureKey, cached_features
from resnet_transfer.training.runtimes import choose_runtime, keyed
from resnet_transfer.verbosity import shows_progress

__all__ = [
    "BackbonePass", "EpochTimer", "FitOutcome", "Phase", "balanced_class_weight", "choose_path", "fit", "fit_on_features",
    "fit_end_to_end", "carry_optimizer_state", "stored_features", "jit_compile_for", "StepProgress",
]

logger = logging.getLogger(__name__)


class EpochTimer(keras.callbacks.Callback):
    """Records every finished epoch: its wall-clock seconds in ``seconds``, its metrics and
    phase in ``history`` (Keras's names, and "phase"; ``fit`` sets ``phase``).

    Args:
        write: called as ``write(history, seconds)`` after every epoch (``Run.write_history``),
            so that a run killed in its tenth epoch leaves nine rows of history.csv.
        history, seconds: the epochs before (a resumed run's).
    """

    def __init__(self, write: Optional[Callable[[dict, list], None]] = None, *, history: Optional[dict] = None,
                 seconds: Optional[list] = None):
        super().__init__()
        self.seconds = list(seconds or [])
        self.history = {name: list(values) for name, values in (history or {}).items()}
        self.phase = "head"
        self._write = write

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._started)
        for name, value in (logs or {}).items():
            self.history.setdefault(name, []).append(float(value))
        self.history.setdefault("phase", []).append(self.phase)
        if self._write is not None:
            self._write(self.history, self.seconds)


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


class StepProgress(keras.callbacks.ProgbarLogger):
    """Keras's progress bar with its count held to the epoch's steps. With
    ``steps_per_execution`` Keras reports the last step of a call as the batch that ended,
    and a call that runs past the epoch's end reports a step the epoch does not have, so the
    bar showed "16/10" and negative times left (keras-team/keras#20861)."""

    def _held(self, batch: int) -> int:
        return batch if self.target is None else min(batch, self.target - 1)

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(self._held(batch), logs)

    def on_test_batch_end(self, batch, logs=None):
        super().on_test_batch_end(self._held(batch), logs)


@dataclass
class FitOutcome:
    """What a phase gives back: Keras's history, seconds, test probabilities (when asked
    for), and the cache's figures."""

    history: dict
    train_seconds: float
    test_probabilities: Optional[np.ndarray]
    feature_cache: str
    backbone_seconds: Optional[float]
    extract_runtime: Optional[str] = None
    conversion_seconds: Optional[float] = None


def balanced_class_weight(labels: np.ndarray, num_classes: int) -> dict:
    """scikit-learn's "balanced" weights, n_samples / (n_classes * count), for classes present."""
    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    return {int(label): float(weight) for label, weight in zip(present, weights) if label < num_classes}


def _loss_labels(labels: np.ndarray, config: RunConfig, num_classes: int) -> np.ndarray:
    # Keras's sparse cross-entropy has no label smoothing; the categorical one needs one-hot labels.
    return keras.utils.to_categorical(labels, num_classes) if config.train.label_smoothing > 0 else labels


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
        return {}
    keras.utils.set_random_seed(config.train.seed)
    num_classes = model.output_shape[-1]
    augment = augmenter(phase.augmentation)
    role = worker_role()
    if role is not None:
        batches, validation_batches, order = _cluster_batches(model, inputs, labels, validation, config=config,
                                                              phase=phase, class_weight=class_weight, transform=augment,
                                                              role=role)
        data, class_weight = batches, None  # class weights in the batches, as sample weights
    else:
        batches, validation_batches = _local_batches(inputs, labels, validation, config=config, phase=phase,
                                                     num_classes=num_classes, transform=augment,
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
                   transform, class_weight: Optional[dict]) -> tuple:
    """One process's input: its arrays held in memory when they fit (``batches.fits_in_memory``;
    ``class_weight`` then goes into the batches, as sample weights), else read batch by batch;
    the same batches either way."""
    weights = class_weight_to_sample_weight(labels, class_weight) if class_weight else None
    labels = _loss_labels(labels, config, num_classes)
    validation = (validation[0], _loss_labels(validation[1], config, num_classes))
    in_memory, why = (False, "augmented batch by batch") if transform else fits_in_memory(inputs, labels, *validation)
    logger.debug("%s phase inputs: %s", phase.name, why)
    if in_memory:
        return (TensorBatches(inputs, labels, batch_size=config.train.batch_size, shuffle=True, seed=config.train.seed,
                              first_epoch=phase.first_epoch, sample_weight=weights),
                TensorBatches(*validation, batch_size=INFERENCE_BATCH_SIZE, prefetch=False).dataset)
    # Worker threads prepare the next batches while the model runs (same order); with
    # augmentation one thread, so that the seeded random changes come in a fixed order.
    return (ArrayBatches(inputs, labels, batch_size=config.train.batch_size, shuffle=True, seed=config.train.seed,
                         first_epoch=phase.first_epoch, transform=transform, workers=1 if transform else 2),
            ArrayBatches(*validation, batch_size=INFERENCE_BATCH_SIZE))


def _cluster_batches(model, inputs, labels, validation, *, config: RunConfig, phase: Phase, class_weight, transform,
                     role) -> tuple:
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
                           pieces=replicas, mine=range(role.index * local, (role.index + 1) * local),
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


@dataclass
class BackbonePass:
    """The backbone's pass over the images of a phase's splits.

    Attributes:
        seconds: the pass itself (0 when every split was in the cache).
        runtime: what ran it ("keras", "openvino", "tflite", "onnx"; ``runtimes.choose_runtime``); None
            when every split was in the cache.
        conversion_seconds: converting the backbone and checking it in this process (0: a
            converted backbone was reused; None: none was converted).
    """

    seconds: float = 0.0
    runtime: Optional[str] = None
    conversion_seconds: Optional[float] = None

    def __add__(self, other: "BackbonePass") -> "BackbonePass":
        conversion = [value for value in (self.conversion_seconds, other.conversion_seconds) if value is not None]
        return BackbonePass(self.seconds + other.seconds, self.runtime or other.runtime,
                            sum(conversion) if conversion else None)


def stored_features(model, dataset: Dataset, config: RunConfig, *, splits: tuple = ("train", "val", "test"),
                    shard: Optional[tuple] = None) -> tuple:
    """The pooled backbone features of ``splits``, from the cache or computed and stored
    (``shard`` (i, n): only that shard's chunks, see ``features.cached_features``), in the
    runtime ``--extract-runtime`` picks (``runtimes.choose_runtime``).

    On a cluster, every worker computes its shard's chunks; once all have, the chief
    assembles the entries, and then the others read them (from a cache folder every
    worker sees; where it is not shared, a worker computes what it cannot find).

    Returns:
        ({split: read-only array, or None for a split whose other shards have not finished},
        "hit" if every split was cached, "partial" if a split is not complete, else "miss";
        a ``BackbonePass``).
    """
    role = worker_role()
    if role is None or shard is not None:
        return _stored_features(model, dataset, config, splits=splits, shard=shard)
    _, _, computed = _stored_features(model, dataset, config, splits=splits, shard=(role.index, role.count),
                                      assemble=False)
    barrier()
    if role.is_chief:
        features_of, status, more = _stored_features(model, dataset, config, splits=splits)
    barrier()
    if not role.is_chief:
        features_of, status, more = _stored_features(model, dataset, config, splits=splits)
    return features_of, status, computed + more


def _stored_entry(cache: FeatureCache, key: FeatureKey, setting: str):
    """A split's complete cache entry that ``--extract-runtime setting`` may use: its own
    runtime's, and for "auto" also a converted backbone's or Keras's (all within 1e-5)."""
    runtimes = ("openvino", "tflite", "onnx", "keras") if setting == "auto" else (setting,)
    for runtime in runtimes:
        features = cache.load(keyed(key, runtime))
        if features is not None:
            return features, keyed(key, runtime)
    return None, None


def _stored_features(model, dataset: Dataset, config: RunConfig, *, splits: tuple, shard: Optional[tuple] = None,
                     assemble: bool = True) -> tuple:
    pooling = _pooling_of(model)
    cache = FeatureCache(config.train.cache_dir)
    extractor = feature_extractor(model)
    identity = adapted_weights_identity(weights_identity(config.model.backbone, config.model.weights, config.train.seed),
                                        dataset.x_train, config.model, seed=config.train.seed)
    keys, stored = {}, {}
    for split in splits:
        keys[split] = FeatureKey.create(
            backbone=config.model.backbone, weights=identity, preprocess=config.model.preprocess, pooling=pooling,
            images=getattr(dataset, f"x_{split}"), dtype=config.train.cache_dtype, feature_layer=config.model.feature_layer,
            precision=backbone_of(model).dtype_policy.compute_dtype,
        )
        stored[split] = _stored_entry(cache, keys[split], config.train.extract_runtime)
    pending = [getattr(dataset, f"x_{split}") for split in splits if stored[split][0] is None]
    choice = choose_runtime(config.train.extract_runtime, extractor, cache=cache, key=keys[splits[0]], pending=pending)
    if pending:
        logger.info("features: the backbone runs in %s", choice.runtime)
        logger.debug("features: %s, because %s", choice.runtime, choice.reason)
    features_of, statuses = {}, []
    backbone = BackbonePass(runtime=choice.runtime if pending else None, conversion_seconds=choice.conversion_seconds)
    for split in splits:
        images = getattr(dataset, f"x_{split}")
        features, key = stored[split]
        if features is not None:
            logger.info("features of %s split (%d images): cache hit, the backbone is skipped (%s)", split, len(images),
                        cache.entry_path(key))
            features_of[split] = features
            statuses.append("hit")
            continue
        key = keyed(keys[split], choice.runtime)
        features, status, seconds = cached_features(choice.runner, images, key=key, cache=cache,
                                                    batch_size=INFERENCE_BATCH_SIZE, shard=shard, assemble=assemble)
        if status == "partial":
            logger.info("features of %s split (%d images): shard %d/%d computed in %.1f s; other shards' chunks are "
                        "still missing (%s)", split, len(images), shard[0], shard[1], seconds, cache.chunks_path(key))
        elif status == "hit":
            logger.info("features of %s split (%d images): cache hit, the backbone is skipped (%s)", split, len(images), cache.entry_path(key))
        else:
            logger.info("features of %s split (%d images): computed in %s and stored in %.1f s (%s)", split,
                        len(images), choice.runtime, seconds, cache.entry_path(key))
        features_of[split] = features
        backbone.seconds += seconds
        statuses.append(status)
    overall = "partial" if "partial" in statuses else "hit" if all(s == "hit" for s in statuses) else "miss"
    return features_of, overall, backbone


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


def _pooling_of(model: keras.Model) -> str:
    return {"Flatten": "flatten", "GlobalAveragePooling2D": "avg", "GlobalMaxPooling2D": "max"}[
        type(head_of(model).get_layer("pooling")).__name__]


def fit_on_features(model, dataset: Dataset, config: RunConfig, *, phase: Phase, callbacks: list, class_weight,
                    predict_test: bool = True, checkpoint: Optional[Checkpoint] = None) -> FitOutcome:
    """Runs the backbone once (or reads the cache), fits the head on the pooled features,
    and compiles ``model`` with the head's optimizer and its state (``checkpoint``: the
    optimizer goes on from a resumed run's state)."""
    splits, status, backbone = stored_features(model, dataset, config)
    # The head's layers without its pooling, shared with the model: training it trains the head.
    trainer = classifier_on_features(head_of(model))
    compile_model(trainer, learning_rate=phase.learning_rate, weight_decay=config.train.weight_decay,
                  label_smoothing=config.train.label_smoothing, steps_per_execution=steps_per_execution_for(config),
                  jit_compile=jit_compile_for(config, measured_faster=True), run_eagerly=config.train.run_eagerly)
    if checkpoint is not None:
        restore_optimizer(trainer.optimizer, trainer.trainable_variables, checkpoint)
    started = time.perf_counter()
    history = fit(trainer, splits["train"], dataset.y_train, (splits["val"], dataset.y_val),
                  config=config, phase=phase, callbacks=callbacks, class_weight=class_weight, small_model=True)
    train_seconds = time.perf_counter() - started
    probabilities = predict_probabilities(trainer, splits["test"]) if predict_test else None
    _adopt_optimizer(model, trainer, config)
    return FitOutcome(history, train_seconds, probabilities, status, backbone.seconds, backbone.runtime,
                      backbone.conversion_seconds)


def _adopt_optimizer(model: keras.Model, trainer: keras.Model, config: RunConfig) -> None:
    """Compiles ``model`` with a new optimizer holding the trained head's optimizer state.

    The full model's trainable variables are the head's, so every optimizer variable
    carries over. With 0 epochs the head's optimizer never ran (nor was built), and
    the model keeps a fresh one.
    """
    learning_rate = float(keras.ops.convert_to_numpy(trainer.optimizer.learning_rate))  # a MirroredVariable too
    optimizer = make_optimizer(learning_rate=learning_rate, weight_decay=config.train.weight_decay)
    compile_model(model, learning_rate=0.0, optimizer=optimizer, label_smoothing=config.train.label_smoothing)
    if trainer.optimizer.built:
        model.optimizer.build(model.trainable_variables)
        carry_optimizer_state(trainer.optimizer, model.optimizer, learning_rate=False)


def carry_optimizer_state(source: keras.optimizers.Optimizer, target: keras.optimizers.Optimizer, *,
                          learning_rate: bool) -> int:
    """Copies every optimizer variable that ``target`` shares with ``source`` by name.

    Optimizer variables are named after the model variable they belong to (Keras:
    ``{variable.path}_{slot}``), so Adam's moments of the head carry over from the
    head phase to the fine-tune phase, whose optimizer also trains the backbone.
    The step count always carries over; the learning rate only if ``learning_rate``.

    Returns:
        How many variables were copied.
    """
    values = {variable.name: variable for variable in source.variables}
    copied = 0
    for variable in target.variables:
        if variable.name == "learning_rate" and not learning_rate:
            continue
        if variable.name in values and tuple(values[variable.name].shape) == tuple(variable.shape):
            variable.assign(values[variable.name])
            copied += 1
    return copied


def fit_end_to_end(model, dataset: Dataset, config: RunConfig, *, phase: Phase, callbacks: list, class_weight,
                   optimizer: Optional[keras.optimizers.Optimizer] = None, predict_test: bool = True,
                   checkpoint: Optional[Checkpoint] = None) -> FitOutcome:
    """Fits the whole model on images (augmented by ``phase.augmentation``, if any).

    ``optimizer`` (built on the model's trainable variables) is used as given: the
    fine-tune phase passes one with the head phase's state. ``checkpoint``: the
    optimizer goes on from a resumed run's state.
    """
    jit_compile = jit_compile_for(config, measured_faster=bool(backbone_of(model).trainable_weights))
    compile_model(model, learning_rate=phase.learning_rate, optimizer=optimizer, weight_decay=config.train.weight_decay,
                  label_smoothing=config.train.label_smoothing, steps_per_execution=steps_per_execution_for(config),
                  jit_compile=jit_compile, run_eagerly=config.train.run_eagerly)
    if checkpoint is not None:
        restore_optimizer(model.optimizer, model.trainable_variables, checkpoint)
    started = time.perf_counter()
    history = fit(model, dataset.x_train, dataset.y_train, (dataset.x_val, dataset.y_val),
                  config=config, phase=phase, callbacks=callbacks, class_weight=class_weight)
    train_seconds = time.perf_counter() - started
    probabilities = predict_probabilities(model, dataset.x_test) if predict_test else None
    return FitOutcome(history, train_seconds, probabilities, "off", None)
