import json

import keras
import numpy as np
import pytest
from conftest import requires_mnist

from resnet_transfer.config import ModelConfig, RunConfig
from resnet_transfer.errors import FrozenWeightsError
from resnet_transfer.model.assembly import backbone_of, build_model
from resnet_transfer.model.augmentation import augmenter, build_augmentation
from resnet_transfer.training.fitting import carry_optimizer_state
from resnet_transfer.training.frozen import FrozenWeights
from resnet_transfer.training.phases import fine_tune_optimizer, freeze, plan_phases, unfreeze
from resnet_transfer.training.train import train


@pytest.mark.parametrize("backbone", ["resnet50", "resnet50v2"])
def test_unfreezing_a_stage_changes_exactly_its_layers_and_keeps_batchnorm_in_inference_mode(backbone):
    model = build_model(ModelConfig(backbone=backbone, weights="none"), image_shape=(32, 32, 3), num_classes=2)
    layers = backbone_of(model).layers
    is_norm = lambda layer: isinstance(layer, keras.layers.BatchNormalization)  # noqa: E731
    trainable = set(unfreeze(backbone_of(model), "conv4"))
    expected = {layer.name for layer in layers if layer.weights and not is_norm(layer)
                and (layer.name.startswith(("conv4_", "conv5_", "post_")))}
    assert trainable == expected and any(name.startswith("conv4_") for name in trainable)
    assert not any(layer.trainable for layer in layers if is_norm(layer))  # Keras 3: frozen = inference mode
    assert not any(layer.trainable for layer in layers if layer.name.startswith(("conv1_", "conv2_", "conv3_")))
    everything = set(unfreeze(backbone_of(model), "all"))
    assert "conv1_conv" in everything and everything >= trainable
    assert not any(layer.trainable for layer in layers if is_norm(layer))


def test_train_bn_trains_scale_and_offset_while_the_layers_stay_in_inference_mode_and_watched():
    model = build_model(ModelConfig(backbone="resnet50", weights="none"), image_shape=(32, 32, 3), num_classes=2)
    backbone = backbone_of(model)
    unfreeze(backbone, "conv5", train_bn=True)
    late, early = backbone.get_layer("conv5_block3_3_bn"), backbone.get_layer("conv4_block6_3_bn")
    trainable = {variable.path for variable in model.trainable_variables}
    assert {late.gamma.path, late.beta.path} <= trainable and early.gamma.path not in trainable
    assert not late.trainable  # the layer itself stays frozen: Keras 3 runs it in inference mode
    frozen = FrozenWeights.of(model)
    watched = {variable.path for variable in frozen.variables}
    assert {late.moving_mean.path, late.moving_variance.path, early.gamma.path} <= watched
    assert late.gamma.path not in watched

    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", run_eagerly=True)
    gamma, beta = np.array(late.gamma), np.array(late.beta)
    images = np.random.default_rng(0).uniform(0, 255, size=(8, 32, 32, 3)).astype("float32")
    model.fit(images, np.arange(8) % 2, epochs=1, batch_size=8, verbose=0)
    assert frozen.changed() == []  # moving statistics (and every frozen stage) bit-identical
    assert not np.array_equal(np.array(late.gamma), gamma) and not np.array_equal(np.array(late.beta), beta)

    unfreeze(backbone, "conv5")  # without train_bn: scale and offset frozen again
    assert late.gamma.path not in {variable.path for variable in model.trainable_variables}
    unfreeze(backbone, "all", train_bn=True)
    freeze(backbone)  # the head phase's: nothing of the backbone trains
    assert {variable.path for variable in model.trainable_variables} == {variable.path for variable in
                                                                        model.get_layer("head").trainable_variables}


@pytest.mark.parametrize("leaking", [False, True])
def test_frozen_weights_check_catches_batchnorm_statistics_that_move(leaking):
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, name="frozen_dense", trainable=False)(inputs)
    norm = keras.layers.BatchNormalization(name="norm")
    norm.trainable = leaking  # the leak: a norm layer that fit runs in training mode
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="top")(norm(hidden)))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    frozen = FrozenWeights.of(model)
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(64, 4)).astype("float32")
    model.fit(x, np.arange(64) % 2, epochs=1, verbose=0)
    if leaking:
        assert frozen.changed() == ["norm/moving_mean", "norm/moving_variance"]
    else:
        assert frozen.changed() == [] and len(frozen) == 6  # frozen_dense's kernel and bias, all four of norm's


