"""``tune``: a search over the head's settings on cached features, with KerasTuner.

The backbone runs once (or not at all: the feature cache), and every trial trains a
head on the stored features of the training split and is scored by its best validation
accuracy, so a trial costs seconds where a run costs minutes. KerasTuner
(keras-team/keras-tuner) runs the search: Hyperband (Li et al. 2018; it also picks how
many epochs a trial gets, stopping the weak ones early) or Bayesian optimisation. What is
searched (``search_space``): the learning rate, the head (linear, seed or mlp), its
width and dropout, label smoothing, weight decay and MixUp on the features. The pooling,
the backbone, its cut and every setting not searched stay as given.

A trial trains as ``train``'s head phase does (``fitting.fit``: the same batches, seeded
order and mixing), from first weights that depend on the seed alone, so a trial scores the
same whenever it runs (after ``--resume`` too). ``best_config.json``, the given settings
with the best trial's, is a config file ``train --config`` takes as it is; ``train``'s head
starts from other first weights (drawn after the backbone's), so its validation accuracy
measures the settings again rather than repeating the trial's. Its ``epochs`` is the epoch
at which the best trial reached its best validation accuracy.

The run folder holds ``tune.csv`` (one row per trial), ``best_config.json``,
``tune.png`` (each trial's score and the best so far), ``tune.json`` (the search's own
settings) and KerasTuner's project folder (``keras_tuner/``), from which ``--resume``
goes on: finished trials are kept and an unfinished one runs again. A search that ended
(its trials done, or ``--max-minutes`` passed) goes on the same way with more of either.

Example:
    >>> result = tune(RunConfig.from_dict({"model": {"weights": "none"}}), trials=20)
    >>> result.best_config["train"]["learning_rate"]
"""

import contextlib
import csv
import io
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass
from typing import Optional

import json

import keras
import keras_tuner

from resnet_transfer.config import TUNE_SEARCHERS, RunConfig, check_settings_take_effect, flat_settings
from resnet_transfer.recipes import apply_recipe
from resnet_transfer.errors import ConfigError, DataError, ResnetTransferError, RunDirectoryError
from resnet_transfer.files import first_line, write_json_atomic, write_text_atomic
from resnet_transfer.model.assembly import backbone_of
from resnet_transfer.model.heads import build_head, classifier_on_features
from resnet_transfer.model.precision import precision_policy
from resnet_transfer.report import save_figure, subplots
from resnet_transfer.runs import Run, RunContext, check_run_dir_free, default_run_dir
from resnet_transfer.signals import watching_interrupts, without_retracing_notices
from resnet_transfer.training.backbone_pass import stored_features
from resnet_transfer.training.callbacks import StopOnInterrupt
from resnet_transfer.training.fitting import Phase, balanced_class_weight, compile_on_features, fit
from resnet_transfer.training.setup import config_record, config_values, prepare
from resnet_transfer.training.train import changed_settings
from resnet_transfer.verbosity import verbosity

__all__ = ["SEARCHERS", "TuneResult", "search_space", "tune"]

logger = logging.getLogger(__name__)

SEARCHERS = TUNE_SEARCHERS
PROJECT = "keras_tuner"
_SEARCH_FILE = "tune.json"
_COLUMNS = ("trial", "status", "val_accuracy", "best_epoch", "seconds", "learning_rate", "head", "head_units", "dropout",
            "label_smoothing", "weight_decay", "mixup", "epochs_trained")


@dataclass
class TuneResult:
    """The search's outcome: its folder, the best trial's settings as a config, and figures."""

    run_dir: str
    best_config: dict
    best_val_accuracy: float
    trials: int


def search_space(hp) -> dict:
    """The settings a trial tries, drawn from KerasTuner's ``hp``: {"model": {...}, "train": {...}}
    with only the settings that take effect (no width for a linear head, no dropout but the mlp's)."""
    head = hp.Choice("head", ["linear", "seed", "mlp"])
    model = {"head": head}
    if head in ("seed", "mlp"):
        with hp.conditional_scope("head", ["seed", "mlp"]):
            model["head_units"] = hp.Choice("head_units", [128, 256, 512, 1024])
    if head == "mlp":
        with hp.conditional_scope("head", ["mlp"]):
            model["dropout"] = hp.Float("dropout", 0.0, 0.5, step=0.1)
    train = {
        "learning_rate": hp.Float("learning_rate", 1e-4, 1e-2, sampling="log"),
        "label_smoothing": hp.Choice("label_smoothing", [0.0, 0.1]),
        "weight_decay": hp.Choice("weight_decay", [0.0, 1e-4, 1e-3, 1e-2]),
        "mixup": hp.Choice("mixup", [0.0, 0.2, 0.4]),
    }
    return {"model": model, "train": train}


