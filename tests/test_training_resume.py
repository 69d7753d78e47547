"""--resume: a run killed with SIGKILL mid-epoch goes on from its last finished epoch, in the phase it was in,
and ends as the uninterrupted run ends; one Ctrl-C stops after the epoch's checkpoint."""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from conftest import requires_mnist

from resnet_transfer.cli import resume_command
from resnet_transfer.config import RunConfig
from resnet_transfer.errors import ConfigError, RunDirectoryError, RunInterrupted
from resnet_transfer.training.checkpoints import clear_partial, read_checkpoint, restore_optimizer
from resnet_transfer.training.train import changed_settings, train

pytestmark = requires_mnist

# The run of argv[1] (a RunConfig as JSON), killed by SIGKILL at the first batch of epoch argv[2] (from 0).
_KILLED_MID_EPOCH = textwrap.dedent("""
    import json, os, signal, sys
    import keras
    from resnet_transfer.config import RunConfig
    from resnet_transfer.training.train import train

    class KillMidEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == int(sys.argv[2]):
                os.kill(os.getpid(), signal.SIGKILL)

    train(RunConfig.from_dict(json.loads(sys.argv[1])), callbacks=[KillMidEpoch()])
""")


def _settings(folder, run: str, **train_settings) -> dict:
    return {
        "data": {"limit": 64, "val_size": 32, "test_limit": 32},
        "model": {"weights": "none", "backbone": "resnet50"},
        "train": {"batch_size": 32, "cache_dir": str(folder / "cache"), **train_settings},
        "run_dir": str(folder / run),
    }


