"""Training: the ``train`` verb, from a ``RunConfig`` to a finished run directory.

Two ways to train the head of a frozen backbone, with the same head, optimizer,
loss, batch size, epochs and shuffling:

- cached (default when the backbone is frozen): the backbone runs once over every
  image (``features.cached_features``), and the head is fit on stored features;
- end-to-end (``feature_cache="off"``): the article's way, the whole model is fit
  and the frozen backbone runs again in every epoch.

Both use ``keras.Model.fit`` with Keras callbacks, so checkpointing
(``keras.callbacks.BackupAndRestore``), TensorBoard or early stopping plug in.

Example:
    >>> config = RunConfig.from_dict({"model": {"weights": "none"},
    ...                               "data": {"limit": 512, "val_size": 128, "test_limit": 256},
    ...                               "train": {"epochs": 2}})
    >>> result = train(config)
    >>> result.metrics["test_accuracy"]
"""

import importlib.util
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Optional

import keras
import numpy as np

from resnet_transfer.backbones import fetch_weights, weights_identity
from resnet_transfer.config import BUILTIN_DATA, RunConfig
from resnet_transfer.data import Dataset, load_dataset
from resnet_transfer.errors import ConfigError
from resnet_transfer.evaluation import plot_curves
from resnet_transfer.features import FeatureCache, FeatureKey, cached_features
from resnet_transfer.files import atomic_path
from resnet_transfer.model import backbone_of, build_model, compile_model, feature_extractor, head_of
from resnet_transfer.report import compute_test_metrics, write_report
from resnet_transfer.runs import (
    check_run_dir_free,
    create_run_dir,
    default_run_dir,
    environment_versions,
    write_config,
    write_history,
    write_labels,
    write_metrics,
    write_skipped,
)

__all__ = ["ArrayBatches", "EpochTimer", "RunResult", "train", "fit", "predict_probabilities", "balanced_class_weight"]

logger = logging.getLogger(__name__)

INFERENCE_BATCH_SIZE = 256


class ArrayBatches(keras.utils.PyDataset):
    """Batches of (inputs, labels) from arrays or memory maps, reshuffled every epoch.

    The order of epoch ``e`` depends only on ``seed`` and ``e``, so the cached and the
    end-to-end ways see the same batches. Rows of a batch are read in ascending
    order, which keeps reads from a memory map sequential.

    Args:
        inputs: images or features, N x ...; read lazily batch by batch.
        labels: N integer labels.
        batch_size: rows per batch.
        shuffle: reshuffle at the start of every epoch.
        seed: the shuffling seed.
    """

    def __init__(self, inputs, labels, *, batch_size: int, shuffle: bool = False, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if len(inputs) != len(labels):
            raise ValueError(f"inputs and labels differ in length: {len(inputs)} != {len(labels)}")
        self.inputs, self.labels = inputs, np.asarray(labels)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epoch = 0
        self.order = self._order()

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.labels))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.labels))

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index: int):
        rows = np.sort(self.order[index * self.batch_size : (index + 1) * self.batch_size])
        return np.asarray(self.inputs[rows], dtype="float32"), self.labels[rows]

    def on_epoch_end(self):
        self.epoch += 1
        self.order = self._order()


class EpochTimer(keras.callbacks.Callback):
    """Records the wall-clock seconds of every epoch in ``seconds``."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._started)


@dataclass
class RunResult:
    """What ``train`` produced: the run folder, the trained model, history and metrics."""

    run_dir: str
    model: keras.Model
    history: dict
    metrics: dict


def balanced_class_weight(labels: np.ndarray, num_classes: int) -> dict:
    """scikit-learn's "balanced" weights, n_samples / (n_classes * count), for classes present."""
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    return {int(label): float(weight) for label, weight in zip(present, weights) if label < num_classes}


def fit(model, inputs, labels, validation, *, config: RunConfig, callbacks: list, class_weight: Optional[dict] = None) -> dict:
    """Fits ``model`` on (inputs, labels) with the run's epochs, batch size and shuffling.

    ``validation`` is ``(inputs, labels)`` in the same space as ``inputs`` (images
    for the full model, features for the head). Returns Keras's history dict.
    """
    keras.utils.set_random_seed(config.train.seed)
    # Two worker threads prepare the next batches while the model runs (same order).
    batches = ArrayBatches(
        inputs, labels, batch_size=config.train.batch_size, shuffle=True, seed=config.train.seed, workers=2
    )
    validation_batches = ArrayBatches(*validation, batch_size=INFERENCE_BATCH_SIZE)
    history = model.fit(
        batches, validation_data=validation_batches, epochs=config.train.epochs, callbacks=callbacks,
        class_weight=class_weight, verbose="auto",
    )
    return history.history


