"""Checkpoints: a run's state after every finished epoch, so that a killed run goes on (``--resume``).

A run spans two models and two optimizers (the head on stored features, then the whole
model while fine-tuning), which Keras's ``BackupAndRestore`` (one model, one ``fit``)
cannot follow; the checkpoint therefore records the phase with the weights::

    RUN_DIR/checkpoints/epoch-0003/weights.weights.h5   the head's weights in the head phase,
                                                         the whole model's while fine-tuning
    RUN_DIR/checkpoints/epoch-0003/optimizer.npz        every optimizer variable, by name
    RUN_DIR/checkpoints/latest.json                     epochs done, phase, learning rate, the
                                                         trainable layers, history so far

An epoch's folder is complete before ``latest.json`` names it (written atomically,
last), so a kill at any moment leaves the previous epoch's checkpoint usable.

Example:
    >>> checkpoint = read_checkpoint(run_dir)
    >>> checkpoint.epochs_done, checkpoint.phase
    (3, 'fine-tune')
"""

import json
import math
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from typing import Callable, Optional

import keras
import numpy as np

from resnet_transfer.config import PHASES
from resnet_transfer.errors import RunDirectoryError
from resnet_transfer.files import first_line, write_json_atomic
from resnet_transfer.model.assembly import backbone_of, head_of

__all__ = ["Checkpoint", "EpochCheckpoint", "read_checkpoint", "restore_weights", "restore_optimizer", "trainable_layers",
           "clear_partial"]

CHECKPOINTS = "checkpoints"
_LATEST = "latest.json"
_WEIGHTS = "weights.weights.h5"
_OPTIMIZER = "optimizer.npz"


@dataclass
class Checkpoint:
    """What ``latest.json`` says of the last finished epoch.

    Attributes:
        folder: the epoch's folder (weights and optimizer state).
        epochs_done: finished epochs, through every phase.
        phase: the phase the last epoch belonged to ("head" or "fine-tune").
        weights_of: "head" or "model": whose weights the folder holds.
        trainable: the backbone layers that trained in that phase (empty in the head phase).
        learning_rate: the optimizer's learning rate then.
        history: Keras's metrics per epoch so far, with "phase".
        seconds: each finished epoch's seconds.
        phases: the records of the phases that had ended (``PhasesOutcome.phases``).
    """

    folder: str
    epochs_done: int
    phase: str
    weights_of: str
    trainable: list
    learning_rate: float
    history: dict
    seconds: list
    phases: list


def trainable_layers(model: keras.Model) -> list:
    """The backbone layers with weights that train now (empty while the backbone is frozen)."""
    backbone = backbone_of(model)
    if not backbone.trainable:
        return []
    return [layer.name for layer in backbone.layers if layer.trainable and layer.weights]


class EpochCheckpoint(keras.callbacks.Callback):
    """Writes the checkpoint of ``model`` at the end of every epoch, after ``timer`` (an
    ``EpochTimer`` earlier in the callbacks) has recorded it.

    The model ``fit`` runs (``self.model``) may be the head alone, on stored features; its
    optimizer is the one that holds the state. ``phases`` is the list that ``run_phases``
    fills with the records of ended phases. ``then(history, seconds)`` is called once the
    checkpoint is complete (``Run.write_history``).
    """

    def __init__(self, run_dir: str, model: keras.Model, timer, *, epochs_saved: int = 0,
                 then: Optional[Callable[[dict, list], None]] = None):
        super().__init__()
        self.directory = os.path.join(run_dir, CHECKPOINTS)
        self.full_model, self.timer, self.then = model, timer, then
        self.phases = []
        self.epochs_saved = epochs_saved  # the epochs the last complete checkpoint holds

    def on_epoch_end(self, epoch, logs=None):
        epochs_done = len(self.timer.seconds)
        phase = self.timer.phase
        weights_of = "head" if phase == "head" else "model"
        folder = os.path.join(self.directory, f"epoch-{epochs_done:04d}")
        partial = folder + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            os.makedirs(partial)
            target = head_of(self.full_model) if weights_of == "head" else self.full_model
            target.save_weights(os.path.join(partial, _WEIGHTS))
            optimizer = self.model.optimizer
            np.savez(os.path.join(partial, _OPTIMIZER),
                     **{variable.name: keras.ops.convert_to_numpy(variable) for variable in optimizer.variables})
        except BaseException:  # a full disk, Ctrl-C: nothing half-written stays to fill the disk
            shutil.rmtree(partial, ignore_errors=True)
            raise
        shutil.rmtree(folder, ignore_errors=True)  # an epoch written again after a resume
        os.replace(partial, folder)
        write_json_atomic(os.path.join(self.directory, _LATEST), {
            "folder": os.path.basename(folder), "epochs_done": epochs_done, "phase": phase, "weights_of": weights_of,
            "trainable": trainable_layers(self.full_model),
            "learning_rate": float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
            "history": self.timer.history, "seconds": self.timer.seconds, "phases": self.phases,
        })
        self.epochs_saved = epochs_done
        if self.then is not None:
            self.then(self.timer.history, self.timer.seconds)
        for name in os.listdir(self.directory):  # the epochs before: only the latest is kept
            if name.startswith("epoch-") and name != os.path.basename(folder):
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)


