"""--strategy: TensorFlow's MirroredStrategy over two logical CPU devices trains as the default does."""

import json
import os
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


@pytest.mark.parametrize("tf_config, message", [
    ('{"cluster": {"worker": ["localhost:12345", "localhost:23456"]}, "task": {"type": "worker", "index": 0}}',
     "TF_CONFIG describes a cluster of 2 tasks, but multi-worker training is not supported yet"),
    ('{"cluster": {"chief": ["localhost:1"], "ps": ["localhost:2"]}, "task": {"type": "chief", "index": 0}}',
     "TF_CONFIG describes a cluster of 2 tasks"),
    ("{not json", "TF_CONFIG is not a JSON object with a cluster"),
])
@tensorflow_only
def test_a_cluster_in_tf_config_is_refused_not_run_on_one_machine(monkeypatch, tf_config, message):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ConfigError, match=message):
        choose_strategy("auto", batch_size=64)


def test_an_unknown_strategy_names_the_choices():
    with pytest.raises(ConfigError, match="strategy must be one of: auto, default, mirrored. Received: strategy='tpu'"):
        TrainConfig(strategy="tpu")
