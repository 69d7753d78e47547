import csv
import json

import numpy as np
import pytest
from conftest import requires_mnist

from resnet_transfer.cli import main
from resnet_transfer.training.lr_find import suggest_learning_rate

TINY = ["--weights", "none", "--backbone", "resnet50", "--limit", "128", "--val-size", "32", "--test-limit", "32"]


def test_the_suggestion_is_the_steepest_fall_before_the_minimum():
    rates = np.logspace(-6, 0, 61)
    # Flat at 2.3, falls fastest around 1e-3, bottoms out at 1e-2, then explodes.
    losses = 2.3 - 2.0 / (1 + np.exp(-3 * (np.log10(rates) + 3))) + np.where(rates > 1e-2, 50 * (rates - 1e-2), 0)
    suggestion, reason = suggest_learning_rate(rates, losses)
    assert 5e-4 <= suggestion <= 2e-3 and "steepest" in reason
    with pytest.raises(ValueError, match="diverged"):
        suggest_learning_rate(rates[:10], np.full(10, np.nan))
    with pytest.raises(ValueError, match="never fell"):  # no suggestion is better than the start learning rate
        suggest_learning_rate(rates, np.linspace(2.3, 9.0, len(rates)))


@requires_mnist
@pytest.mark.slow
def test_lr_find_writes_its_plot_and_a_finite_suggestion(tmp_path, capsys):
    run_dir = tmp_path / "sweep"
    assert main(["lr-find", *TINY, "--steps", "30", "--cache-dir", str(tmp_path / "cache"), "--run-dir", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    assert "suggested learning rate" in printed
    result = json.loads((run_dir / "lr_find.json").read_text())
    assert result["phase"] == "head" and np.isfinite(result["suggestion"]) and 1e-7 <= result["suggestion"] <= 1
    with open(run_dir / "lr_find.csv") as handle:
        rows = list(csv.DictReader(handle))
    rates = [float(row["learning_rate"]) for row in rows]
    assert 10 <= len(rows) <= 30 and rates == sorted(rates) and rates[0] == pytest.approx(1e-7)
    assert (run_dir / "lr_find.png").read_bytes().startswith(b"\x89PNG")
    assert main(["lr-find", *TINY, "--steps", "5", "--run-dir", str(tmp_path / "other")]) == 2  # one line, nothing left
    assert "steps=5" in capsys.readouterr().err and not (tmp_path / "other").exists()


@requires_mnist
@pytest.mark.slow
def test_reproduce_says_what_it_cannot_compare_here_and_what_random_weights_reached(tmp_path, capsys, offline_downloads):
    run_dir = tmp_path / "seed"
    assert main(["reproduce", "seed", "--backbone", "resnet50", "--limit", "128", "--val-size", "32", "--test-limit", "32",
                 "--epochs", "0", "--cache-dir", str(tmp_path / "cache"), "--run-dir", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    lines = printed[printed.index("recipe seed:"):].splitlines()  # after Keras's "Downloading data from ..."
    assert lines[0].startswith("recipe seed: expected test accuracy 0.9275")
    measured = json.loads((run_dir / "metrics.json").read_text())["test_accuracy"]
    assert lines[1] == f"measured: {measured:.4f} with --weights none (run folder {run_dir})"
    assert lines[2].startswith("comparison: cannot be made here: the ImageNet weights cannot be had here")
    assert "data.limit=128" in lines[2] and "model.backbone='resnet50'" in lines[2]
    assert json.loads((run_dir / "config.json").read_text())["config"]["recipe"] == "seed"