def tune(config: RunConfig, *, trials: int = 30, max_minutes: Optional[float] = None, searcher: str = "hyperband",
         max_epochs: Optional[int] = None, resume: bool = False) -> TuneResult:
    """Searches the head's settings for ``config``'s data and backbone; writes the run folder.

    Args:
        config: the settings every trial starts from (``config.run_dir``: the folder; None:
            ``runs/<UTC timestamp>-tune``).
        trials: at most this many trials.
        max_minutes: no new trial starts after this many minutes from the call, the backbone's
            pass included (None: no limit).
        searcher: "hyperband" or "bayesian" (KerasTuner's tuners).
        max_epochs: the most epochs a trial trains (None: ``config.train.epochs``).
        resume: go on with the search in ``config.run_dir`` (the same settings).

    Raises:
        ConfigError, DataError, WeightsError, RunDirectoryError: bad input; nothing is written.
        RunInterrupted: Ctrl-C or SIGTERM after a finished trial: the folder stays for ``--resume``.
    """
    max_epochs = config.train.epochs if max_epochs is None else max_epochs
    search = _check(config, trials=trials, max_minutes=max_minutes, searcher=searcher, max_epochs=max_epochs)
    run_dir = config.run_dir or default_run_dir("tune")
    config = config.updated({"run_dir": run_dir})
    run = _reopen(run_dir, config, search) if resume else None
    if run is None:
        check_run_dir_free(run_dir)
    deadline = None if max_minutes is None else time.monotonic() + 60 * max_minutes
    with watching_interrupts() as interrupts:
        if run is not None:
            with RunContext(run=run, interrupts=interrupts, resumable=True, unit="trials",
                            epochs_done=_finished_on_disk(run)) as context:
                prepared = _Prepared(config)
                if run.record["data_source"].get("fingerprint") != prepared.dataset.source.get("fingerprint"):
                    raise DataError(f"--resume: the data at {config.data.source!r} changed since the search in "
                                    f"{run.path!r} started (files or arrays were added, removed or changed); start a "
                                    "new search instead")
                write_json_atomic(run.file(_SEARCH_FILE), search)  # (the budget given this time)
                return _search(context, prepared, config, searcher=searcher, trials=trials, max_epochs=max_epochs,
                               deadline=deadline)
        prepared = _Prepared(config)  # bad input fails here, before the folder is made
        record = config_record(config, run_dir, prepared.dataset, prepared.model, prepared.weights_path,
                               prepared.class_weight)
        with RunContext(run_dir, record=record, interrupts=interrupts, resumable=True, unit="trials") as context:
            write_json_atomic(context.run.file(_SEARCH_FILE), search)
            return _search(context, prepared, config, searcher=searcher, trials=trials, max_epochs=max_epochs,
                           deadline=deadline)


class _Prepared:
    """What every trial shares: the data, the model (for its backbone's output), the stored
    features of the training and validation splits, the class weights."""

    def __init__(self, config: RunConfig):
        self.dataset, self.model, self.weights_path = prepare(config, splits=("train", "val"))
        with precision_policy(config.train.mixed_precision):
            self.features, _, _ = stored_features(self.model, self.dataset, config, splits=("train", "val"))
        self.feature_shape = tuple(backbone_of(self.model).output.shape[1:])
        self.class_weight = (balanced_class_weight(self.dataset.y_train, self.dataset.num_classes)
                             if config.train.class_weight else None)


def _search(context: RunContext, prepared: _Prepared, config: RunConfig, *, searcher: str, trials: int,
            max_epochs: int, deadline: Optional[float]) -> TuneResult:
    hypermodel = _HeadSearch(config, prepared.feature_shape, prepared.dataset, prepared.features,
                             max_epochs=max_epochs, class_weight=prepared.class_weight, interrupts=context.interrupts)
    _restore_state(context.run)
    said = io.StringIO()
    with contextlib.redirect_stdout(said):  # ("Reloading Tuner from ...": stdout holds the result alone)
        try:
            tuner = _make_tuner(searcher, hypermodel, config, trials=trials, max_epochs=max_epochs, deadline=deadline,
                                context=context)
        except (ValueError, KeyError, TypeError) as error:  # (JSONDecodeError is a ValueError)
            raise RunDirectoryError(f"--resume: KerasTuner's state in {context.run.file(PROJECT)!r} is damaged "
                                    f"({first_line(error)}); start a new search with another --run-dir") from error
    for line in said.getvalue().splitlines():
        logger.debug("KerasTuner: %s", line)
    context.epochs_done = _finished(tuner)
    with contextlib.suppress(_TimeUp), _expected_notices():
        try:
            tuner.search(verbose=0)
        except _Fatal as fatal:
            raise fatal.error from None
    result = _write(context.run, tuner, config)
    context.finish(trials=result.trials)
    return result


