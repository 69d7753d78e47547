"""Fitting: the two ways to train the head of a frozen backbone, with the same head,
optimizer, loss, batch size, epochs and shuffling:

- on features (default when the backbone is frozen): the backbone runs once over every
  image (``features.cached_features``), and the head is fit on stored features;
- end to end (``feature_cache="off"``): the article's way, the whole model is fit and
  the frozen backbone runs again in every epoch.

Both use ``keras.Model.fit`` with Keras callbacks, so checkpointing
(``keras.callbacks.BackupAndRestore``), TensorBoard or early stopping plug in.

Example:
    >>> outcome = fit_on_features(model, dataset, config, callbacks=[EpochTimer()], class_weight=None)
"""

import logging
import time
from dataclasses import dataclass
from typing import Optional

import keras
import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from resnet_transfer.config import RunConfig
from resnet_transfer.data.dataset import Dataset
from resnet_transfer.model.assembly import backbone_of, compile_model, feature_extractor, head_of
from resnet_transfer.model.weights import weights_identity
from resnet_transfer.training.batches import INFERENCE_BATCH_SIZE, ArrayBatches, predict_probabilities
from resnet_transfer.training.features import FeatureCache, FeatureKey, cached_features

__all__ = ["EpochTimer", "FitOutcome", "balanced_class_weight", "choose_path", "fit", "fit_on_features", "fit_end_to_end"]

logger = logging.getLogger(__name__)


class EpochTimer(keras.callbacks.Callback):
    """Records the wall-clock seconds of every finished epoch in ``seconds``."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._started)


@dataclass
class FitOutcome:
    """What a way of fitting gives back: Keras's history, seconds, test probabilities, cache figures."""

    history: dict
    train_seconds: float
    test_probabilities: np.ndarray
    feature_cache: str
    backbone_seconds: Optional[float]


def balanced_class_weight(labels: np.ndarray, num_classes: int) -> dict:
    """scikit-learn's "balanced" weights, n_samples / (n_classes * count), for classes present."""
    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    return {int(label): float(weight) for label, weight in zip(present, weights) if label < num_classes}


def fit(model, inputs, labels, validation, *, config: RunConfig, callbacks: list, class_weight: Optional[dict] = None) -> dict:
    """Fits ``model`` on (inputs, labels) with the run's epochs, batch size and shuffling.

    ``validation`` is ``(inputs, labels)`` in the same space as ``inputs`` (images for
    the full model, features for the head). Returns Keras's history dict ({} for 0 epochs).
    """
    if config.train.epochs == 0:
        return {}
    keras.utils.set_random_seed(config.train.seed)
    # Two worker threads prepare the next batches while the model runs (same order).
    batches = ArrayBatches(inputs, labels, batch_size=config.train.batch_size, shuffle=True, seed=config.train.seed, workers=2)
    validation_batches = ArrayBatches(*validation, batch_size=INFERENCE_BATCH_SIZE)
    history = model.fit(
        batches, validation_data=validation_batches, epochs=config.train.epochs, callbacks=callbacks,
        class_weight=class_weight, verbose="auto",
    )
    return history.history


def choose_path(config: RunConfig, model: keras.Model) -> tuple:
    """Whether the head can train on stored features, and why (for the log)."""
    if config.train.feature_cache == "off":
        return False, "--no-cache was given: the backbone runs in every epoch (the article's way)"
    if backbone_of(model).trainable_weights:
        return False, "the backbone has trainable weights: its outputs change every step"
    return True, "the backbone is frozen and no augmentation is asked for: it runs once, the head trains on stored features"


def _features(model, dataset: Dataset, config: RunConfig) -> tuple:
    cache = FeatureCache(config.train.cache_dir)
    extractor = feature_extractor(model)
    identity = weights_identity(config.model.backbone, config.model.weights, config.train.seed)
    splits, statuses, backbone_seconds = {}, [], 0.0
    for split in ("train", "val", "test"):
        images = getattr(dataset, f"x_{split}")
        key = FeatureKey.create(
            backbone=config.model.backbone, weights=identity, preprocess=config.model.preprocess,
            images=images, dtype=config.train.cache_dtype,
        )
        features, status, seconds = cached_features(extractor, images, key=key, cache=cache, batch_size=INFERENCE_BATCH_SIZE)
        if status == "hit":
            logger.info("features of %s split (%d images): cache hit, the backbone is skipped (%s)", split, len(images), cache.entry_path(key))
        else:
            logger.info("features of %s split (%d images): computed and stored in %.1f s (%s)", split, len(images), seconds, cache.entry_path(key))
        splits[split], backbone_seconds = features, backbone_seconds + seconds
        statuses.append(status)
    return splits, ("hit" if all(s == "hit" for s in statuses) else "miss"), backbone_seconds


def _jit_compile():
    # XLA makes the small head's steps cheaper (benchmarks/head_training.py); on the torch
    # backend jit_compile means torch.compile, which is left to Keras's "auto".
    return True if keras.backend.backend() in ("tensorflow", "jax") else "auto"


def fit_on_features(model, dataset: Dataset, config: RunConfig, *, callbacks: list, class_weight) -> FitOutcome:
    """Runs the backbone once (or reads the cache), fits the head on the features and
    puts the trained head, with its optimizer state, back into ``model``."""
    splits, status, backbone_seconds = _features(model, dataset, config)
    # The head is trained as a copy (with the same initial weights), so the saved full model
    # holds one optimizer, at its top level, rather than a second one nested in the head.
    trainer = keras.models.clone_model(head_of(model))
    trainer.set_weights(head_of(model).get_weights())
    compile_model(trainer, learning_rate=config.train.learning_rate, steps_per_execution=config.train.steps_per_execution,
                  jit_compile=_jit_compile())
    started = time.perf_counter()
    history = fit(trainer, splits["train"], dataset.y_train, (splits["val"], dataset.y_val),
                  config=config, callbacks=callbacks, class_weight=class_weight)
    train_seconds = time.perf_counter() - started
    probabilities = predict_probabilities(trainer, splits["test"])
    head_of(model).set_weights(trainer.get_weights())
    _adopt_optimizer(model, trainer, learning_rate=config.train.learning_rate)
    return FitOutcome(history, train_seconds, probabilities, status, backbone_seconds)


def _adopt_optimizer(model: keras.Model, trainer: keras.Model, *, learning_rate: float) -> None:
    """Compiles ``model`` with an optimizer holding the trained head's optimizer state.

    The full model's trainable variables are the head's, in the same order, so Adam's
    moments carry over one to one. With 0 epochs the head's optimizer never ran (nor
    was built), and the model keeps a fresh one.
    """
    compile_model(model, learning_rate=learning_rate)
    if not trainer.optimizer.built:
        return
    model.optimizer.build(model.trainable_variables)
    for target, source in zip(model.optimizer.variables, trainer.optimizer.variables, strict=True):
        target.assign(source)


def fit_end_to_end(model, dataset: Dataset, config: RunConfig, *, callbacks: list, class_weight) -> FitOutcome:
    """Fits the whole model on images: the frozen backbone runs in every epoch."""
    compile_model(model, learning_rate=config.train.learning_rate, steps_per_execution=config.train.steps_per_execution)
    started = time.perf_counter()
    history = fit(model, dataset.x_train, dataset.y_train, (dataset.x_val, dataset.y_val),
                  config=config, callbacks=callbacks, class_weight=class_weight)
    train_seconds = time.perf_counter() - started
    probabilities = predict_probabilities(model, dataset.x_test)
    return FitOutcome(history, train_seconds, probabilities, "off", None)
