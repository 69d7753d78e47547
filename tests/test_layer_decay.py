"""--lr-decay: each stage of the backbone trains at its factor of the fine-tune rate."""

import json
import zipfile

import keras
import numpy as np
import pytest
from conftest import requires_mnist

from resnet_transfer.config import RunConfig
from resnet_transfer.config.rules import check_settings_take_effect
from resnet_transfer.errors import ConfigError
from resnet_transfer.model.assembly import head_of, make_optimizer
from resnet_transfer.model.layer_decay import LayerwiseAdam, LayerwiseAdamW, stage_rate_factors
from resnet_transfer.training.setup import prepare
from resnet_transfer.training.train import train


def test_each_variable_steps_at_its_factor_of_the_rate():
    """Adam's first step moves every weight by the rate (times sign): here the kernel, at a
    factor of 0.25, moves a quarter as far as the bias, at 1."""
    layer = keras.layers.Dense(2, kernel_initializer="zeros", name="dense")
    model = keras.Sequential([keras.Input((3,)), layer])
    optimizer = make_optimizer(learning_rate=0.01, rate_factors={layer.kernel.path: 0.25})
    assert isinstance(optimizer, LayerwiseAdam)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(np.ones((4, 3), "float32"), np.ones((4, 2), "float32"), batch_size=4, verbose=0)
    np.testing.assert_allclose(np.abs(layer.kernel.numpy()), 0.0025, rtol=1e-3)
    np.testing.assert_allclose(np.abs(layer.bias.numpy()), 0.01, rtol=1e-3)
    assert isinstance(make_optimizer(learning_rate=0.1, weight_decay=0.1, rate_factors={"x": 0.5}), LayerwiseAdamW)
    assert type(make_optimizer(learning_rate=0.1)) is keras.optimizers.Adam  # no factors: Keras's own


@pytest.mark.parametrize("application, top", [("ResNet50", "conv5_block3_3_conv"), ("ResNet50V2", "post_bn")])
def test_the_factors_fall_by_the_decay_per_stage_from_the_head(application, top):
    backbone = getattr(keras.applications, application)(weights=None, include_top=False, input_shape=(32, 32, 3))
    factors = stage_rate_factors(backbone, 0.5)
    assert {len(backbone.weights)} == {len(factors)}  # every weight of the backbone is in a stage
    by_layer = {layer.name: factors[layer.weights[0].path] for layer in backbone.layers if layer.weights}
    assert by_layer[top] == 0.5
    assert by_layer["conv4_block1_1_conv"] == 0.25
    assert by_layer["conv2_block1_1_conv"] == 0.0625
    assert by_layer["conv1_conv"] == 0.03125
    cut = keras.Model(backbone.input, backbone.get_layer("conv4_block6_out").output)  # (--feature-layer conv4)
    assert stage_rate_factors(cut, 0.5)[cut.get_layer("conv4_block1_1_conv").kernel.path] == 0.5


def test_lr_decay_is_a_factor_in_0_1_and_needs_a_fine_tune_phase():
    for value in (0, 1.5, -0.1, "0.5"):
        with pytest.raises(ConfigError, match="lr_decay must be a number in \\(0, 1\\]"):
            RunConfig.from_dict({"train": {"lr_decay": value}})
    with pytest.raises(ConfigError, match="--lr-decay changes nothing here.*--fine-tune-epochs N"):
        check_settings_take_effect(RunConfig.from_dict({"train": {"lr_decay": 0.7}}))
    check_settings_take_effect(RunConfig.from_dict({"train": {"lr_decay": 0.7, "fine_tune_epochs": 1}}))


@pytest.mark.slow
@requires_mnist
def test_a_fine_tune_with_lr_decay_moves_the_backbone_less_and_saves_a_plain_keras_optimizer(tmp_path):
    """conv5 at a factor of 0.01: two Adam steps at 1e-3 move it by at most a few 1e-5; the
    head moves by about 1e-3 a step. The saved model's optimizer is Keras's own AdamW."""
    config = RunConfig.from_dict({
        "data": {"limit": 128, "val_size": 32, "test_limit": 32},
        "model": {"weights": "none", "backbone": "resnet50"},
        "train": {"epochs": 0, "fine_tune_epochs": 1, "unfreeze": "conv5", "fine_tune_lr": 1e-3, "lr_decay": 0.01,
                  "weight_decay": 1e-4, "cache_dir": str(tmp_path / "cache")},
        "run_dir": str(tmp_path / "run")})
    _, start, _ = prepare(config)  # the run's model before training: the same seed builds the same weights
    before = {weight.path: weight.numpy() for weight in start.weights}
    result = train(config)
    moved = {weight.path: np.abs(weight.numpy() - before[weight.path]).max() for weight in result.model.trainable_weights}
    conv5 = [value for path, value in moved.items() if "conv5_block3_3_conv" in path]
    head = [moved[weight.path] for weight in head_of(result.model).trainable_weights]
    assert conv5 and 0 < max(conv5) < 1e-4
    assert max(head) > 5e-4
    with zipfile.ZipFile(tmp_path / "run" / "model.keras") as archive:
        optimizer = json.loads(archive.read("config.json"))["compile_config"]["optimizer"]
    assert (optimizer["module"], optimizer["class_name"]) == ("keras.optimizers", "AdamW")
    assert "rate_factors" not in optimizer["config"]