def test_carried_optimizer_state_keeps_the_heads_moments_and_the_step_count():
    inputs = keras.Input((3,))
    body = keras.layers.Dense(4, name="body")
    head = keras.layers.Dense(2, activation="softmax", name="head")
    model = keras.Model(inputs, head(body(inputs)))
    body.trainable = False
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(np.ones((8, 3), "float32"), np.arange(8) % 2, epochs=2, batch_size=4, verbose=0)
    body.trainable = True
    fine_tune = keras.optimizers.Adam(learning_rate=1e-5)
    fine_tune.build(model.trainable_variables)
    assert carry_optimizer_state(model.optimizer, fine_tune, learning_rate=False) == 1 + 2 * 2  # steps, 2 moments x 2
    assert int(fine_tune.iterations) == 4 and float(fine_tune.learning_rate) == pytest.approx(1e-5)
    names = {variable.name: variable for variable in fine_tune.variables}
    for variable in model.optimizer.variables:
        if variable.name.startswith("head_"):
            np.testing.assert_array_equal(names[variable.name].numpy(), variable.numpy())
    assert not np.any(names["body_kernel_momentum"].numpy())  # the newly unfrozen start from zero


def test_phases_follow_the_settings_and_augmentation_changes_only_training_batches():
    config = RunConfig.from_dict({"train": {"epochs": 3, "fine_tune_epochs": 2, "augment": "light", "flip": True}})
    head, fine_tune = plan_phases(config)
    assert (head.name, head.epochs, head.first_epoch, head.augmentation) == ("head", 3, 0, None)  # stays cached
    assert (fine_tune.name, fine_tune.first_epoch, fine_tune.unfreeze, fine_tune.learning_rate) == ("fine-tune", 3, "all", 1e-5)
    kinds = [type(layer).__name__ for layer in fine_tune.augmentation.layers]
    assert kinds == ["RandomTranslation", "RandomRotation", "RandomZoom", "RandomContrast", "RandomFlip"]
    assert "RandomFlip" not in [type(layer).__name__ for layer in build_augmentation("strong", seed=0).layers]
    both = plan_phases(config.updated({"train": {"augment_phase": "both"}}))
    assert both[0].augmentation is not None
    images = np.random.default_rng(0).integers(0, 256, size=(4, 32, 32, 3)).astype("float32")
    changed = augmenter(build_augmentation("strong", seed=0))(images)
    assert changed.shape == images.shape and changed.dtype == np.float32 and not np.array_equal(changed, images)


@requires_mnist
@pytest.mark.slow
def test_a_run_whose_frozen_weights_move_is_stopped_before_the_model_is_saved(small_config, tmp_path, monkeypatch):
    from resnet_transfer.training import setup

    built = []
    monkeypatch.setattr(setup, "build_model", lambda *a, **k: built.append(build_model(*a, **k)) or built[-1])

    class LeakingBatchNorm(keras.callbacks.Callback):
        """The classic bug: a frozen backbone's BatchNormalization runs in training mode."""

        def on_epoch_end(self, epoch, logs=None):
            norm = backbone_of(built[-1]).get_layer("conv5_block3_3_bn")
            norm.trainable = True
            norm(keras.random.normal((8, 1, 1, 2048)), training=True)
            norm.trainable = False

    config = small_config(tmp_path / "run", epochs=1, cache_dir=str(tmp_path / "cache")).updated(
        {"data": {"limit": 64, "val_size": 32, "test_limit": 32}})
    with pytest.raises(FrozenWeightsError, match="conv5_block3_3_bn/moving_mean") as raised:
        train(config, callbacks=[LeakingBatchNorm()])
    assert raised.value.phase == "head" and "not saved" in str(raised.value)
    run_dir = tmp_path / "run"
    assert not (run_dir / "model.keras").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["frozen_weights_unchanged"] is False
    assert metrics["frozen_weights_moved"] == ["conv5_block3_3_bn/moving_mean", "conv5_block3_3_bn/moving_variance"]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "failed"


def test_the_fine_tune_optimizer_decays_the_unfrozen_kernels_but_not_batch_normalizations_scale_and_offset():
    """fastai's bn_wd=False, for the fine-tune phase and for lr-find's sweep of it alike."""
    model = build_model(ModelConfig(weights="none", backbone="resnet50"), image_shape=(32, 32, 3), num_classes=2)
    unfreeze(backbone_of(model), "conv5", train_bn=True)
    optimizer = fine_tune_optimizer(model, learning_rate=0.1, weight_decay=0.5, train_bn=True)
    backbone = backbone_of(model)
    gamma, kernel = backbone.get_layer("conv5_block3_3_bn").gamma, backbone.get_layer("conv5_block3_3_conv").kernel
    assert gamma.trainable and kernel.trainable
    before = {"gamma": np.array(gamma), "kernel": np.array(kernel)}
    optimizer.apply_gradients([(keras.ops.zeros_like(variable), variable) for variable in model.trainable_variables])
    np.testing.assert_array_equal(np.array(gamma), before["gamma"])  # no gradient, no decay
    np.testing.assert_allclose(np.array(kernel), before["kernel"] * (1 - 0.1 * 0.5), rtol=1e-5)  # decay alone
