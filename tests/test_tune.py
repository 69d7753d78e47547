"""tune: a KerasTuner search over the head's settings on cached features."""

import csv
import os

import keras_tuner
import pytest
from conftest import requires_mnist

from resnet_transfer.cli import main
from resnet_transfer.config import RunConfig, check_settings_take_effect, load_config_file
from resnet_transfer.errors import ConfigError
from resnet_transfer.training.tune import SEARCHED, search_space, tune


def test_a_trial_sets_only_the_settings_its_head_takes():
    hp = keras_tuner.HyperParameters()
    first = search_space(hp)  # (the first values: KerasTuner's defaults)
    assert first["model"] == {"head": "linear"}
    assert set(first["train"]) == {"learning_rate", "label_smoothing", "weight_decay", "mixup"}
    hp.values.update({"head": "mlp", "head_units": 256, "dropout": 0.3})
    assert search_space(hp)["model"] == {"head": "mlp", "head_units": 256, "dropout": 0.3}
    hp.values["head"] = "seed"
    assert search_space(hp)["model"] == {"head": "seed", "head_units": 256}
    searched = {f"{section}.{name}" for section, values in search_space(hp).items() for name in values}
    assert searched | {"model.dropout"} == set(SEARCHED)  # (the mlp head adds its dropout)
    for values in (search_space(hp), first):  # every trial is a config that train takes
        check_settings_take_effect(RunConfig().updated(values))


@pytest.mark.parametrize("arguments, message", [
    ({"trials": 0}, "--trials must be a whole number of at least 1"),
    ({"max_minutes": -1.0}, "--max-minutes must be a number of minutes above 0"),
    ({"searcher": "grid"}, "--searcher must be one of: hyperband, bayesian"),
    ({"max_epochs": 0}, "--epochs must be at least 1 for tune"),
    ({"settings": {"train": {"feature_cache": "off"}}}, "leave out --no-cache"),
    ({"settings": {"train": {"augment": "light", "augment_phase": "both"}}}, "leave out --augment-phase both"),
    ({"settings": {"model": {"head": "linear", "head_units": 64}}}, "--head-units changes nothing here"),
    ({"settings": {"train": {"learning_rate": 0.01}}}, "--learning-rate changes nothing in tune: the search tries"),
    ({"settings": {"model": {"head": "mlp"}}}, "--head changes nothing in tune"),
    ({"settings": {"train": {"mixup": 0.2}}}, "--mixup changes nothing in tune"),
])
def test_bad_search_settings_are_refused_before_anything_is_written(tmp_path, arguments, message):
    settings = arguments.pop("settings", {})
    config = RunConfig.from_dict({**settings, "model": {"weights": "none", **settings.get("model", {})},
                                  "run_dir": str(tmp_path / "search")})
    with pytest.raises(ConfigError, match=message):
        tune(config, **arguments)
    assert not os.path.exists(tmp_path / "search")


def test_the_command_refuses_a_bad_flag_with_one_line(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["tune", "--trials", "0"])
    assert stopped.value.code == 2
    assert "argument --trials: expected a whole number of at least 1, got '0'" in capsys.readouterr().err


def test_train_does_not_resume_into_a_search_of_tune(tmp_path, capsys):
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "tune.json").write_text("{}")
    assert main(["train", "--weights", "none", "--run-dir", str(tmp_path / "search"), "--resume"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "holds a search of tune, not a train run" in error
    assert os.listdir(tmp_path / "search") == ["tune.json"]


def test_resuming_a_search_with_a_damaged_tune_json_is_one_line(tmp_path, capsys):
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "tune.json").write_text("[1, 2]")
    (tmp_path / "search" / "config.json").write_text("{}")
    assert main(["tune", "--weights", "none", "--run-dir", str(tmp_path / "search"), "--resume"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "Traceback" not in error


def _rows(path) -> list:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
@requires_mnist
def test_a_search_writes_its_trials_and_a_best_config_train_takes_and_goes_on_with_more_trials(tmp_path):
    config = RunConfig.from_dict({
        "data": {"limit": 256, "val_size": 64, "test_limit": 64},
        "model": {"weights": "none", "backbone": "resnet50"},
        "train": {"epochs": 2, "cache_dir": str(tmp_path / "cache")}, "run_dir": str(tmp_path / "search")})
    result = tune(config, trials=4)  # (Hyperband's first brackets at 2 epochs hold 2 trials: its iterations go on)
    rows = _rows(tmp_path / "search" / "tune.csv")
    assert [row["status"] for row in rows] == ["COMPLETED"] * 4 == ["COMPLETED"] * result.trials
    assert result.best_val_accuracy == max(float(row["val_accuracy"]) for row in rows)
    assert os.path.getsize(tmp_path / "search" / "tune.png") > 0
    best = load_config_file(str(tmp_path / "search" / "best_config.json"))
    check_settings_take_effect(best)  # train --config takes it as it is
    best_row = next(row for row in rows if float(row["val_accuracy"]) == result.best_val_accuracy)
    assert (best.model.head, best.train.learning_rate) == (best_row["head"], float(best_row["learning_rate"]))
    assert best.data == config.data and best.model.backbone == "resnet50"

    (tmp_path / "search" / "keras_tuner" / "oracle.json").write_text("")  # as a stop in KerasTuner's write leaves it
    more = tune(config, trials=6, resume=True)  # a finished search goes on with more trials
    assert _rows(tmp_path / "search" / "tune.csv")[:4] == rows and more.trials == 6
    with pytest.raises(ConfigError, match="setting\\(s\\) differ from the search's: train.seed"):
        tune(config.updated({"train": {"seed": 1}}), trials=6, resume=True)


@pytest.mark.slow
@requires_mnist
def test_a_search_that_finishes_no_trial_in_its_minutes_leaves_nothing(tmp_path):
    config = RunConfig.from_dict({
        "data": {"limit": 128, "val_size": 32, "test_limit": 32}, "model": {"weights": "none", "backbone": "resnet50"},
        "train": {"epochs": 2, "cache_dir": str(tmp_path / "cache")}, "run_dir": str(tmp_path / "search")})
    with pytest.raises(ConfigError, match="tune finished no trial before --max-minutes passed"):
        tune(config, trials=3, max_minutes=1e-6)
    assert not os.path.exists(tmp_path / "search")
