import keras
import numpy as np
import pytest

from resnet_transfer.errors import ConfigError
from resnet_transfer.model.heads import build_head, classifier_on_features, resolve_pooling

SEED_HEAD = 2048 * 1000 + 1000 + 1000 * 10 + 10  # 2,059,010: the article's head


@pytest.mark.parametrize(
    "feature_shape, head, pooling, expected",
    [
        ((1, 1, 2048), "seed", "auto", SEED_HEAD),
        ((7, 7, 2048), "seed", "auto", SEED_HEAD),  # 224 px: average-pooled, not 100 M parameters
        ((7, 7, 2048), "seed", "flatten", 7 * 7 * 2048 * 1000 + 1000 + 1000 * 10 + 10),
        ((7, 7, 2048), "seed", "max", SEED_HEAD),
        ((1, 1, 2048), "linear", "auto", 2048 * 10 + 10),
        ((7, 7, 2048), "linear", "flatten", 7 * 7 * 2048 * 10 + 10),
        ((7, 7, 2048), "mlp", "avg", SEED_HEAD),
    ],
)
def test_parameter_counts_of_each_head_and_pooling(feature_shape, head, pooling, expected):
    assert build_head(feature_shape, head=head, pooling=pooling, num_classes=10).count_params() == expected


def test_auto_pooling_flattens_only_a_one_by_one_map_and_says_why():
    assert resolve_pooling("auto", (1, 1, 2048))[0] == "flatten"
    pooling, reason = resolve_pooling("auto", (7, 7, 2048))
    assert pooling == "avg" and "7x7" in reason
    kinds = [type(layer).__name__ for layer in build_head((1, 1, 2048), num_classes=10).layers]
    assert kinds == ["Flatten", "Dense", "Dense"]  # the seed recipe's head, as the article builds it
    kinds = [type(layer).__name__ for layer in build_head((7, 7, 8), head="mlp", num_classes=3).layers]
    assert kinds == ["GlobalAveragePooling2D", "Dropout", "Dense", "Dropout", "Dense"]


def test_the_classifier_on_pooled_features_shares_the_heads_layers():
    head = build_head((4, 4, 8), head="seed", pooling="max", units=5, num_classes=3)
    maps = np.random.default_rng(0).normal(size=(6, 4, 4, 8)).astype("float32")
    pooled = maps.max(axis=(1, 2))
    classifier = classifier_on_features(head)
    np.testing.assert_allclose(classifier.predict(pooled, verbose=0), head.predict(maps, verbose=0), atol=1e-6)
    classifier.layers[-1].kernel.assign(np.zeros((5, 3), "float32"))
    assert not np.any(keras.ops.convert_to_numpy(head.get_layer("probabilities").kernel))


def test_unknown_heads_and_poolings_are_refused_with_the_choices():
    with pytest.raises(ConfigError, match="seed, linear, mlp"):
        build_head((1, 1, 8), head="deep")
    with pytest.raises(ConfigError, match="auto, flatten, avg, max"):
        resolve_pooling("mean", (1, 1, 8))
