"""Which devices a run trains on: TensorFlow's own tf.distribute strategies.

- ``default``: TensorFlow's default strategy (one device, what Keras does unasked);
- ``mirrored``: ``tf.distribute.MirroredStrategy``, one replica per GPU of this machine,
  or per logical CPU device when there is no GPU;
- ``auto``: ``mirrored`` when more than one GPU is visible, else ``default``.

The model is built, compiled and trained inside the strategy's scope, so Keras runs
every step on every replica and sums the gradients; ``--batch-size`` is the global batch
(each replica gets batch size / replicas). A cluster described by ``TF_CONFIG``
(multi-worker training) is not supported yet: it is refused, not run on one machine.
Other Keras backends have no tf.distribute: there only ``auto`` and ``default`` run.

Example:
    >>> strategy = choose_strategy("auto", batch_size=64)
    >>> with strategy_scope(strategy):
    ...     model = build_model(...)
"""

import contextlib
import json
import logging
import os
from typing import Optional

import keras

from resnet_transfer.config import STRATEGIES
from resnet_transfer.errors import ConfigError

__all__ = ["STRATEGIES", "choose_strategy", "strategy_scope", "replicas", "replicas_in_scope"]

logger = logging.getLogger(__name__)


def _cluster_tasks() -> int:
    """The tasks of the cluster TF_CONFIG describes, of every role (0 when it is unset or names no cluster)."""
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return 0
    try:
        cluster = json.loads(text).get("cluster", {})
    except (ValueError, AttributeError):
        raise ConfigError(f"TF_CONFIG is not a JSON object with a cluster (see tf.distribute's multi-worker guide); "
                          f"unset it to train on this machine. Received: TF_CONFIG={text[:80]!r}") from None
    if not isinstance(cluster, dict):
        return 0
    return sum(len(tasks) for tasks in cluster.values() if isinstance(tasks, list))  # chief, workers, ps, evaluator


def choose_strategy(name: str, *, batch_size: int):
    """The tf.distribute strategy for ``name`` (None: Keras's default, nothing to enter).

    Raises:
        ConfigError: an unknown name, ``mirrored`` under another Keras backend, or a
            cluster in TF_CONFIG.
    """
    if name not in STRATEGIES:
        raise ConfigError(f"strategy must be one of: {', '.join(STRATEGIES)}. Received: strategy={name!r}")
    backend = keras.backend.backend()
    if backend != "tensorflow":
        if name == "mirrored":
            raise ConfigError(f"strategy=mirrored needs the TensorFlow backend (tf.distribute); the Keras backend here is "
                              f"{backend}. Set KERAS_BACKEND=tensorflow, or leave out --strategy")
        return None
    tasks = _cluster_tasks()
    if tasks > 1:
        raise ConfigError(f"TF_CONFIG describes a cluster of {tasks} tasks, but multi-worker training is not "
                          "supported yet; unset TF_CONFIG to train on this machine alone")
    import tensorflow as tf

    gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "default"
    if name == "default":
        logger.info("strategy: default (one device)")
        return None
    devices = gpus or [device.name for device in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices=devices)
    count = strategy.num_replicas_in_sync
    logger.info("strategy: mirrored over %d replica%s (%s); --batch-size %d is the global batch, %s per replica",
                count, "" if count == 1 else "s", ", ".join(devices), batch_size,
                f"{batch_size // count}" if batch_size % count == 0 else f"about {batch_size / count:.1f}")
    return strategy


def strategy_scope(strategy: Optional[object]):
    """The strategy's scope, or a context that does nothing for the default strategy."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def replicas(strategy: Optional[object]) -> int:
    return 1 if strategy is None else int(strategy.num_replicas_in_sync)


def replicas_in_scope() -> int:
    """The replicas of the strategy whose scope the caller is in (1 outside any, or without TensorFlow)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return int(tf.distribute.get_strategy().num_replicas_in_sync) if tf.distribute.has_strategy() else 1