@contextlib.contextmanager
def _expected_notices():
    """Every trial is a new model (TensorFlow's retracing notice), and Hyperband's later rounds
    load a head's weights from an earlier trial into a fresh optimizer (Keras's notice that the
    optimizer's saved variables are skipped): both are how the search works, not advice."""
    with without_retracing_notices(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        yield


class _TimeUp(Exception):
    """``--max-minutes`` has passed: no new trial starts."""


class _Fatal(keras_tuner.errors.FatalError):
    """Our own error in a trial (bad input) or a disk error: KerasTuner would record it as a failed trial
    and go on; a ``FatalError`` ends the search, and ``tune`` raises the error itself."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


class _HeadSearch(keras_tuner.HyperModel):
    """Builds a head on features for a trial and trains it as ``train``'s head phase does."""

    def __init__(self, config: RunConfig, feature_shape: tuple, dataset, features: dict, *, max_epochs: int,
                 class_weight: Optional[dict], interrupts):
        super().__init__(name="head_search")
        self.interrupts = interrupts
        self.config, self.feature_shape, self.dataset, self.features = config, feature_shape, dataset, features
        self.max_epochs, self.class_weight = max_epochs, class_weight

    def trial_config(self, hp) -> RunConfig:
        return self.config.updated(search_space(hp))

    def build(self, hp):
        trial = self.trial_config(hp)
        keras.utils.set_random_seed(trial.train.seed)  # a trial's first weights depend on the seed alone
        head = build_head(self.feature_shape, head=trial.model.head, pooling=trial.model.pooling,
                          units=trial.model.head_units, dropout=trial.model.dropout, num_classes=self.dataset.num_classes)
        trainer = classifier_on_features(head)
        compile_on_features(trainer, trial, trial.train.learning_rate)
        return trainer

    def fit(self, hp, model, *args, callbacks=None, epochs=None, initial_epoch=0, **kwargs):
        trial = self.trial_config(hp)
        epochs = self.max_epochs if epochs is None else epochs
        phase = Phase("head", epochs - initial_epoch, initial_epoch, trial.train.learning_rate)
        started = time.perf_counter()
        quiet = contextlib.nullcontext() if logger.isEnabledFor(logging.DEBUG) else verbosity("quiet")
        try:
            with quiet:
                history = fit(model, self.features["train"], self.dataset.y_train,
                              (self.features["val"], self.dataset.y_val), config=trial, phase=phase,
                              callbacks=[*(callbacks or []), StopOnInterrupt(self.interrupts)],
                              class_weight=self.class_weight, small_model=True)
        except (ResnetTransferError, OSError) as error:  # (KerasTuner would count it as a failed trial)
            raise _Fatal(error) from error
        scores = [score if math.isfinite(score) else 0.0 for score in history.get("val_accuracy", [])]
        best = max(range(len(scores)), key=scores.__getitem__) if scores else -1
        return {"val_accuracy": scores[best] if scores else 0.0, "best_epoch": initial_epoch + best + 1,
                "seconds": time.perf_counter() - started, "epochs_trained": epochs}


def _make_tuner(searcher: str, hypermodel, config: RunConfig, *, trials: int, max_epochs: int,
                deadline: Optional[float], context: RunContext):
    class Searching:
        """A tuner that stops at the deadline or at Ctrl-C (even one that native code swallowed),
        counts finished trials for the run folder and keeps a copy of KerasTuner's state."""

        def pre_create_trial(self):
            if context.interrupts:
                raise KeyboardInterrupt
            if deadline is not None and time.monotonic() > deadline:
                logger.info("--max-minutes has passed: no new trial starts")
                raise _TimeUp
            super().pre_create_trial()

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            context.epochs_done = _finished(self)
            _keep_state(context.run)
            metrics = trial.metrics
            if metrics.exists("val_accuracy"):
                logger.info("trial %s: validation accuracy %.4f in %.1f s (%s)", trial.trial_id,
                            metrics.get_last_value("val_accuracy"), metrics.get_last_value("seconds"),
                            ", ".join(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"
                                      for name, value in trial.hyperparameters.values.items()
                                      if not name.startswith("tuner/")))

    objective = keras_tuner.Objective("val_accuracy", direction="max")
    common = {"objective": objective, "seed": config.train.seed, "directory": context.run.path,
              "project_name": PROJECT, "overwrite": False, "max_consecutive_failed_trials": 1}
    if searcher == "hyperband":
        kind = type("Hyperband", (Searching, keras_tuner.Hyperband), {})
        # Hyperband's brackets alone would end after a few trials with few epochs: its iterations go on until
        # --trials (Hyperband has no max_trials of its own; its oracle honours one).
        tuner = kind(hypermodel, max_epochs=max_epochs, factor=3, hyperband_iterations=trials, **common)
        tuner.oracle.max_trials = trials
        return tuner
    kind = type("BayesianOptimization", (Searching, keras_tuner.BayesianOptimization), {})
    return kind(hypermodel, max_trials=trials, **common)


_KEPT_STATE = "oracle.kept.json"


def _keep_state(run: Run) -> None:
    """A copy of KerasTuner's oracle.json after each finished trial, written atomically:
    KerasTuner writes that file in place, so a stop during its write leaves it empty."""
    path = os.path.join(run.file(PROJECT), "oracle.json")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    json.loads(text)  # (only a whole state is kept)
    write_text_atomic(run.file(_KEPT_STATE), text)


def _restore_state(run: Run) -> None:
    """Puts the kept copy back where a stop left KerasTuner's oracle.json damaged."""
    path, kept = os.path.join(run.file(PROJECT), "oracle.json"), run.file(_KEPT_STATE)
    if not os.path.isfile(path) or not os.path.isfile(kept):
        return
    try:
        with open(path, encoding="utf-8") as handle:
            json.load(handle)
    except ValueError:
        logger.warning("KerasTuner's oracle.json was cut short by the stop; going on from the copy kept after the "
                       "last finished trial")
        with open(kept, encoding="utf-8") as handle:
            write_text_atomic(path, handle.read())


def _finished_on_disk(run: Run) -> int:
    """The finished trials KerasTuner's project folder records (before the tuner is made)."""
    count = 0
    for name in sorted(os.listdir(run.file(PROJECT))) if os.path.isdir(run.file(PROJECT)) else ():
        try:
            with open(os.path.join(run.file(PROJECT), name, "trial.json"), encoding="utf-8") as handle:
                count += json.load(handle).get("status") == "COMPLETED"
        except (OSError, ValueError, AttributeError):
            continue
    return count


def _finished(tuner) -> int:
    return sum(1 for trial in tuner.oracle.trials.values() if trial.status == "COMPLETED")


def _check(config: RunConfig, *, trials, max_minutes, searcher: str, max_epochs) -> dict:
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"--trials must be a whole number of at least 1. Received: {trials!r}")
    if max_minutes is not None and (isinstance(max_minutes, bool) or not isinstance(max_minutes, (int, float))
                                    or not math.isfinite(max_minutes) or max_minutes <= 0):
        raise ConfigError(f"--max-minutes must be a number of minutes above 0. Received: {max_minutes!r}")
    if searcher not in SEARCHERS:
        raise ConfigError(f"--searcher must be one of: {', '.join(SEARCHERS)}. Received: {searcher!r}")
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
        raise ConfigError(f"--epochs must be at least 1 for tune: the most epochs a trial trains. Received: {max_epochs!r}")
    if config.train.feature_cache == "off":
        raise ConfigError("tune trains every trial on cached features, and --no-cache turns the cache off: "
                          "leave out --no-cache")
    if config.train.augment != "none" and config.train.augment_phase == "both":
        raise ConfigError("tune trains every trial on cached features, and --augment-phase both augments the head "
                          "phase's images: leave out --augment-phase both")
    check_settings_take_effect(config)
    _refuse_searched_settings(config)
    return {"searcher": searcher, "max_epochs": max_epochs, "trials": trials, "max_minutes": max_minutes}