def predict_probabilities(model: keras.Model, inputs) -> np.ndarray:
    """The model's outputs for every row of ``inputs`` (images or features), in order."""
    return model.predict(ArrayBatches(inputs, np.zeros(len(inputs), np.int64), batch_size=INFERENCE_BATCH_SIZE), verbose=0)


def _choose_path(config: RunConfig, model: keras.Model) -> tuple:
    """Whether the head can train on stored features, and why (for the log)."""
    if config.train.feature_cache == "off":
        return False, "--no-cache was given: the backbone runs in every epoch (the article's way)"
    if backbone_of(model).trainable_weights:
        return False, "the backbone has trainable weights (fine-tuning): its outputs change every step"
    return True, "the backbone is frozen and no augmentation is asked for: it runs once, the head trains on stored features"


def _train_on_features(model, dataset: Dataset, config: RunConfig, callbacks: list, class_weight) -> tuple:
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
        features, status, seconds = cached_features(
            extractor, images, key=key, cache=cache, batch_size=INFERENCE_BATCH_SIZE
        )
        if status == "hit":
            logger.info("features of %s split (%d images): cache hit, the backbone is skipped (%s)", split, len(images), cache.entry_path(key))
        else:
            logger.info("features of %s split (%d images): computed and stored in %.1f s (%s)", split, len(images), seconds, cache.entry_path(key))
        splits[split], backbone_seconds = features, backbone_seconds + seconds
        statuses.append(status)
    # The head is trained as a copy (with the same initial weights), so the saved full model
    # holds one optimizer, at its top level, rather than a second one nested in the head.
    trainer = keras.models.clone_model(head_of(model))
    trainer.set_weights(head_of(model).get_weights())
    # XLA makes the small head's steps cheaper (benchmarks/head_training.py); on the torch
    # backend jit_compile means torch.compile, which is left to Keras's "auto".
    compile_model(
        trainer, learning_rate=config.train.learning_rate, steps_per_execution=config.train.steps_per_execution,
        jit_compile=True if keras.backend.backend() in ("tensorflow", "jax") else "auto",
    )
    started = time.perf_counter()
    history = fit(
        trainer, splits["train"], dataset.y_train, (splits["val"], dataset.y_val),
        config=config, callbacks=callbacks, class_weight=class_weight,
    )
    train_seconds = time.perf_counter() - started
    probabilities = predict_probabilities(trainer, splits["test"])
    head_of(model).set_weights(trainer.get_weights())
    _adopt_optimizer(model, trainer, learning_rate=config.train.learning_rate)
    status = "hit" if all(s == "hit" for s in statuses) else "miss"
    return history, train_seconds, probabilities, {"feature_cache": status, "backbone_seconds": backbone_seconds}


def _adopt_optimizer(model: keras.Model, trainer: keras.Model, *, learning_rate: float) -> None:
    """Compiles ``model`` with an optimizer holding the trained head's optimizer state.

    The full model's trainable variables are the head's, in the same order, so Adam's
    moments carry over one to one (a later fine-tuning or resumed run starts from them).
    """
    compile_model(model, learning_rate=learning_rate)
    model.optimizer.build(model.trainable_variables)
    for target, source in zip(model.optimizer.variables, trainer.optimizer.variables, strict=True):
        target.assign(source)


def _train_end_to_end(model, dataset: Dataset, config: RunConfig, callbacks: list, class_weight) -> tuple:
    compile_model(model, learning_rate=config.train.learning_rate, steps_per_execution=config.train.steps_per_execution)
    started = time.perf_counter()
    history = fit(
        model, dataset.x_train, dataset.y_train, (dataset.x_val, dataset.y_val),
        config=config, callbacks=callbacks, class_weight=class_weight,
    )
    train_seconds = time.perf_counter() - started
    probabilities = predict_probabilities(model, dataset.x_test)
    # Every training and validation image went through the backbone in every epoch.
    return history, train_seconds, probabilities, {"feature_cache": "off", "backbone_seconds": None}


