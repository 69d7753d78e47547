"""``Run``: one run folder, to read what a run wrote or to write a new one (the layout and
the rules: ``runs``' docstring)."""

import csv
import json
import os
import shutil
from typing import Optional

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

import keras

from resnet_transfer.config import RESIZE_MODES, DataConfig, RunConfig
from resnet_transfer.data.dataset import Dataset, load_dataset
from resnet_transfer.errors import ConfigError, DataError, RunDirectoryError, Terminated
from resnet_transfer.files import atomic_path, first_line, write_json_atomic, write_text_atomic
from resnet_transfer.registry import get_backbone_spec
from resnet_transfer.runs.folders import check_run_dir_free, csv_text

__all__ = ["ARTIFACTS", "HISTORY_COLUMNS", "Run"]

ARTIFACTS = ("config.json", "status.json", "history.csv", "curves.png", "metrics.json", "model.keras", "labels.txt")
HISTORY_COLUMNS = ("epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")
_METRIC_COLUMNS = ("loss", "accuracy", "val_loss", "val_accuracy")


class Run:
    """One run folder: read what a run wrote, or write a new one.

    Args:
        path: the run folder.
    """

    def __init__(self, path: str):
        self.path = str(path)
        self._record = None
        self._labels = None

    def __repr__(self) -> str:
        return f"Run({self.path!r})"

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    # --- creating and finishing ------------------------------------------------

    @classmethod
    def create(cls, path: str, *, record: Optional[dict] = None) -> "Run":
        """Creates the folder (an empty existing one is accepted) for a new run; with
        ``record``, its config.json is written first and held (``hold``), then status.json.

        Raises:
            RunDirectoryError: it holds files, or cannot be created.
        """
        check_run_dir_free(path)
        existed = os.path.isdir(path)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as error:
            raise RunDirectoryError(
                f"cannot create run directory {path!r} ({error.strerror}); choose a writable --run-dir"
            ) from error
        run = cls(path)
        try:
            if record is not None:
                run.write_config(record)
                run.hold()  # before status.json says "running": a --resume of this folder now waits its turn
            run.write_status("running")
        except BaseException:  # a full disk, Ctrl-C: the folder is left as it was found
            run.release()
            for name in os.listdir(path):
                os.remove(os.path.join(path, name))
            if not existed:
                os.rmdir(path)
            raise
        return run

    @classmethod
    def reopen(cls, path: str, *, finished: bool = False) -> "Run":
        """A run folder that a killed or stopped ``train`` left, to go on with (``--resume``);
        with ``finished``, a finished one too (a search that ``tune --resume`` extends).

        Raises:
            RunDirectoryError: no run there, the run finished, or its process still runs.
        """
        run = cls(path)
        if not os.path.isfile(run.file("config.json")):
            raise RunDirectoryError(f"--resume: {path!r} holds no run (no config.json); give the --run-dir of a run "
                                    "that was stopped, or leave out --resume to start a new one")
        state = run._read_json("status.json") if os.path.isfile(run.file("status.json")) else {}
        if state.get("state") == "finished" and not finished:
            raise RunDirectoryError(f"--resume: the run in {path!r} has finished; there is nothing to resume")
        run.record  # noqa: B018 -- a damaged config.json is refused here
        run.hold()
        return run

    def hold(self) -> None:
        """Marks the run as taken by this process until it ends (a lock on config.json, which
        the system releases when the process dies, even by SIGKILL).

        Raises:
            RunDirectoryError: another process holds it.
        """
        if fcntl is None:  # Windows: not checked
            return
        self._lock = open(self.file("config.json"), "rb")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise RunDirectoryError(f"the run in {self.path!r} is still running in another process; stop it first, "
                                    "or wait for it") from None

    def release(self) -> None:
        """Ends ``hold``."""
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.close()
            self._lock = None

    def write_status(self, state: str, **details) -> None:
        write_json_atomic(self.file("status.json"), {"state": state, **details})

    def abandon(self, error: BaseException, *, epochs_done: int, keep: bool = False) -> None:
        """After a failure: a run with no finished epoch is removed (nothing blocks running the
        same command again) unless ``keep`` (a resumed run); a later failure leaves the folder
        marked "failed", for ``--resume``."""
        if epochs_done == 0 and not keep:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        reason = (f"interrupted ({'SIGTERM' if isinstance(error, Terminated) else 'Ctrl-C'})"
                  if isinstance(error, KeyboardInterrupt) else first_line(error))
        try:
            self.write_status("failed", error=reason, epochs_done=epochs_done)
        except OSError:
            pass  # the disk that failed the run may refuse this too; history.csv still shows the epochs

    # --- writing --------------------------------------------------------------

    def write_config(self, record: dict) -> None:
        write_json_atomic(self.file("config.json"), record)
        self._record = json.loads(json.dumps(record))

    def write_labels(self, class_names) -> None:
        """``labels.txt``: one class name per line, in the order of the model's outputs."""
        write_text_atomic(self.file("labels.txt"), "".join(f"{name}\n" for name in class_names))

    def write_skipped(self, skipped: list) -> None:
        """``skipped.csv``: every input that was left out, and why."""
        write_text_atomic(self.file("skipped.csv"), csv_text(("path", "reason"), skipped))

    def write_history(self, history: dict, seconds: list) -> None:
        """One row per epoch (counted from 1, on through the phases) with the columns of
        ``HISTORY_COLUMNS``; ``history`` holds Keras's metrics and a "phase" per epoch
        (all "head" if it has none)."""
        rows = []
        for index, epoch_seconds in enumerate(seconds):
            phase = history["phase"][index] if "phase" in history else "head"
            row = [index + 1, phase] + [history[name][index] for name in _METRIC_COLUMNS] + [epoch_seconds]
            rows.append([f"{value:.6g}" if isinstance(value, float) else value for value in row])
        write_text_atomic(self.file("history.csv"), csv_text(HISTORY_COLUMNS, rows))

    def write_metrics(self, metrics: dict) -> None:
        write_json_atomic(self.file("metrics.json"), metrics)

    def save_model(self, model) -> None:
        with atomic_path(self.file("model.keras")) as temporary:
            model.save(temporary)

    # --- reading --------------------------------------------------------------

    def _read_json(self, name: str) -> dict:
        path = self.file(name)
        try:
            with open(path, encoding="utf-8") as handle:
                values = json.load(handle)
        except FileNotFoundError:
            raise RunDirectoryError(f"{path} does not exist: is {self.path!r} a finished resnet-transfer run?") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RunDirectoryError(f"{path} cannot be read ({first_line(error)}); the run folder is damaged") from error
        if not isinstance(values, dict):
            raise RunDirectoryError(f"{path} is not a JSON object; the run folder is damaged")
        return values

    @property
    def record(self) -> dict:
        """The whole ``config.json``: settings, versions, data source, class names, weights."""
        if self._record is None:
            record = self._read_json("config.json")
            for key, kind in (("config", dict), ("seed", int), ("class_names", list), ("image_shape", list), ("data_source", dict)):
                if key not in record:
                    raise RunDirectoryError(
                        f"{self.file('config.json')} has no {key!r}: it was not written by this version of resnet-transfer"
                    )
                if not isinstance(record[key], kind) or isinstance(record[key], bool):
                    raise RunDirectoryError(
                        f"{self.file('config.json')} holds {key!r} as {type(record[key]).__name__}, not "
                        f"{kind.__name__}: the run folder is damaged; train the run again"
                    )
            for section in RunConfig.SECTIONS:
                if not isinstance(record["config"].get(section), dict):
                    raise self._edited(f"holds config.{section}={record['config'].get(section)!r}, not the {section} "
                                       "settings")
            shape = record["image_shape"]
            if len(shape) != 3 or not all(isinstance(side, int) and not isinstance(side, bool) for side in shape):
                raise self._edited(f"holds image_shape={shape!r}, not [height, width, channels]")
            self._record = record
        return self._record

    @property
    def config(self) -> RunConfig:
        """The run's settings as a ``RunConfig`` (checked again, so a damaged file is caught)."""
        try:
            return RunConfig.from_dict(self.record["config"])
        except ConfigError as error:
            raise RunDirectoryError(f"{self.file('config.json')} no longer gives a valid config: {error}") from error

    def _edited(self, what: str) -> RunDirectoryError:
        return RunDirectoryError(f"{self.file('config.json')} {what}: the run folder was edited or damaged; restore "
                                 "config.json from a copy, or train the run again")

    @property
    def labels(self) -> list:
        """The class names, in the order of the model's outputs (non-empty, distinct text), checked
        against labels.txt once."""
        if self._labels is not None:
            return list(self._labels)
        names = self.record["class_names"]
        if not names or not all(isinstance(name, str) and name for name in names) or len(set(names)) != len(names):
            raise self._edited(f"holds class_names={names!r}, not a list of distinct, non-empty class names (text)")
        written = self._labels_file()
        # (a different count is check_model's to name, against the model's outputs)
        if written is not None and len(written) == len(names) and not any("\n" in name for name in names) \
                and written != list(names):
            raise self._edited(f"holds class_names={names!r}, and labels.txt, written with it, says {written!r} in the "
                               "order of the model's outputs")
        self._labels = list(names)
        return list(names)

    def _labels_file(self) -> Optional[list]:
        """labels.txt's class names (None where the run has none yet)."""
        try:
            with open(self.file("labels.txt"), encoding="utf-8") as handle:
                return handle.read().split("\n")[:-1]  # (write_labels ends every name with "\n")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as error:
            raise RunDirectoryError(f"{self.file('labels.txt')} cannot be read ({first_line(error)}); the run folder "
                                    "is damaged") from error

    @property
    def image_geometry(self) -> tuple:
        """(image_size, resize) the run's images were fitted with."""
        source = self.record["data_source"]
        size, resize = source.get("image_size", self.record["image_shape"][0]), source.get("resize", "pad")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise self._edited(f"holds data_source.image_size={size!r}, not a whole number of pixels")
        if resize not in RESIZE_MODES:  # (another valid mode than the run's cannot be told from the model)
            raise self._edited(f"holds data_source.resize={resize!r}, not one of: {', '.join(RESIZE_MODES)}")
        return size, resize

    @property
    def status(self) -> str:
        try:
            return self._read_json("status.json").get("state", "unknown")
        except RunDirectoryError:
            return "unknown"

    @property
    def metrics(self) -> dict:
        return self._read_json("metrics.json")

    @property
    def history(self) -> dict:
        """``history.csv`` as a dict of column name -> list of floats ("phase": of strings)."""
        try:
            with open(self.file("history.csv"), encoding="utf-8", newline="") as handle:
                rows = list(csv.DictReader(handle))
            # Runs of 0.2.0 had one phase and no "phase" column.
            return {name: [row.get(name) or "head" for row in rows] if name == "phase" else [float(row[name]) for row in rows]
                    for name in HISTORY_COLUMNS}
        except FileNotFoundError:
            raise RunDirectoryError(f"{self.file('history.csv')} does not exist: the run has not finished an epoch") from None
        except (OSError, KeyError, TypeError, ValueError) as error:
            raise RunDirectoryError(f"{self.file('history.csv')} cannot be read ({first_line(error)})") from error

    def load_model(self):
        """Loads ``model.keras`` with plain ``keras.saving.load_model``.

        Raises:
            RunDirectoryError: the file is missing, damaged or incomplete.
        """
        path = self.file("model.keras")
        if not os.path.isfile(path):
            raise RunDirectoryError(f"{path} does not exist: is {self.path!r} a finished resnet-transfer run?")
        try:
            model = keras.saving.load_model(path)
        except Exception as error:  # zipfile, h5py and Keras raise many kinds for a damaged file
            raise RunDirectoryError(
                f"{path} cannot be loaded ({first_line(error)}): the file is damaged or incomplete; train the run again"
            ) from error
        self.check_model(model)
        return model

    def check_model(self, model) -> None:
        """Raises ``RunDirectoryError`` when config.json does not describe ``model``: as many
        class names as outputs, the image size its input takes (a hand-edited run folder)."""
        outputs, labels = model.output_shape[-1], self.labels
        if outputs != len(labels):
            raise self._edited(f"names {len(labels)} classes (class_names) and the model has {outputs} outputs")
        size, _ = self.image_geometry
        if tuple(model.input_shape[1:3]) != (size, size):
            raise self._edited(f"holds data_source.image_size={size} and the model takes {model.input_shape[1]}x"
                               f"{model.input_shape[2]} images")

    def load_dataset(self, *, splits: tuple = ("test",), allow_changed_data: bool = False) -> Dataset:
        """The run's data, split exactly as in training (same settings, seed and classes).

        Raises:
            DataError: the data no longer matches the fingerprint the run recorded
                (unless ``allow_changed_data``), or cannot be read.
        """
        size, resize = self.image_geometry  # as recorded, not decided again from today's files
        try:
            data_config = DataConfig(**{**self.record["config"]["data"], "image_size": size, "resize": resize})
        except ConfigError as error:
            raise DataError(f"the data of run {self.path!r} cannot be used any more: {error}") from error
        dataset = load_dataset(
            data_config, seed=self.record["seed"], class_names=tuple(self.labels), splits=splits,
            default_image_size=get_backbone_spec(self.record["config"]["model"]["backbone"]).default_input_size,
        )
        recorded = self.record["data_source"].get("fingerprint")
        if recorded != dataset.source.get("fingerprint") and not allow_changed_data:
            raise DataError(
                f"the data at {data_config.source!r} no longer matches run {self.path!r} (files or arrays were added, "
                "removed or changed since it trained, so its test split would differ). "
                "Pass --allow-changed-data to use the data as it is now."
            )
        return dataset
