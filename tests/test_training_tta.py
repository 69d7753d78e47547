"""train --tta: the final test also with test-time augmentation, as evaluate --tta computes it."""

import json

import pytest
from conftest import requires_mnist

from resnet_transfer.config import RunConfig
from resnet_transfer.evaluation import evaluate_run
from resnet_transfer.training.train import train


@pytest.mark.slow
@requires_mnist
def test_train_records_the_tta_metrics_evaluate_gives_beside_the_models_own(tmp_path):
    result = train(RunConfig.from_dict({
        "data": {"limit": 256, "val_size": 64, "test_limit": 64},
        "model": {"weights": "none", "backbone": "resnet50"},
        "train": {"epochs": 2, "tta": True, "cache_dir": str(tmp_path / "cache")}, "run_dir": str(tmp_path / "run")}))
    recorded = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert recorded["tta"]["views"] == 5 and recorded["tta"]["flip"] is False
    evaluated = evaluate_run(result.run_dir, tta=True, output_dir=str(tmp_path / "report"))
    assert recorded["tta"]["test_accuracy"] == pytest.approx(evaluated["tta"]["test_accuracy"], abs=1e-6)
    assert recorded["test_accuracy"] == pytest.approx(evaluated["test_accuracy"], abs=1e-6)  # the model's own stays