def train(config: Optional[RunConfig] = None, *, callbacks: Optional[list] = None) -> RunResult:
    """Runs one training run and writes its artifacts; the default config is the seed recipe.

    Order: load the data and resolve the weights first (so bad input stops before
    anything is written), then create the run directory, build, fit, evaluate, save.

    Args:
        config: the run's settings (None: ``RunConfig()``, the seed recipe).
        callbacks: extra Keras callbacks for ``fit``.

    Returns:
        A ``RunResult``.

    Raises:
        ConfigError, DataError, WeightsError, RunDirectoryError: bad input; nothing is written.
    """
    config = config or RunConfig()
    run_dir = config.run_dir or default_run_dir(config.model.backbone)
    check_run_dir_free(run_dir)
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard")
    keras.utils.set_random_seed(config.train.seed)
    dataset = load_dataset(config.data, seed=config.train.seed)
    weights_path = fetch_weights(config.model.backbone) if config.model.weights == "imagenet" else None
    create_run_dir(run_dir)
    logger.info("run directory: %s", os.path.abspath(run_dir))
    class_weight = balanced_class_weight(dataset.y_train, dataset.num_classes) if config.train.class_weight else None
    record = _config_record(config, run_dir, dataset, weights_path, class_weight)
    write_config(run_dir, record)
    write_labels(run_dir, dataset.class_names)
    if dataset.skipped:
        write_skipped(run_dir, dataset.skipped)

    model = build_model(config.model, image_shape=dataset.image_shape, num_classes=dataset.num_classes, weights_path=weights_path)
    logger.info(
        "model: %s parameters, %s trainable (the head)", f"{model.count_params():,}", f"{_trainable_count(model):,}"
    )
    use_cache, reason = _choose_path(config, model)
    logger.info("training path: %s (%s)", "cached features" if use_cache else "end-to-end", reason)
    timer = EpochTimer()
    all_callbacks = [timer] + _tensorboard(config, run_dir) + list(callbacks or [])
    path = _train_on_features if use_cache else _train_end_to_end
    history, train_seconds, probabilities, cache_metrics = path(model, dataset, config, all_callbacks, class_weight)

    write_history(run_dir, history, timer.seconds)
    if timer.seconds:
        plot_curves(history, os.path.join(run_dir, "curves.png"))
    with atomic_path(os.path.join(run_dir, "model.keras")) as temporary:
        model.save(temporary)
    metrics = {
        **compute_test_metrics(probabilities, dataset.y_test),
        "n_train": int(len(dataset.y_train)),
        "n_val": int(len(dataset.y_val)),
        "n_skipped": len(dataset.skipped),
        "epochs": config.train.epochs,
        "backbone": config.model.backbone,
        "weights": config.model.weights,
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / config.train.epochs if config.train.epochs else None,
        **cache_metrics,
    }
    write_metrics(run_dir, metrics)
    write_report(
        run_dir, probabilities=probabilities, labels=dataset.y_test, images=dataset.x_test,
        class_names=dataset.class_names, metrics=metrics, settings=record,
    )
    logger.info(
        "test loss %.4f, test accuracy %.4f; artifacts and report.html in %s",
        metrics["test_loss"], metrics["test_accuracy"], run_dir,
    )
    return RunResult(run_dir=run_dir, model=model, history=history, metrics=metrics)


def _trainable_count(model: keras.Model) -> int:
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))


def _tensorboard(config: RunConfig, run_dir: str) -> list:
    if not config.tensorboard:
        return []
    return [keras.callbacks.TensorBoard(log_dir=os.path.join(run_dir, "tensorboard"))]


def _config_record(config: RunConfig, run_dir: str, dataset: Dataset, weights_path: Optional[str], class_weight) -> dict:
    config_values = config.to_dict()
    config_values["run_dir"] = run_dir
    # Paths are stored absolute, so that evaluate/predict/export work from any folder.
    data = config_values["data"]
    if data["source"] not in BUILTIN_DATA:
        data["source"] = os.path.abspath(data["source"])
    if data["data_dir"] is not None:
        data["data_dir"] = os.path.abspath(data["data_dir"])
    return {
        "config": config_values,
        "seed": config.train.seed,
        "versions": environment_versions(),
        "data_source": dataset.source,
        "class_names": list(dataset.class_names),
        "image_shape": list(dataset.image_shape),
        "class_weight": class_weight,
        "weights": {
            "setting": config.model.weights,
            "identity": weights_identity(config.model.backbone, config.model.weights, config.train.seed),
            "path": weights_path or (None if config.model.weights == "none" else os.path.abspath(config.model.weights)),
        },
    }
