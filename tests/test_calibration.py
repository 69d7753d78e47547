"""Temperature scaling: the fit, the figures, the fold into the last layer, and a run's record."""

import json
import os

import keras
import numpy as np
import pytest

from resnet_transfer.calibration import (
    calibrate, expected_calibration_error, fit_temperature, fold_temperature, negative_log_likelihood,
    scale_probabilities,
)
from resnet_transfer.model.heads import build_head


def _softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)


def _overconfident(count=20000, classes=5, true_temperature=2.0, seed=0):
    """Probabilities softmax(z) whose labels were drawn from softmax(z / T): calibrated at T."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 4, size=(count, classes))
    truth = _softmax(logits / true_temperature)
    labels = np.array([rng.choice(classes, p=row) for row in truth])
    return _softmax(logits).astype(np.float32), labels


def test_the_fitted_temperature_is_the_one_the_labels_were_drawn_with():
    probabilities, labels = _overconfident()
    assert fit_temperature(probabilities, labels) == pytest.approx(2.0, abs=0.1)


def test_scaling_lowers_the_error_and_the_likelihood_and_keeps_every_prediction():
    probabilities, labels = _overconfident(seed=1)
    held_out, held_labels = _overconfident(seed=2)
    inputs = keras.Input((1, 1, 8))
    model = keras.Model(inputs, build_head((1, 1, 8), head="linear", num_classes=5)(inputs))
    record, calibrated = calibrate(model, probabilities, labels, held_out, held_labels)
    assert record["test"]["ece_after"] <= record["test"]["ece_before"] / 2
    assert record["test"]["nll_after"] < record["test"]["nll_before"]
    assert np.array_equal(calibrated.argmax(axis=1), held_out.argmax(axis=1))
    assert record["test"]["nll_after"] == pytest.approx(negative_log_likelihood(calibrated, held_labels))


def test_expected_calibration_error_of_a_known_case():
    # 100 images all at confidence 0.9, half of them right: a gap of 0.4 in the one bin they fill
    probabilities = np.tile([[0.9, 0.1]], (100, 1))
    labels = np.array([0] * 50 + [1] * 50)
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.4)
    assert expected_calibration_error(probabilities, np.zeros(100, int)) == pytest.approx(0.1)


def test_fit_temperature_refuses_labels_outside_the_classes():
    with pytest.raises(ValueError, match="class indices below 2"):
        fit_temperature(np.full((3, 2), 0.5), np.array([0, 1, 2]))


def test_the_folded_model_gives_exactly_the_softmax_of_the_logits_over_t_and_loads_in_plain_keras(tmp_path):
    inputs = keras.Input((1, 1, 16), name="features")
    head = build_head((1, 1, 16), head="seed", units=12, num_classes=4)
    model = keras.Model(inputs, head(inputs))
    x = np.random.default_rng(0).normal(size=(32, 1, 1, 16)).astype("float32")
    # the logits, computed from the head's own weights: Flatten -> Dense(relu) -> Dense
    hidden_kernel, hidden_bias = head.get_layer("hidden").get_weights()
    kernel, bias = head.get_layer("probabilities").get_weights()
    logits = np.maximum(x.reshape(32, 16) @ hidden_kernel + hidden_bias, 0) @ kernel + bias

    fold_temperature(model, 2.5)

    assert np.allclose(model.predict(x, verbose=0), _softmax(logits / 2.5), atol=1e-6)
    path = str(tmp_path / "folded.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert [layer.name for layer in reloaded.get_layer("head").layers] == ["pooling", "hidden", "probabilities"]
    assert np.allclose(reloaded.predict(x, verbose=0), _softmax(logits / 2.5), atol=1e-6)


def test_fold_refuses_a_temperature_that_is_no_positive_number():
    inputs = keras.Input((1, 1, 4))
    model = keras.Model(inputs, build_head((1, 1, 4), head="linear", num_classes=2)(inputs))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            fold_temperature(model, bad)


def test_scale_probabilities_at_one_changes_nothing():
    probabilities, _ = _overconfident(count=100)
    assert np.allclose(scale_probabilities(probabilities, 1.0), probabilities, atol=1e-6)


@pytest.mark.slow
def test_a_run_records_its_calibration_and_saves_the_calibrated_model(small_config, tmp_path):
    from resnet_transfer.evaluation import evaluate_run
    from resnet_transfer.training.train import train

    result = train(small_config(tmp_path / "run", epochs=3, cache_dir=str(tmp_path / "cache")))
    with open(os.path.join(result.run_dir, "metrics.json")) as handle:
        metrics = json.load(handle)
    record = metrics["calibration"]
    assert record["method"] == "temperature" and record["temperature"] > 0
    assert record["val"]["nll_after"] <= record["val"]["nll_before"] + 1e-9  # (T = 1 is among those tried)
    assert metrics["test_loss"] == pytest.approx(record["test"]["nll_after"], abs=1e-4)
    assert os.path.isfile(os.path.join(result.run_dir, "reliability.png"))
    with open(os.path.join(result.run_dir, "report.html")) as handle:
        assert "Calibration: reliability diagram" in handle.read()
    # the saved model is the calibrated one: evaluate (which loads model.keras) finds the same loss
    assert evaluate_run(result.run_dir)["test_loss"] == pytest.approx(metrics["test_loss"], abs=1e-4)

    raw = train(small_config(tmp_path / "raw", epochs=3, cache_dir=str(tmp_path / "cache"), calibrate="none"))
    assert raw.metrics["calibration"] is None
    assert not os.path.exists(os.path.join(raw.run_dir, "reliability.png"))
    assert raw.metrics["test_accuracy"] == result.metrics["test_accuracy"]  # the same predictions
    assert raw.metrics["test_loss"] == pytest.approx(record["test"]["nll_before"], abs=1e-4)


def _tiny_model():
    inputs = keras.Input((1, 1, 4))
    return keras.Model(inputs, build_head((1, 1, 4), head="linear", num_classes=2)(inputs))


def _unchanged(model, weights) -> bool:
    return all(np.array_equal(before, variable.numpy()) for before, variable in zip(weights, model.weights))


def test_a_split_that_cannot_tell_a_temperature_leaves_the_model_as_it_is_and_says_why(caplog):
    """Two images, a split without a mistake, or probabilities of a diverged training: no temperature is folded."""
    rng = np.random.default_rng(0)
    probabilities, labels = _overconfident(count=200, classes=2, seed=3)
    right = np.eye(2, dtype=np.float32)[labels] * 0.8 + 0.1  # every image right, at 0.9
    cases = {"2 image(s), fewer than the 50": (probabilities[:2], labels[:2]),
             "classifies all 200 validation images correctly": (right, labels),
             "not finite numbers": (np.where(rng.random(probabilities.shape) < 0.1, np.nan, probabilities), labels)}
    for reason, (validation, validation_labels) in cases.items():
        model = _tiny_model()
        weights = [variable.numpy().copy() for variable in model.weights]
        with caplog.at_level("WARNING", logger="resnet_transfer.calibration"):
            record, calibrated = calibrate(model, validation, validation_labels, probabilities, labels)
        assert _unchanged(model, weights), reason
        assert record["method"] == "none" and reason in record["skipped"] and record["temperature"] == 1.0
        assert np.array_equal(calibrated, probabilities)
        assert record["test"]["nll_after"] == record["test"]["nll_before"]  # (what train.py logs still exists)
        assert reason in caplog.text and "calibration skipped" in caplog.text
        caplog.clear()


def test_probabilities_that_are_not_finite_have_no_calibration_error_and_raise_no_warning(tmp_path):
    import warnings

    from resnet_transfer.calibration import plot_reliability

    nan = np.full((10, 3), np.nan, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (numpy's "invalid value encountered in cast" came out on stderr)
        assert np.isnan(expected_calibration_error(nan, np.zeros(10, int)))  # (not 0: that reads "perfect")
        plot_reliability(nan, nan, np.zeros(10, int), str(tmp_path / "reliability.png"))
    with pytest.raises(ValueError, match="needs finite probabilities"):
        fit_temperature(nan, np.zeros(10, int))
