import csv
import json
import os
import warnings

import keras
import numpy as np
import pytest
from conftest import requires_mnist

from resnet_transfer.evaluation import evaluate_run, load_run_model
from resnet_transfer.report import REPORT_FILES
from resnet_transfer.runs import ARTIFACTS, Run
from resnet_transfer.training.train import train

pytestmark = requires_mnist  # small_config trains on the first MNIST images


class _StopAfterEpoch(keras.callbacks.Callback):
    """Ctrl-C at the end of an epoch, after the run's own callbacks have recorded it."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_cached_and_end_to_end_ways_agree_a_second_run_hits_the_cache_and_each_epoch_adds_a_history_row(small_config, tmp_path):
    # A cache of its own: other tests may already have stored these features.
    # Half the usual images: the end-to-end way runs the backbone over them in every epoch.
    half = {"data": {"limit": 128, "val_size": 32, "test_limit": 64}}
    cache_dir = str(tmp_path / "cache")
    cached = train(small_config(tmp_path / "cached", cache_dir=cache_dir).updated(half))
    end_to_end = train(small_config(tmp_path / "e2e", feature_cache="off").updated(half))
    assert cached.metrics["feature_cache"] == "miss" and end_to_end.metrics["feature_cache"] == "off"
    np.testing.assert_allclose(cached.history["val_loss"], end_to_end.history["val_loss"], rtol=0.01)
    assert abs(cached.history["val_accuracy"][-1] - end_to_end.history["val_accuracy"][-1]) <= 0.005
    np.testing.assert_allclose(cached.metrics["test_loss"], end_to_end.metrics["test_loss"], rtol=0.01)

    # A second cached run skips the backbone; stored features read back exactly as computed,
    # and the seed fixes everything else.
    again = train(small_config(tmp_path / "again", cache_dir=cache_dir).updated(half))
    assert cached.metrics["backbone_seconds"] > 0
    assert again.metrics["feature_cache"] == "hit" and again.metrics["backbone_seconds"] == 0.0
    with open(os.path.join(cached.run_dir, "history.csv")) as one, open(os.path.join(again.run_dir, "history.csv")) as two:
        drop_seconds = lambda rows: [row[:-1] for row in rows]  # noqa: E731
        assert drop_seconds(list(csv.reader(one))) == drop_seconds(list(csv.reader(two)))

    # history.csv gains a row at the end of every epoch: a run stopped after its first keeps that row.
    with pytest.raises(KeyboardInterrupt):
        train(small_config(tmp_path / "stopped", cache_dir=cache_dir).updated(half), callbacks=[_StopAfterEpoch(0)])
    with open(os.path.join(cached.run_dir, "history.csv")) as one, open(tmp_path / "stopped" / "history.csv") as two:
        whole, stopped = list(csv.reader(one)), list(csv.reader(two))
        assert len(stopped) == 2 and drop_seconds(stopped) == drop_seconds(whole[:2])  # header and epoch 1
    assert json.load(open(tmp_path / "stopped" / "status.json"))["epochs_done"] == 1


@pytest.mark.slow
def test_run_writes_artifacts_and_the_saved_model_reloads(mnist_run):
    result = mnist_run
    # (the shared run also keeps TensorBoard logs where tensorboard is installed)
    assert set(os.listdir(result.run_dir)) - {"tensorboard"} == set(ARTIFACTS + REPORT_FILES) | {"reliability.png"}
    run = Run(result.run_dir)
    assert run.status == "finished"
    history = run.history
    assert history["epoch"] == [1.0, 2.0] and all(seconds > 0 for seconds in history["seconds"])
    assert history["phase"] == ["head", "fine-tune"]  # one epoch axis through both phases
    np.testing.assert_allclose(history["val_loss"], result.history["val_loss"], rtol=1e-5)
    metrics = run.metrics
    assert metrics["frozen_weights_unchanged"] is True and metrics["feature_cache"] == "miss"
    head, fine_tune = metrics["phases"]
    assert head["trainable_parameters"] == 2_059_010 < fine_tune["trainable_parameters"]
    assert fine_tune["frozen_weights_checked"] > 0 and not fine_tune["frozen_weights_moved"]
    assert fine_tune["learning_rate"] == 1e-5
    # The fine-tune optimizer went on from the head's: its step count covers both phases (2 + 2 batches).
    assert int(result.model.optimizer.iterations) == 4
    # Augmentation trains only: the saved model has no random layers.
    assert not [layer for layer in result.model.layers if "augmentation" in layer.name or layer.name.startswith("random")]
    for name in ("test_loss", "test_accuracy", "n_train", "n_val", "n_test", "epochs", "backbone", "weights", "train_seconds",
                 "phases"):
        assert name in metrics
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (128, 64, 128)
    config = run.record
    assert config["seed"] == 0 and config["versions"]["keras"] and config["data_source"]["checksums"]
    images = np.random.default_rng(0).integers(0, 256, size=(8, 32, 32, 3)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. Keras's "Skipping variable loading for optimizer"
        reloaded = load_run_model(result.run_dir)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), result.model.predict(images, verbose=0), atol=1e-6)
    evaluated = evaluate_run(result.run_dir)
    assert evaluated["n_test"] == 128
    np.testing.assert_allclose(evaluated["test_loss"], metrics["test_loss"], rtol=1e-4)