def _kill_mid_epoch(settings: dict, epoch: int) -> None:
    completed = subprocess.run([sys.executable, "-c", _KILLED_MID_EPOCH, json.dumps(settings), str(epoch)],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == -signal.SIGKILL, completed.stderr[-3000:]


def _rows(run_dir) -> list:
    """history.csv without the seconds."""
    with open(os.path.join(run_dir, "history.csv")) as handle:
        return [row[:-1] for row in csv.reader(handle)]


def _assert_same_run(resumed, whole):
    assert resumed.history["phase"] == whole.history["phase"]
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(resumed.history[name], whole.history[name], rtol=1e-4, err_msg=name)
    np.testing.assert_allclose(resumed.metrics["test_loss"], whole.metrics["test_loss"], rtol=1e-4)
    assert [row[:2] for row in _rows(resumed.run_dir)] == [row[:2] for row in _rows(whole.run_dir)]  # epoch, phase
    for weight, other in zip(resumed.model.weights, whole.model.weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(weight), keras.ops.convert_to_numpy(other),
                                   rtol=1e-3, atol=1e-5, err_msg=weight.path)
    assert int(resumed.model.optimizer.iterations) == int(whole.model.optimizer.iterations)
    assert not os.path.exists(os.path.join(resumed.run_dir, "checkpoints"))  # removed once finished


@pytest.mark.slow
def test_a_run_killed_in_the_head_phase_resumes_and_ends_as_the_uninterrupted_run(tmp_path):
    settings = _settings(tmp_path, "killed", epochs=3)
    _kill_mid_epoch(settings, epoch=1)
    killed = str(tmp_path / "killed")
    assert json.load(open(os.path.join(killed, "status.json")))["state"] == "running"  # SIGKILL: nothing could say more
    assert len(_rows(killed)) == 2  # the header and epoch 1
    checkpoint = read_checkpoint(killed)
    assert (checkpoint.epochs_done, checkpoint.phase, checkpoint.weights_of) == (1, "head", "head")

    # A changed setting is refused by name, and the run is left as it was.
    with pytest.raises(ConfigError, match=r"train\.epochs \(was 3, now 4\)"):
        train(RunConfig.from_dict(_settings(tmp_path, "killed", epochs=4)), resume=True)
    with pytest.raises(ConfigError, match="--resume needs --run-dir"):
        train(RunConfig.from_dict({**settings, "run_dir": None}), resume=True)
    assert read_checkpoint(killed).epochs_done == 1

    resumed = train(RunConfig.from_dict(settings), resume=True)
    whole = train(RunConfig.from_dict(_settings(tmp_path, "whole", epochs=3)))
    assert resumed.metrics["resumed_after_epoch"] == 1 and resumed.metrics["feature_cache"] == "hit"
    assert json.load(open(os.path.join(killed, "status.json"))) == {"state": "finished", "epochs_done": 3}
    _assert_same_run(resumed, whole)
    with pytest.raises(RunDirectoryError, match="has finished; there is nothing to resume"):
        train(RunConfig.from_dict(settings), resume=True)


@pytest.mark.slow
def test_a_run_killed_while_fine_tuning_resumes_fine_tuning_with_the_same_layers_unfrozen(tmp_path):
    # (with --interpolate: the weights the fine-tune phase started from are kept for the resumed phase)
    fine_tune = {"epochs": 1, "fine_tune_epochs": 2, "unfreeze": "conv5", "run_eagerly": True, "interpolate": "auto"}
    settings = _settings(tmp_path, "killed", **fine_tune)
    _kill_mid_epoch(settings, epoch=2)  # the second fine-tune epoch
    assert os.path.isfile(tmp_path / "killed" / "checkpoints" / "before-fine-tune.npz")
    checkpoint = read_checkpoint(tmp_path / "killed")
    assert (checkpoint.epochs_done, checkpoint.phase, checkpoint.weights_of) == (2, "fine-tune", "model")
    assert checkpoint.trainable and all(name.startswith("conv5_") for name in checkpoint.trainable)
    assert [phase["name"] for phase in checkpoint.phases] == ["head"]

    resumed = train(RunConfig.from_dict(settings), resume=True)
    whole = train(RunConfig.from_dict(_settings(tmp_path, "whole", **fine_tune)))
    assert resumed.history["phase"] == ["head", "fine-tune", "fine-tune"]
    head, tuned = resumed.metrics["phases"]
    assert tuned["trainable_parameters"] == whole.metrics["phases"][1]["trainable_parameters"] > head["trainable_parameters"]
    assert not tuned["frozen_weights_moved"]
    assert resumed.metrics["feature_cache"] == "miss" and resumed.metrics["backbone_seconds"] > 0  # the killed head's
    assert resumed.metrics["interpolation"]["alpha"] == whole.metrics["interpolation"]["alpha"]
    _assert_same_run(resumed, whole)


class _CtrlCInEpoch(keras.callbacks.Callback):
    """Ctrl-C, as a terminal sends it, at the end of the first batch (or call of several) of the given epoch."""

    def __init__(self, epoch: int):
        super().__init__()
        self.at = epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == self.at:
            self.at = None
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.slow
def test_one_ctrl_c_stops_after_the_epochs_checkpoint_and_says_how_to_resume(tmp_path, caplog):
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        settings = _settings(tmp_path, "run", epochs=3)
        with pytest.raises(RunInterrupted) as stopped:
            train(RunConfig.from_dict(settings), callbacks=[_CtrlCInEpoch(1)])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert (stopped.value.run_dir, stopped.value.epochs_done) == (str(tmp_path / "run"), 2)  # epoch 2 finished
    assert "Ctrl-C: stopping at the end of this epoch" in caplog.text
    assert read_checkpoint(tmp_path / "run").epochs_done == 2 and len(_rows(tmp_path / "run")) == 3
    assert json.load(open(tmp_path / "run" / "status.json"))["state"] == "failed"
    assert len(train(RunConfig.from_dict(settings), resume=True).history["loss"]) == 3


def test_the_resume_command_repeats_the_arguments_with_the_run_folder():
    assert resume_command(["train", "--epochs", "5"], "runs/a b") == (
        "resnet-transfer train --epochs 5 --run-dir 'runs/a b' --resume")
    assert resume_command(["train", "--run-dir", "r", "--resume"], "r") == "resnet-transfer train --run-dir r --resume"


def test_a_resumed_run_may_change_where_and_how_it_computes_but_not_what():
    recorded = RunConfig.from_dict({"train": {"epochs": 3}}).to_dict()
    given = RunConfig.from_dict({"train": {"epochs": 3, "strategy": "mirrored", "jit_compile": "off",
                                           "cache_dir": "/elsewhere"}, "run_dir": "other/name"}).to_dict()
    assert changed_settings(recorded, given) == []
    given["train"]["learning_rate"], given["model"]["backbone"] = 0.01, "resnet50"
    assert changed_settings(recorded, given) == ["model.backbone (was 'resnet152', now 'resnet50')",
                                                 "train.learning_rate (was 0.001, now 0.01)"]


def test_a_run_recorded_before_a_setting_existed_resumes_with_its_default_and_not_another_value():
    recorded = RunConfig.from_dict({"train": {"epochs": 3, "fine_tune_epochs": 1}}).to_dict()
    del recorded["model"]["bn_recalibrate"], recorded["train"]["train_bn"]  # as an earlier version wrote it
    given = RunConfig.from_dict({"train": {"epochs": 3, "fine_tune_epochs": 1}}).to_dict()
    assert changed_settings(recorded, given) == []
    given["train"]["train_bn"] = True
    assert changed_settings(recorded, given) == ["train.train_bn (was False, now True)"]


def _latest(run_dir, **changes) -> str:
    """A checkpoint as a head epoch leaves it (two epochs done), with ``changes``; returns its folder."""
    folder = run_dir / "checkpoints" / "epoch-0002"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("weights.weights.h5", "optimizer.npz"):
        (folder / name).write_bytes(b"x" * 1000)  # a truncated file
    values = {"folder": "epoch-0002", "epochs_done": 2, "phase": "head", "weights_of": "head", "trainable": [],
              "learning_rate": 0.001, "history": {"loss": [2.3, 2.2], "phase": ["head", "head"]}, "seconds": [1.0, 1.0],
              "phases": [], **changes}
    (run_dir / "checkpoints" / "latest.json").write_text(json.dumps(values))
    return str(folder)


@pytest.mark.parametrize("changes, problem", [
    ({"history": {"loss": [2.3], "phase": ["head"]}}, "history is not columns of 2 epochs"),
    ({"history": [1, 2]}, "history is not columns of 2 epochs"),
    ({"phases": "x"}, "phases is not a list of records"),
    ({"learning_rate": "abc"}, "learning_rate is not a number"),
    ({"seconds": ["a", "b"]}, "seconds is not a list of 2 numbers"),
    ({"folder": "/elsewhere/epoch-0002"}, "its folder is not an epoch-NNNN folder name"),
    ({"weights_of": "model"}, "its phase or weights_of is not one a run writes"),
])
def test_a_damaged_checkpoint_is_refused_before_any_training(tmp_path, changes, problem):
    _latest(tmp_path, **changes)
    with pytest.raises(RunDirectoryError, match=f"is damaged \\({problem}\\); the run cannot be resumed"):
        read_checkpoint(tmp_path)


def test_a_truncated_optimizer_state_is_named_and_half_written_epochs_are_cleared(tmp_path):
    _latest(tmp_path)
    partial = tmp_path / "checkpoints" / "epoch-0003.partial"
    partial.mkdir()
    checkpoint = read_checkpoint(tmp_path)
    with pytest.raises(RunDirectoryError, match="optimizer.npz' cannot be read"):
        restore_optimizer(keras.optimizers.Adam(), [keras.Variable(np.zeros(3))], checkpoint)
    clear_partial(str(tmp_path))
    assert not partial.exists() and os.path.exists(checkpoint.folder)
