"""train --bn-recalibrate (AdaBN): the statistics it recomputes, where they go, and the cache key they get."""

import json
import os

import keras
import numpy as np
import pytest
from conftest import requires_mnist

from resnet_transfer.config import RunConfig
from resnet_transfer.model.assembly import backbone_of
from resnet_transfer.model.batch_norm import batch_norm_layers
from resnet_transfer.training.extraction import extract
from resnet_transfer.training.train import train


def settings(tmp_path, name: str, **model) -> RunConfig:
    return RunConfig.from_dict({
        "data": {"limit": 64, "val_size": 32, "test_limit": 32},
        "model": {"backbone": "resnet50", "weights": "none", "head": "linear", "pooling": "avg", **model},
        "train": {"epochs": 1, "cache_dir": str(tmp_path / "cache"), "extract_runtime": "keras"},
        "run_dir": str(tmp_path / name),
    })


def cache_entries(tmp_path) -> set:
    return {name for name in os.listdir(tmp_path / "cache") if not name.startswith(".")}


@pytest.mark.slow
@requires_mnist
def test_bn_recalibrate_recomputes_the_statistics_saves_them_and_keys_its_features_apart(tmp_path):
    plain = train(settings(tmp_path, "plain"))
    plain_entries = cache_entries(tmp_path)
    adapted = train(settings(tmp_path, "adapted", bn_recalibrate=True, bn_images=48))
    assert len(plain_entries) == 3 and len(cache_entries(tmp_path)) == 6  # three splits each, none shared
    assert adapted.metrics["feature_cache"] == "miss"

    record = json.loads((tmp_path / "adapted" / "config.json").read_text())["weights"]["bn_recalibration"]
    assert record == {"method": "AdaBN", "images": 48, "of": 64, "seed": 0}
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["weights"]["bn_recalibration"] is None

    # A random backbone's statistics are Keras's initial ones (0 and 1); AdaBN's are the training images',
    # and the saved model keeps them.
    saved = backbone_of(keras.saving.load_model(str(tmp_path / "adapted" / "model.keras")))
    for model, recomputed in ((backbone_of(plain.model), False), (saved, True)):
        means = np.concatenate([np.asarray(layer.moving_mean) for layer in batch_norm_layers(model)])
        assert np.allclose(means, 0) != recomputed
    np.testing.assert_array_equal(np.asarray(saved.get_layer("conv1_bn").moving_variance),
                                  np.asarray(backbone_of(adapted.model).get_layer("conv1_bn").moving_variance))

    # The same settings again draw the same sample, so the same statistics: the features are the stored ones,
    # whether extract or train stored them.
    assert set(extract(settings(tmp_path, "unused", bn_recalibrate=True, bn_images=48)).values()) == {"hit"}
    again = train(settings(tmp_path, "again", bn_recalibrate=True, bn_images=48))
    assert again.metrics["feature_cache"] == "hit" and len(cache_entries(tmp_path)) == 6
    assert again.metrics["test_accuracy"] == adapted.metrics["test_accuracy"]
    # Another sample size is another backbone: its own entries.
    assert set(extract(settings(tmp_path, "unused", bn_recalibrate=True, bn_images=32)).values()) == {"miss"}
