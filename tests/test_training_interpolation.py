"""--interpolate (WiSE-FT): the mix of the weights before and after fine-tuning, a picked on validation."""

import json

import keras
import numpy as np
import pytest
from conftest import requires_mnist

from resnet_transfer.cli import main
from resnet_transfer.config import RunConfig
from resnet_transfer.errors import ConfigError
from resnet_transfer.training.interpolation import GRID, interpolate, load_before, mix, save_before
from resnet_transfer.training.train import train


def _weights(seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(3,)).astype("float32")]


def test_the_ends_are_the_two_models_bit_for_bit_and_unchanged_weights_keep_their_value():
    before, after = _weights(0), _weights(1)
    after[1] = before[1].copy()  # a weight the fine-tune phase left as it was
    for alpha, expected in ((0.0, before), (1.0, after)):
        for mixed, weight in zip(mix(before, after, alpha), expected):
            np.testing.assert_array_equal(mixed, weight)
    halfway = mix(before, after, 0.3)
    np.testing.assert_allclose(halfway[0], 0.7 * before[0] + 0.3 * after[0], rtol=1e-6)
    assert halfway[0].dtype == np.float32
    np.testing.assert_array_equal(halfway[1], before[1])  # exactly, not 0.7 x + 0.3 x


def test_auto_picks_the_best_a_on_the_validation_split_and_records_the_curve():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    rows = np.random.default_rng(2).normal(size=(60, 4)).astype("float32")
    before, after = _weights(0), _weights(1)
    model.set_weights(before)
    labels = np.argmax(model.predict(rows, verbose=0), axis=-1)  # the model before fine-tuning is right on all
    model.set_weights(after)
    record = interpolate(model, before, setting="auto", validation=(rows, labels))
    assert [point["alpha"] for point in record["curve"]] == list(GRID) and record["curve"][0]["val_accuracy"] == 1.0
    best = max(point["val_accuracy"] for point in record["curve"])
    assert record["alpha"] == max(point["alpha"] for point in record["curve"] if point["val_accuracy"] == best)
    for weight, expected in zip(model.get_weights(), mix(before, after, record["alpha"])):
        np.testing.assert_array_equal(weight, expected)
    model.set_weights(after)
    given = interpolate(model, before, setting="0.5", validation=(rows, labels))
    assert given["alpha"] == 0.5 and len(given["curve"]) == 1 and given["setting"] == "0.5"


def test_the_weights_before_fine_tuning_are_kept_beside_the_checkpoints(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    assert load_before(str(tmp_path), model) is None
    save_before(model, str(tmp_path / "checkpoints"))
    for kept, weight in zip(load_before(str(tmp_path / "checkpoints"), model), model.get_weights()):
        np.testing.assert_array_equal(kept, weight)
    other = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    assert load_before(str(tmp_path / "checkpoints"), other) is None  # another model's: not taken


@pytest.mark.parametrize("value", ["half", "1.5", "-0.1", True])
def test_interpolate_takes_none_auto_or_a_number_from_0_to_1(value):
    with pytest.raises(ConfigError, match="interpolate must be none, auto or a number from 0 to 1"):
        RunConfig.from_dict({"train": {"interpolate": value, "fine_tune_epochs": 1}})


def test_interpolate_without_a_fine_tune_phase_is_refused_with_one_line(tmp_path, capsys):
    assert main(["train", "--weights", "none", "--interpolate", "auto", "--run-dir", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "--interpolate changes nothing here" in error and "--fine-tune-epochs" in error


@pytest.mark.slow
@requires_mnist
def test_a_fine_tuned_run_interpolates_and_records_the_curve(tmp_path):
    result = train(RunConfig.from_dict({
        "data": {"limit": 128, "val_size": 64, "test_limit": 64},
        "model": {"weights": "none", "backbone": "resnet50"},
        "train": {"epochs": 1, "fine_tune_epochs": 1, "unfreeze": "conv5", "run_eagerly": True, "fine_tune_lr": 1e-3,
                  "interpolate": "auto", "cache_dir": str(tmp_path / "cache")},
        "run_dir": str(tmp_path / "run")}))
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())["interpolation"]
    assert record["setting"] == "auto" and len(record["curve"]) == len(GRID) and record["alpha"] in GRID
    assert record == result.metrics["interpolation"] and 0 <= record["fine_tuned_test_accuracy"] <= 1
    assert not (tmp_path / "run" / "checkpoints").exists()  # the kept weights go with the checkpoints
    page = (tmp_path / "run" / "report.html").read_text()
    assert "Weight interpolation after fine-tuning (--interpolate auto)" in page
    assert page.count("<td>yes</td>") == 1 and f"<td>{record['alpha']:g}</td>" in page
