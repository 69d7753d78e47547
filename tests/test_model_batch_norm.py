"""Recomputed BatchNormalization statistics (PreciseBN, AdaBN): what they are, and what they leave alone."""

import keras
import numpy as np
import pytest

from resnet_transfer.model.backbone import create_backbone
from resnet_transfer.model.batch_norm import (
    batch_norm_layers, recalibrate, sample_indices, training_mode_probabilities,
)


def tiny_backbone() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    hidden = keras.layers.Conv2D(4, 3, name="conv_a")(inputs)
    hidden = keras.layers.ReLU()(keras.layers.BatchNormalization(name="norm_a")(hidden))
    hidden = keras.layers.Conv2D(5, 3, name="conv_b")(hidden)
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="norm_b")(hidden), name="tiny")
    model.trainable = False  # as a run's backbone is: recalibration must still see the batch statistics
    return model


def test_moving_statistics_become_the_samples_and_nothing_else_changes():
    backbone = tiny_backbone()
    images = np.random.default_rng(0).normal(2.0, 3.0, size=(24, 8, 8, 3)).astype("float32")
    before = {variable.path: np.array(variable) for variable in backbone.weights}
    done = recalibrate(backbone, images, batch_size=64)
    assert (done.layers, done.images, done.batch_size) == (2, 24, 24)

    # norm_a sees conv_a's outputs: their mean and (biased) variance over images and positions, in numpy.
    first = np.asarray(keras.Model(backbone.input, backbone.get_layer("conv_a").output)(images), dtype=np.float64)
    np.testing.assert_allclose(np.asarray(backbone.get_layer("norm_a").moving_mean), first.mean(axis=(0, 1, 2)),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(backbone.get_layer("norm_a").moving_variance), first.var(axis=(0, 1, 2)),
                               rtol=1e-5, atol=1e-5)
    # norm_b sees conv_b applied to norm_a's output normalised with the sample's own statistics.
    normalised = keras.layers.ReLU()(backbone.get_layer("norm_a")(first.astype("float32"), training=False))
    second = np.asarray(backbone.get_layer("conv_b")(normalised), dtype=np.float64)
    np.testing.assert_allclose(np.asarray(backbone.get_layer("norm_b").moving_variance), second.var(axis=(0, 1, 2)),
                               rtol=1e-4, atol=1e-5)

    for variable in backbone.weights:  # every other weight keeps its bytes; the flags are as they were
        if "moving" not in variable.path:
            np.testing.assert_array_equal(np.array(variable), before[variable.path], err_msg=variable.path)
        else:
            assert not np.array_equal(np.array(variable), before[variable.path]), variable.path
    assert not backbone.trainable and not any(layer.trainable for layer in backbone.layers)
    assert not any(variable.trainable for variable in backbone.weights)

    # Inference mode now normalises the sample exactly as training mode does with the sample as one batch.
    np.testing.assert_allclose(np.asarray(backbone(images, training=False)),
                               training_mode_probabilities(backbone, images, batch_size=64), atol=1e-4)


def test_the_first_layers_statistics_are_the_samples_whatever_the_batches():
    backbone = tiny_backbone()
    images = np.random.default_rng(0).normal(2.0, 3.0, size=(24, 8, 8, 3)).astype("float32")
    recalibrate(backbone, images, batch_size=8)  # three batches
    first = np.asarray(keras.Model(backbone.input, backbone.get_layer("conv_a").output)(images), dtype=np.float64)
    np.testing.assert_allclose(np.asarray(backbone.get_layer("norm_a").moving_variance), first.var(axis=(0, 1, 2)),
                               rtol=1e-5)


def test_class_ordered_images_are_recalibrated_as_well_as_shuffled_ones():
    # Two classes far apart, in the order a folder of class folders gives: the deeper layer's statistics must be
    # those it sees in inference mode, not those of batches of one class each.
    inputs = keras.Input((1, 1, 3))
    hidden = keras.layers.BatchNormalization(name="norm_a")(inputs)
    hidden = keras.layers.Conv2D(3, 1, name="mix", kernel_initializer=keras.initializers.GlorotUniform(seed=0))(hidden)
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="norm_b")(hidden))
    rng = np.random.default_rng(1)
    images = np.concatenate([rng.normal(-2, 0.5, size=(64, 1, 1, 3)), rng.normal(2, 0.5, size=(64, 1, 1, 3))])
    recalibrate(model, images.astype("float32"), batch_size=32)
    seen = np.asarray(keras.Model(inputs, model.get_layer("mix").output)(images, training=False), dtype=np.float64)
    np.testing.assert_allclose(np.asarray(model.get_layer("norm_b").moving_variance), seen.var(axis=(0, 1, 2)),
                               rtol=0.1)
    # The training-mode outputs come back in the images' order.
    training = training_mode_probabilities(model, images.astype("float32"), batch_size=32)
    # (each batch normalised by its own statistics: close to inference mode, and in order: correlated image by image)
    assert np.corrcoef(training.ravel(), np.asarray(model(images, training=False)).ravel())[0, 1] > 0.95


