"""--strategy: TensorFlow's MirroredStrategy over two logical CPU devices, and a real cluster of two processes
under MultiWorkerMirroredStrategy, train as the default strategy does."""

import glob
import json
import os
import socket
import subprocess
import sys
import textwrap

import keras
import pytest
from conftest import requires_mnist

from resnet_transfer.config import TrainConfig
from resnet_transfer.errors import ConfigError
from resnet_transfer.training.distribution import choose_strategy

tensorflow_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute needs TensorFlow")

# Two logical CPU devices must be declared before TensorFlow starts: in a process of its own.
_TWO_REPLICAS = textwrap.dedent("""
    import json, logging, sys
    import tensorflow as tf
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from resnet_transfer.config import RunConfig
    from resnet_transfer.training.train import train
    folder = sys.argv[1]
    results = {}
    for strategy in ("mirrored", "default"):
        result = train(RunConfig.from_dict({
            "data": {"limit": 64, "val_size": 32, "test_limit": 32},
            "model": {"weights": "none", "backbone": "resnet50"},
            "train": {"epochs": 2, "fine_tune_epochs": 1, "unfreeze": "conv5", "run_eagerly": True, "batch_size": 32,
                      "strategy": strategy, "cache_dir": f"{folder}/cache-{strategy}"},
            "run_dir": f"{folder}/{strategy}",
        }))
        record = json.load(open(f"{folder}/{strategy}/config.json"))
        results[strategy] = {"history": result.history, "metrics": result.metrics, "resolved": record["resolved"]}
    json.dump(results, open(f"{folder}/results.json", "w"))
""")


