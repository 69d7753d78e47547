import numpy as np

from resnet_transfer.config import ModelConfig
from resnet_transfer.heads import build_head
from resnet_transfer.model import backbone_of, build_model, feature_extractor, head_of


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
    model = build_model(ModelConfig(backbone="resnet50", weights="none"), image_shape=(32, 32, 3), num_classes=3)
    images = np.random.default_rng(1).integers(0, 256, size=(4, 32, 32, 3)).astype("float32")
    features = feature_extractor(model).predict(images, verbose=0)
    np.testing.assert_allclose(head_of(model).predict(features, verbose=0), model.predict(images, verbose=0), atol=1e-6)


def test_head_width_follows_the_feature_shape():
    assert build_head((7, 7, 2048), units=16, num_classes=2).count_params() == 7 * 7 * 2048 * 16 + 16 + 16 * 2 + 2
