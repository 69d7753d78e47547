"""Which devices a run trains on: TensorFlow's own tf.distribute strategies.

- ``default``: TensorFlow's default strategy (one device, what Keras does unasked);
- ``mirrored``: ``tf.distribute.MirroredStrategy``, one replica per GPU of this machine,
  or per logical CPU device when there is no GPU;
- ``multi-worker``: ``tf.distribute.MultiWorkerMirroredStrategy`` over the cluster that
  ``TF_CONFIG`` describes (one process per machine, as on Kubernetes, Slurm or Vertex AI);
- ``auto``: ``multi-worker`` when TF_CONFIG describes a cluster of several tasks,
  ``mirrored`` when more than one GPU is visible, else ``default``.

The model is built, compiled and trained inside the strategy's scope, so Keras runs
every step on every replica and sums the gradients; ``--batch-size`` is the global batch
(each replica gets batch size / replicas). Other Keras backends have no tf.distribute:
there only ``auto`` and ``default`` run.

Multi-worker runs follow TensorFlow's multi-worker guide: every worker runs the same
program, reads only its share of every batch (``batches.ArrayBatches``, fed by
``distributed_batches``), and writes
only to a temporary folder, removed at the end, but the chief (task "chief", else worker
0), which writes the run folder. Keras 3 cannot ``fit`` under this strategy as it comes
(keras-team/keras#20585, open): its step reduces scalar metrics along an axis they do not
have, and its first-batch build reduces the input batch; ``choose_strategy`` routes
around both (``_keras_compat.route_around_keras_20585``).

Example:
    >>> strategy = choose_strategy("auto", batch_size=64)
    >>> with strategy_scope(strategy):
    ...     model = build_model(...)
"""

import contextlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Optional

import keras
import numpy as np

from resnet_transfer._keras_compat import route_around_keras_20585
from resnet_transfer.config import STRATEGIES
from resnet_transfer.errors import ConfigError
from resnet_transfer.model.precision import visible_gpus
from resnet_transfer.signals import unfiltered, with_default_signals

__all__ = [
    "STRATEGIES", "WorkerRole", "barrier", "check_same_on_every_worker", "choose_strategy", "cluster_role", "distributed_batches",
    "replicas", "replicas_in_scope", "strategy_name", "strategy_scope", "trains_locally", "worker_role", "worker_scratch",
]

logger = logging.getLogger(__name__)

_TRAINING_TASKS = ("chief", "worker")  # the task types MultiWorkerMirroredStrategy trains on


@dataclass(frozen=True)
class WorkerRole:
    """This process's place in a cluster.

    Attributes:
        index: its position among the training tasks, chief first (TensorFlow's
            ``input_pipeline_id``).
        count: the training tasks of the cluster.
        task: "type/index" as TF_CONFIG names it.
        is_chief: the task that writes the run folder (task "chief", else worker 0).
        address: its host:port.
    """

    index: int
    count: int
    task: str
    is_chief: bool
    address: str = ""


def _tf_config() -> Optional[dict]:
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ConfigError(f"TF_CONFIG is not a JSON object with a cluster and a task (see the README, Scaling out); "
                          f"unset it to train on this machine. Received: TF_CONFIG={text[:80]!r}")
    return value


def cluster_role() -> Optional[WorkerRole]:
    """This process's role in the cluster TF_CONFIG describes; None when it describes
    none, or a cluster of a single task (which must then be this process's task, if it
    names one).

    Raises:
        ConfigError: TF_CONFIG is not JSON, names a task outside its cluster, or has
            parameter servers or an evaluator (other strategies).
    """
    value = _tf_config()
    cluster = (value or {}).get("cluster") or {}
    if not isinstance(cluster, dict) or not all(isinstance(tasks, list) for tasks in cluster.values()):
        raise ConfigError(f"TF_CONFIG's cluster must map task types to lists of host:port addresses. Received: "
                          f"cluster={cluster!r}")
    single = sum(len(tasks) for tasks in cluster.values()) <= 1
    if single and not (isinstance((value or {}).get("task"), dict) and value["task"]):
        return None
    others = sorted(set(cluster) - set(_TRAINING_TASKS))
    if others:
        raise ConfigError(f"TF_CONFIG's cluster has {', '.join(others)} tasks; multi-worker training takes only "
                          "chief and worker tasks (parameter servers and evaluators belong to other strategies)")
    if len(cluster.get("chief", [])) > 1:
        raise ConfigError(f"TF_CONFIG's cluster has {len(cluster['chief'])} chief tasks; it may have one at most")
    addresses = [address for tasks in cluster.values() for address in tasks]
    if not all(isinstance(address, str) and address.rpartition(":")[2].isdigit() for address in addresses):
        raise ConfigError(f"TF_CONFIG's cluster addresses must be \"host:port\" strings. Received: {addresses!r}")
    task = value.get("task") if isinstance(value.get("task"), dict) else {}
    task_type, index = task.get("type"), task.get("index", 0)
    if not isinstance(index, int) or isinstance(index, bool):
        raise ConfigError(f"TF_CONFIG's task index must be a whole number. Received: task={task!r}")
    members = [(kind, number) for kind in _TRAINING_TASKS for number in range(len(cluster.get(kind, [])))]
    if (task_type, index) not in members:
        raise ConfigError(f"TF_CONFIG's task {task!r} is not in its cluster ({', '.join(f'{k}/{n}' for k, n in members)}); "
                          "give every process its own task, e.g. {\"type\": \"worker\", \"index\": 0}")
    if single:  # this task, alone: nothing to distribute
        return None
    return WorkerRole(index=members.index((task_type, index)), count=len(members), task=f"{task_type}/{index}",
                      is_chief=members.index((task_type, index)) == 0, address=str(cluster[task_type][index]))