@pytest.mark.slow
@requires_mnist
@tensorflow_only
def test_mirrored_over_two_logical_cpus_trains_like_the_default_strategy(tmp_path):
    completed = subprocess.run([sys.executable, "-c", _TWO_REPLICAS, str(tmp_path)], capture_output=True, text=True,
                               timeout=300, env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "strategy: mirrored over 2 replicas" in completed.stderr and "16 per replica" in completed.stderr
    results = json.load(open(tmp_path / "results.json"))
    mirrored, default = results["mirrored"], results["default"]
    assert (mirrored["resolved"]["strategy"], mirrored["resolved"]["replicas"]) == ("mirrored", 2)
    assert (default["resolved"]["strategy"], default["resolved"]["replicas"]) == ("default", 1)
    # The same global batches, their gradients summed over 2 replicas: the same training up to float noise,
    # which Adam's first steps (about learning rate x sign of the gradient) turn into 0.3 % of the loss here.
    assert mirrored["history"]["phase"] == default["history"]["phase"] == ["head", "head", "fine-tune"]
    for name in ("loss", "val_loss"):
        assert mirrored["history"][name] == pytest.approx(default["history"][name], rel=1e-2), name
    # (accuracy near chance after 3 tiny epochs flips with any noise: the loss is the measure)
    assert mirrored["metrics"]["test_loss"] == pytest.approx(default["metrics"]["test_loss"], rel=1e-2)


@tensorflow_only
def test_default_and_auto_on_a_machine_without_gpus_use_the_default_strategy(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert choose_strategy("default", batch_size=64) is None
    assert choose_strategy("auto", batch_size=64) is None  # this machine: no GPU


_CLUSTER = {"worker": ["localhost:12345", "localhost:23456"]}


@pytest.mark.parametrize("strategy, tf_config, command, message", [
    ("default", {"cluster": _CLUSTER, "task": {"type": "worker", "index": 0}}, "train",
     "TF_CONFIG describes a cluster of 2 tasks, but strategy=default trains on this machine alone"),
    ("auto", {"cluster": {"chief": ["localhost:1"], "ps": ["localhost:2"]}, "task": {"type": "chief", "index": 0}},
     "train", "TF_CONFIG's cluster has ps tasks"),
    ("auto", {"cluster": _CLUSTER, "task": {"type": "worker", "index": 2}}, "train", "is not in its cluster"),
    ("auto", {"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 1}}, "train",
     "is not in its cluster"),  # one task, and not this one: the same mistake as with two
    ("auto", {"cluster": _CLUSTER, "task": {"type": "worker", "index": 0}}, "lr-find",
     "lr-find does not run on a cluster yet"),
    ("multi-worker", None, "train", "strategy=multi-worker needs TF_CONFIG to describe a cluster"),
    ("multi-worker", {"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 0}}, "train",
     "strategy=multi-worker needs TF_CONFIG to describe a cluster of at least two tasks"),
    ("auto", "{not json", "train", "TF_CONFIG is not a JSON object"),
])
@tensorflow_only
def test_a_cluster_that_cannot_run_is_refused_before_anything_starts(monkeypatch, strategy, tf_config, command, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config if isinstance(tf_config, str) else json.dumps(tf_config))
    with pytest.raises(ConfigError, match=message):
        choose_strategy(strategy, batch_size=64, command=command)


def test_an_unknown_strategy_names_the_choices():
    with pytest.raises(ConfigError, match="strategy must be one of: auto, default, mirrored, multi-worker. "
                                          "Received: strategy='tpu'"):
        TrainConfig(strategy="tpu")


def _free_ports(count: int) -> list:
    sockets = [socket.socket() for _ in range(count)]
    for each in sockets:
        each.bind(("localhost", 0))
    ports = [each.getsockname()[1] for each in sockets]
    for each in sockets:
        each.close()
    return ports


_SMALL_RUN = ["--weights", "none", "--backbone", "resnet50", "--limit", "512", "--val-size", "128", "--test-limit",
              "256", "--epochs", "2"]


def _two_workers(settings: list, folder, run_dir: str, env: dict = None) -> tuple:
    """Runs ``train`` with each worker's settings as a cluster of two on free localhost ports, bounded in time;
    returns their exit statuses and (stdout, stderr)."""
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    workers = []
    for index, each in enumerate(settings):
        task = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "resnet_transfer.cli", "train", *each, "--cache-dir", str(folder / "cache"),
             "--run-dir", str(folder / run_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CONFIG": task, **(env or {})}))
    try:
        outputs = [worker.communicate(timeout=240) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    return [worker.returncode for worker in workers], outputs


@pytest.mark.slow
@requires_mnist
@tensorflow_only
def test_two_workers_on_localhost_train_as_one_process_and_only_the_chief_writes(tmp_path):
    scratch = tmp_path / "scratch"  # the workers' temporary folders
    scratch.mkdir()
    codes, outputs = _two_workers([_SMALL_RUN, _SMALL_RUN], tmp_path, "cluster", env={"TMPDIR": str(scratch)})
    for code, (out, err) in zip(codes, outputs):
        assert code == 0, err[-3000:]
    chief, other = (json.loads(out.strip().splitlines()[-1]) for out, _ in outputs)
    assert chief["run_dir"] == str(tmp_path / "cluster") and other["run_dir"] is None
    assert "task worker/1 is not the chief" in outputs[1][1]
    assert os.listdir(scratch) == []  # the other worker's files are gone
    assert sorted(os.listdir(tmp_path)) == ["cache", "cluster", "scratch"]
    # One entry per split in the shared cache, assembled by the chief, no chunks left behind.
    assert len(glob.glob(str(tmp_path / "cache" / "*" / "features.npy"))) == 3
    assert not glob.glob(str(tmp_path / "cache" / ".*"))
    record = json.load(open(tmp_path / "cluster" / "config.json"))["resolved"]
    assert (record["strategy"], record["workers"], record["replicas"]) == ("multi-worker", 2, 2)

    single = subprocess.run([sys.executable, "-m", "resnet_transfer.cli", "train", *_SMALL_RUN, "--cache-dir",
                             str(tmp_path / "cache"), "--run-dir", str(tmp_path / "single")],
                            capture_output=True, text=True, timeout=240,
                            env={**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CONFIG": ""})
    assert single.returncode == 0, single.stderr[-3000:]
    # Each worker's replica takes half of every global batch of the single process: the same steps, up to the
    # order in which the all-reduce sums.
    import csv

    rows = {name: list(csv.DictReader(open(tmp_path / name / "history.csv"))) for name in ("cluster", "single")}
    assert len(rows["cluster"]) == len(rows["single"]) == 2
    for ours, theirs in zip(rows["cluster"], rows["single"]):
        for name in ("loss", "val_loss"):
            assert float(ours[name]) == pytest.approx(float(theirs[name]), rel=1e-3), name
        assert abs(float(ours["val_accuracy"]) - float(theirs["val_accuracy"])) <= 0.01
    metrics = {name: json.load(open(tmp_path / name / "metrics.json")) for name in ("cluster", "single")}
    assert metrics["cluster"]["test_loss"] == pytest.approx(metrics["single"]["test_loss"], rel=1e-3)


@pytest.mark.slow
@requires_mnist
@tensorflow_only
def test_a_task_whose_port_is_taken_ends_with_one_line_and_leaves_nothing(tmp_path):
    taken = socket.socket()
    taken.bind(("localhost", 0))
    taken.listen()
    port = taken.getsockname()[1]
    cluster = {"worker": [f"localhost:{port}", f"localhost:{_free_ports(1)[0]}"]}
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "resnet_transfer.cli", "train", *_SMALL_RUN, "--run-dir", str(tmp_path / "run"),
             "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True, timeout=120,
            env={**os.environ, "KERAS_BACKEND": "tensorflow",
                 "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})})
    finally:
        taken.close()
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr
    assert f"task worker/0 could not join the cluster of TF_CONFIG at localhost:{port}" in completed.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@requires_mnist
@tensorflow_only
def test_workers_given_different_settings_all_stop_with_one_line_instead_of_waiting(tmp_path):
    at = _SMALL_RUN.index("--limit") + 1
    settings = [[*_SMALL_RUN[:at], limit, *_SMALL_RUN[at + 1 :]] for limit in ("256", "320")]
    codes, outputs = _two_workers(settings, tmp_path, "run")
    for code, (_, err) in zip(codes, outputs):
        assert code == 2, err[-2000:]
        assert "the workers of the cluster run with different settings or data" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
