import numpy as np
import pytest

from resnet_transfer.config import ModelConfig, RunConfig
from resnet_transfer.model.assembly import backbone_of, build_model
from resnet_transfer.training.fitting import balanced_class_weight, choose_path


def test_balanced_weights_are_inverse_class_frequency():
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
    weights = balanced_class_weight(labels, num_classes=3)
    assert weights == pytest.approx({0: 10 / 18, 1: 10 / 9, 2: 10 / 3})


def test_the_cached_path_is_taken_only_for_a_frozen_backbone():
    model = build_model(ModelConfig(backbone="resnet50", weights="none"), image_shape=(32, 32, 3), num_classes=2)
    use_cache, _ = choose_path(RunConfig(), model)
    assert use_cache
    use_cache, reason = choose_path(RunConfig.from_dict({"train": {"feature_cache": "off"}}), model)
    assert not use_cache and "--no-cache" in reason
    backbone_of(model).trainable = True
    use_cache, reason = choose_path(RunConfig(), model)
    assert not use_cache and "trainable" in reason
