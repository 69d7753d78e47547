import keras
import numpy as np
import pytest

from resnet_transfer.config import ModelConfig
from resnet_transfer.model.assembly import backbone_of, build_model, compile_model, feature_extractor, head_of
from resnet_transfer.model.heads import classifier_on_features


def test_seed_recipe_model_is_a_frozen_resnet152_with_the_article_head():
    model = build_model(ModelConfig(weights="none"), image_shape=(32, 32, 3), num_classes=10)
    backbone = backbone_of(model)
    assert backbone.name == "resnet152"
    assert all(not layer.trainable for layer in backbone.layers) and not backbone.trainable_weights
    trainable = sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
    assert trainable == 2_059_010 == head_of(model).count_params()
    kinds = [type(layer).__name__ for layer in head_of(model).layers]
    assert kinds == ["Flatten", "Dense", "Dense"]
    assert head_of(model).layers[1].units == 1000 and head_of(model).layers[2].units == 10
    assert head_of(model).layers[2].activation.__name__ == "softmax"


def test_feature_extractor_and_head_compose_to_the_model():
    model = build_model(ModelConfig(backbone="resnet50", weights="none", pooling="max"), image_shape=(32, 32, 3),
                        num_classes=3)
    images = np.random.default_rng(1).integers(0, 256, size=(4, 32, 32, 3)).astype("float32")
    features = feature_extractor(model).predict(images, verbose=0)
    assert features.shape == (4, 2048)  # pooled as the head pools: what the cache stores
    classifier = classifier_on_features(head_of(model))
    np.testing.assert_allclose(classifier.predict(features, verbose=0), model.predict(images, verbose=0), atol=1e-6)


def test_compile_uses_adam_at_the_learning_rate_and_keeps_a_given_optimizer():
    model = build_model(ModelConfig(backbone="resnet50", weights="none"), image_shape=(32, 32, 3), num_classes=2)
    compile_model(model, learning_rate=0.01)
    assert type(model.optimizer) is keras.optimizers.Adam
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)
    compile_model(model, learning_rate=0.01, weight_decay=0.05, label_smoothing=0.1)
    assert type(model.optimizer) is keras.optimizers.AdamW and model.optimizer.weight_decay == pytest.approx(0.05)
    assert model.loss.label_smoothing == pytest.approx(0.1)
    optimizer = keras.optimizers.Adam(learning_rate=0.5)
    assert compile_model(model, learning_rate=0.01, optimizer=optimizer).optimizer is optimizer


def test_the_backbone_is_found_by_its_name_and_a_model_without_one_is_refused():
    model = build_model(ModelConfig(weights="none", backbone="resnet50"), image_shape=(32, 32, 3), num_classes=3)
    assert backbone_of(model).name == "resnet50"
    inputs = keras.Input((4,))
    with pytest.raises(ValueError, match="one backbone layer named after one of: resnet50"):
        backbone_of(keras.Model(inputs, keras.layers.Dense(2)(inputs)))