def choose_strategy(name: str, *, batch_size: int, command: str = "train"):
    """The tf.distribute strategy for ``name`` (None: Keras's default, nothing to enter);
    ``command`` names the verb that asks (train, pretrain and extract run on a cluster).

    Call it before anything else runs TensorFlow: a multi-worker strategy configures
    the process's collective operations, which TensorFlow allows only at its start.

    Raises:
        ConfigError: an unknown name, ``mirrored`` or ``multi-worker`` under another Keras
            backend, ``multi-worker`` without a cluster in TF_CONFIG, a cluster with
            ``default`` or ``mirrored``, or a cluster for a ``command`` that runs on one machine.
    """
    if name not in STRATEGIES:
        raise ConfigError(f"strategy must be one of: {', '.join(STRATEGIES)}. Received: strategy={name!r}")
    role = cluster_role()
    if name == "multi-worker" and role is None:
        raise ConfigError("strategy=multi-worker needs TF_CONFIG to describe a cluster of at least two tasks and this "
                          "process's task in it (see the README, Scaling out); leave out --strategy to train on this "
                          "machine alone")
    if role is not None and name in ("default", "mirrored"):
        raise ConfigError(f"TF_CONFIG describes a cluster of {role.count} tasks, but strategy={name} trains on this "
                          "machine alone; give --strategy multi-worker (or auto), or unset TF_CONFIG")
    backend = keras.backend.backend()
    if backend != "tensorflow":
        if name in ("mirrored", "multi-worker") or role is not None:
            raise ConfigError(f"strategy={name} {'on the cluster of TF_CONFIG ' if role else ''}needs the TensorFlow "
                              f"backend (tf.distribute); the Keras backend here is {backend}. Set "
                              "KERAS_BACKEND=tensorflow, or leave out --strategy (and TF_CONFIG)")
        return None
    if role is not None:
        if command not in ("train", "pretrain", "extract"):
            raise ConfigError(f"{command} does not run on a cluster yet (TF_CONFIG describes {role.count} tasks): run it "
                              "on one machine without TF_CONFIG (train, pretrain and extract run on a cluster)")
        return _multi_worker(role, batch_size)
    import tensorflow as tf

    gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "default"
    if name == "default":
        logger.debug("strategy: default (one device)")
        return None
    devices = gpus or [device.name for device in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices=devices)
    count = strategy.num_replicas_in_sync
    logger.info("strategy: mirrored over %d replica%s (%s); --batch-size %d is the global batch, %s per replica",
                count, "" if count == 1 else "s", ", ".join(devices), batch_size,
                f"{batch_size // count}" if batch_size % count == 0 else f"about {batch_size / count:.1f}")
    return strategy