def clear_partial(run_dir: str) -> None:
    """Removes the half-written epoch folders, and the half-written files of the run folder
    (``files.atomic_path``'s hidden ``.NAME.*.partial*``, a model as big as the model), that
    a kill or a full disk left."""
    for name in os.listdir(run_dir):
        path = os.path.join(run_dir, name)
        if name.startswith(".") and ".partial" in name and os.path.isfile(path):
            os.remove(path)
    directory = os.path.join(run_dir, CHECKPOINTS)
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            if name.endswith(".partial"):
                shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check(values: dict) -> None:
    """Raises ValueError where ``latest.json``'s fields are not what ``EpochCheckpoint`` writes."""
    if not isinstance(values.get("folder"), str) or not re.fullmatch(r"epoch-\d{4,}", values["folder"]):
        raise ValueError("its folder is not an epoch-NNNN folder name")
    epochs = values["epochs_done"]
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError("epochs_done is not a positive integer")
    if values["phase"] not in PHASES or values["weights_of"] != ("head" if values["phase"] == "head" else "model"):
        raise ValueError("its phase or weights_of is not one a run writes")
    if not isinstance(values["trainable"], list) or not all(isinstance(name, str) for name in values["trainable"]):
        raise ValueError("trainable is not a list of layer names")
    if not _is_number(values["learning_rate"]):
        raise ValueError("learning_rate is not a number")
    seconds, history = values["seconds"], values["history"]
    if not isinstance(seconds, list) or len(seconds) != epochs or not all(_is_number(value) for value in seconds):
        raise ValueError(f"seconds is not a list of {epochs} numbers")
    if not isinstance(history, dict) or "phase" not in history or not all(
            isinstance(column, list) and len(column) == epochs for column in history.values()):
        raise ValueError(f"history is not columns of {epochs} epochs")
    if not all(phase in PHASES for phase in history["phase"]) or not all(
            _is_number(value) or value is None for name, column in history.items() if name != "phase" for value in column):
        raise ValueError("history holds values a run does not write")
    if not isinstance(values["phases"], list) or not all(isinstance(phase, dict) for phase in values["phases"]):
        raise ValueError("phases is not a list of records")


def read_checkpoint(run_dir: str) -> Optional[Checkpoint]:
    """The last finished epoch's checkpoint of ``run_dir`` (None: no epoch finished).

    Raises:
        RunDirectoryError: the checkpoint is damaged.
    """
    latest = os.path.join(run_dir, CHECKPOINTS, _LATEST)
    if not os.path.exists(latest):
        return None
    try:
        with open(latest) as file:
            values = json.load(file)
        if not isinstance(values, dict):
            raise ValueError("it is not a JSON object")
        _check(values)
        checkpoint = Checkpoint(folder=os.path.join(run_dir, CHECKPOINTS, values["folder"]),
                                **{name: values[name] for name in ("epochs_done", "phase", "weights_of", "trainable",
                                                                    "learning_rate", "history", "seconds", "phases")})
        missing = [name for name in (_WEIGHTS, _OPTIMIZER) if not os.path.isfile(os.path.join(checkpoint.folder, name))]
        if missing:
            raise ValueError(f"{', '.join(missing)} missing in {checkpoint.folder}")
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise RunDirectoryError(
            f"the checkpoint in {latest!r} is damaged ({error}); the run cannot be resumed: start it again with "
            "another --run-dir"
        ) from error
    return checkpoint


def restore_weights(model: keras.Model, checkpoint: Checkpoint) -> None:
    """Loads the checkpoint's weights into ``model`` (its head, or all of it).

    Raises:
        RunDirectoryError: the file does not fit the model.
    """
    target = head_of(model) if checkpoint.weights_of == "head" else model
    try:
        target.load_weights(os.path.join(checkpoint.folder, _WEIGHTS))
    except (OSError, ValueError, KeyError) as error:
        raise RunDirectoryError(f"the checkpoint's weights in {checkpoint.folder!r} do not fit this run's model "
                                f"({first_line(error)}); start the run again with another --run-dir") from error


def restore_optimizer(optimizer: keras.optimizers.Optimizer, variables: list, checkpoint: Checkpoint) -> None:
    """Builds ``optimizer`` on ``variables`` and gives it the checkpoint's state: the step
    count and every slot (Adam's moments), by name; the learning rate stays the phase's.

    Raises:
        RunDirectoryError: a variable is missing or has another shape.
    """
    if not optimizer.built:
        optimizer.build(variables)
    path = os.path.join(checkpoint.folder, _OPTIMIZER)
    try:
        with np.load(path, allow_pickle=False) as stored:
            values = {name: stored[name] for name in stored.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise RunDirectoryError(f"the checkpoint's optimizer state {path!r} cannot be read ({first_line(error)}); "
                                "start the run again with another --run-dir") from error
    for variable in optimizer.variables:
        if variable.name == "learning_rate":
            continue
        value = values.get(variable.name)
        if value is None or value.shape != tuple(variable.shape) or value.dtype.kind not in "fiub":
            raise RunDirectoryError(
                f"the checkpoint's optimizer state {path!r} has no numeric {variable.name} of shape "
                f"{tuple(variable.shape)}; start the run again with another --run-dir")
        variable.assign(value)