def test_training_mode_outputs_leave_the_moving_statistics_and_the_flags_as_they_were():
    from resnet_transfer.config import ModelConfig
    from resnet_transfer.model.assembly import backbone_of, build_model
    from resnet_transfer.training.phases import unfreeze

    model = build_model(ModelConfig(backbone="resnet50", weights="none", head="mlp"), image_shape=(32, 32, 3),
                        num_classes=3)
    backbone = backbone_of(model)
    unfreeze(backbone, "conv5", train_bn=True)  # a mixed state: frozen layers, trainable scale and offset
    flags = [(variable.path, variable.trainable) for variable in model.weights]
    layer_flags = [(layer.name, layer.trainable) for layer in backbone.layers]
    statistics = {variable.path: np.array(variable) for variable in model.weights if "moving" in variable.path}
    images = np.random.default_rng(3).uniform(0, 255, size=(8, 32, 32, 3)).astype("float32")
    head = model.get_layer("head")
    first = training_mode_probabilities(backbone, images, preprocess=model.get_layer("preprocessing"), head=head)
    again = training_mode_probabilities(backbone, images, preprocess=model.get_layer("preprocessing"), head=head)
    np.testing.assert_array_equal(first, again)  # the head's dropout stays off
    for variable in model.weights:
        if "moving" in variable.path:
            np.testing.assert_array_equal(np.array(variable), statistics[variable.path], err_msg=variable.path)
    assert [(variable.path, variable.trainable) for variable in model.weights] == flags
    recalibrate(backbone, images, preprocess=model.get_layer("preprocessing"))
    assert [(variable.path, variable.trainable) for variable in model.weights] == flags
    assert [(layer.name, layer.trainable) for layer in backbone.layers] == layer_flags


def test_statistics_over_several_batches_are_the_population_statistics_not_the_batches_average():
    inputs = keras.Input((4, 4, 2))
    norm = keras.layers.BatchNormalization(name="norm")
    model = keras.Model(inputs, norm(inputs))
    # Two batches with different means: the population variance includes the spread between them.
    images = np.concatenate([np.full((8, 4, 4, 2), -1.0), np.full((8, 4, 4, 2), 3.0)]).astype("float32")
    images += np.random.default_rng(1).normal(0, 0.1, size=images.shape).astype("float32")
    recalibrate(model, images, batch_size=8)
    np.testing.assert_allclose(np.asarray(norm.moving_mean), images.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(norm.moving_variance), images.var(axis=(0, 1, 2)), rtol=1e-4)


def test_a_resnet_recalibrated_on_a_sample_scores_the_same_in_both_modes_there():
    backbone = create_backbone("resnet50", weights="none", input_shape=(32, 32, 3))
    assert len(batch_norm_layers(backbone)) == 53
    pixels = np.random.default_rng(2).uniform(0, 1, size=(16, 32, 32, 3)).astype("float32")
    training = training_mode_probabilities(backbone, pixels, batch_size=16)
    assert np.abs(np.asarray(backbone(pixels, training=False)) - training).max() > 1.0  # stale: far apart
    recalibrate(backbone, pixels, batch_size=16)
    # (53 layers deep in float32: within 1e-2 where the stale statistics were more than 1 apart)
    np.testing.assert_allclose(np.asarray(backbone(pixels, training=False)), training, rtol=0, atol=1e-2)


def test_the_sample_is_seeded_in_order_and_everything_when_asked_for_more():
    drawn = sample_indices(1000, 10, seed=3)
    assert list(drawn) == sorted(drawn) and len(set(drawn)) == 10
    np.testing.assert_array_equal(drawn, sample_indices(1000, 10, seed=3))
    assert not np.array_equal(drawn, sample_indices(1000, 10, seed=4))
    np.testing.assert_array_equal(sample_indices(5, 4096, seed=0), np.arange(5))


def test_recalibration_refuses_an_empty_sample_or_a_model_without_batch_norm():
    with pytest.raises(ValueError, match="at least one image"):
        recalibrate(tiny_backbone(), np.zeros((0, 8, 8, 3), "float32"))
    inputs = keras.Input((3,))
    with pytest.raises(ValueError, match="no BatchNormalization layer of its own"):
        recalibrate(keras.Model(inputs, keras.layers.Dense(2)(inputs)), np.zeros((2, 3), "float32"))