def _multi_worker(role: WorkerRole, batch_size: int):
    import tensorflow as tf

    route_around_keras_20585()
    tf.config.list_physical_devices("GPU")  # (its start-up lines while the filter still runs)
    try:
        with unfiltered():  # TensorFlow holds Python's lock while it waits: the log line must not wait in a filter
            logger.info("task %s: waiting for every worker of the cluster of TF_CONFIG to start (%d in all); Ctrl-C "
                        "stops the wait, and nothing is written before it ends", role.task, role.count)
            strategy = with_default_signals(tf.distribute.MultiWorkerMirroredStrategy)
    except tf.errors.OpError as error:  # its own port taken, say ("Could not start gRPC server")
        raise ConfigError(f"task {role.task} could not join the cluster of TF_CONFIG at {role.address} "
                          f"({error.message.splitlines()[0]}): the port may be in use or not this machine's; give "
                          "the task a free host:port of this machine") from error
    count = strategy.num_replicas_in_sync
    if batch_size < count:
        raise ConfigError(f"batch_size must be at least the replicas of the cluster ({count}): it is the global "
                          f"batch, split among them. Received: batch_size={batch_size}")
    logger.info("strategy: multi-worker, task %s (%s) of a cluster of %d workers, %d replicas in all; --batch-size %d "
                "is the global batch, %d per replica", role.task, "chief" if role.is_chief else "not the chief",
                role.count, count, batch_size, batch_size // count)
    return strategy


@contextlib.contextmanager
def worker_scratch(strategy: str, command: str):
    """Where a worker of a cluster that is not the chief writes what the chief keeps
    (TensorFlow's multi-worker guide): a temporary folder, yielded and removed at the
    end, however the command ends. Yields None on the chief and without a cluster."""
    role = cluster_role() if strategy in ("auto", "multi-worker") else None
    if role is None or role.is_chief:
        yield None
        return
    folder = tempfile.mkdtemp(prefix=f"resnet-transfer-{role.task.replace('/', '-')}-")
    logger.info("task %s is not the chief: its files go to %s, removed at the end; the chief writes the %s",
                role.task, folder, "run folder" if command == "train" else "run folder and the weights file")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def strategy_name(strategy: Optional[object]) -> str:
    """"default", "mirrored" or "multi-worker", as config.json records it."""
    if strategy is None:
        return "default"
    import tensorflow as tf

    return "multi-worker" if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) else "mirrored"


def worker_role() -> Optional[WorkerRole]:
    """The role of this process in the multi-worker strategy whose scope the caller is in
    (None outside one): TF_CONFIG's, which the strategy was made from."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    if not isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        return None
    return cluster_role()


def barrier() -> None:
    """Returns when every worker of the multi-worker strategy in scope has called it (an
    all-reduce of one number); nothing outside one."""
    if worker_role() is None:
        return
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()

    @tf.function
    def everyone():
        return strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)

    everyone()


def check_same_on_every_worker(text: str, what: str) -> None:
    """Raises ``ConfigError`` on every worker of the multi-worker strategy in scope unless
    ``text`` is the same on all of them (nothing outside one). Workers that trained on
    different settings or data would take different numbers of steps and wait for each
    other's collectives forever; one all-reduce of a digest and its square tells."""
    if worker_role() is None:
        return
    import hashlib

    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    value = float(int(hashlib.sha256(text.encode()).hexdigest(), 16) % 2**20)  # sums stay exact in float64

    @tf.function
    def sums():
        digest = tf.constant([value, value * value, 1.0], tf.float64)
        return strategy.reduce("SUM", strategy.run(lambda: tf.identity(digest)), axis=None)

    total, squares, count = (float(number) for number in sums().numpy())
    if count * squares != total * total:
        raise ConfigError(f"the workers of the cluster run with different {what}; give every worker the same command "
                          "and data (only TF_CONFIG's task differs)")


def distributed_batches(batches: keras.utils.PyDataset):
    """``batches`` (this worker's pieces) as the strategy's input: a tf.data pipeline per
    worker (``distribute_datasets_from_function``), which Keras takes as it is (it would
    re-shard a dataset that is already this worker's). Each pass reads ``batches`` as they
    are when it starts: their order for an epoch is set by a callback (``EpochOrder``), as
    Keras starts a pass more than once per epoch."""
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    first = batches[0]
    signature = tuple(tf.TensorSpec((None, *np.shape(part)[1:]), tf.as_dtype(np.asarray(part).dtype)) for part in first)

    def generate():
        for index in range(len(batches)):
            yield tuple(batches[index])

    dataset = (tf.data.Dataset.from_generator(generate, output_signature=signature)
               .apply(tf.data.experimental.assert_cardinality(len(batches))).prefetch(2))
    return strategy.distribute_datasets_from_function(lambda context: dataset)


def trains_locally() -> bool:
    """Whether a small model's training steps may take their batches from the caller's
    thread (``batches.TensorBatches.train_function``; why: its docstring): with TensorFlow
    on a CPU, in one process, outside any tf.distribute strategy, even one of one replica
    (those steps do not go through ``strategy.run``, and Keras's metric variables under a
    strategy refuse updates made outside it)."""
    if worker_role() is not None or keras.backend.backend() != "tensorflow" or visible_gpus():
        return False
    import tensorflow as tf

    return not tf.distribute.has_strategy()


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