SEARCHED = ("model.head", "model.head_units", "model.dropout", "train.learning_rate", "train.label_smoothing",
            "train.weight_decay", "train.mixup")  # what search_space sets


def _refuse_searched_settings(config: RunConfig) -> None:
    """A searched setting given (apart from its default and its recipe's value) would change
    nothing: the idle-flag rule, for tune."""
    defaults, given = flat_settings(RunConfig().to_dict()), flat_settings(config.to_dict())
    recipe = flat_settings(apply_recipe({"recipe": config.recipe}))
    for name in SEARCHED:
        if given[name] != defaults[name] and given[name] != recipe.get(name, defaults[name]):
            flag = "--" + name.split(".")[1].replace("_", "-")
            raise ConfigError(f"{flag} changes nothing in tune: the search tries its values itself. Leave out {flag} "
                              f"(best_config.json will hold the value it picks). Received: {name}={given[name]!r}")


def _reopen(run_dir: str, config: RunConfig, search: dict) -> Run:
    """The stopped search in ``run_dir``, if its settings are these (its budget may differ)."""
    if not os.path.isfile(os.path.join(run_dir, _SEARCH_FILE)):
        raise RunDirectoryError(f"--resume: {run_dir!r} holds no search of tune (no {_SEARCH_FILE}); give the "
                                "--run-dir of a stopped tune, or leave out --resume to start a new one")
    run = Run.reopen(run_dir, finished=True)  # (a finished search goes on with more --trials or --max-minutes)
    try:
        before = run.config
        try:
            with open(run.file(_SEARCH_FILE), encoding="utf-8") as handle:
                stored = json.load(handle)
        except (OSError, ValueError) as error:
            raise RunDirectoryError(f"--resume: {run.file(_SEARCH_FILE)!r} cannot be read ({first_line(error)}); "
                                    "start a new search with another --run-dir") from error
        if not isinstance(stored, dict):
            raise RunDirectoryError(f"--resume: {run.file(_SEARCH_FILE)!r} holds no search settings (a JSON object); "
                                    "start a new search with another --run-dir")
        changed = [entry for entry in changed_settings(config_values(before, run_dir), config_values(config, run_dir))
                   if not entry.startswith("run_dir ")]
        changed += [f"{name} (was {stored.get(name)!r}, now {search[name]!r})" for name in ("searcher",)
                    if stored.get(name) != search[name]]
        if changed:
            raise ConfigError(f"--resume: {len(changed)} setting(s) differ from the search's: {'; '.join(changed)}. "
                              "A resumed search keeps its settings (--trials and --max-minutes may change): give the "
                              "same ones, or start a new search with another --run-dir")
    except BaseException:
        run.release()
        raise
    return run


def _write(run: Run, tuner, config: RunConfig) -> TuneResult:
    rows = []
    for trial_id, trial in sorted(tuner.oracle.trials.items(), key=lambda item: int(item[0])):
        values, metrics = trial.hyperparameters.values, trial.metrics

        def last(name):
            return metrics.get_last_value(name) if metrics.exists(name) else None

        rows.append({"trial": trial_id, "status": trial.status, "val_accuracy": last("val_accuracy"),
                     "best_epoch": last("best_epoch"), "seconds": last("seconds"),
                     **{name: values.get(name) for name in _COLUMNS[5:-1]}, "epochs_trained": last("epochs_trained")})
    done = [row for row in rows if row["status"] == "COMPLETED" and row["val_accuracy"] is not None]
    if not done:
        raise ConfigError("tune finished no trial before --max-minutes passed: give it more minutes")
    best_row = max(done, key=lambda row: (row["val_accuracy"], -int(row["trial"])))  # (ties: the first)
    best_trial = tuner.oracle.trials[best_row["trial"]]
    settings = search_space(best_trial.hyperparameters.copy())  # (a set value is what hp.Choice returns)
    settings["train"]["epochs"] = max(1, int(best_row["best_epoch"]))
    defaults = RunConfig().model  # a head's setting it does not take goes back to its default (the idle-flag rule)
    settings["model"] = {"head_units": defaults.head_units, "dropout": defaults.dropout, **settings["model"]}
    best = config.updated(settings)
    best_values = config_values(best, run.path)
    best_values.pop("run_dir", None)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({name: "" if value is None else value for name, value in row.items()} for row in rows)
    write_text_atomic(run.file("tune.csv"), text.getvalue())
    write_json_atomic(run.file("best_config.json"), best_values)
    _plot(run, done)
    logger.info("best trial %s: validation accuracy %.4f; its settings: %s", best_row["trial"],
                best_row["val_accuracy"], run.file("best_config.json"))
    return TuneResult(run.path, best_values, float(best_row["val_accuracy"]), len(done))


def _plot(run: Run, done: list) -> None:
    order = sorted(done, key=lambda row: int(row["trial"]))
    scores = [row["val_accuracy"] for row in order]
    best_so_far = [max(scores[: index + 1]) for index in range(len(scores))]
    figure, axis = subplots(figsize=(7, 4))
    axis.scatter(range(1, len(scores) + 1), scores, s=14, label="trial")
    axis.step(range(1, len(scores) + 1), best_so_far, where="post", color="red", label="best so far")
    axis.set_xlabel("finished trial")
    axis.set_ylabel("best validation accuracy")
    axis.set_title("tune: the head's settings on cached features")
    axis.grid(alpha=0.3)
    axis.legend()
    save_figure(figure, run.file("tune.png"))

