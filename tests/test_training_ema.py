"""--ema: the saved model, its test metrics and its exports are the optimizer's moving average."""

import keras
import numpy as np
import pytest
from conftest import requires_mnist

from resnet_transfer.config import RunConfig
from resnet_transfer.model.assembly import head_of, make_optimizer
from resnet_transfer.training.fitting import carry_optimizer_state
from resnet_transfer.training.train import train


def test_an_optimizer_with_ema_ends_fit_with_the_weights_set_to_their_average():
    """Keras's use_ema as make_optimizer asks for it: fit leaves each weight at its average."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=make_optimizer(learning_rate=0.1, ema_momentum=0.5), loss="sparse_categorical_crossentropy")
    rows, labels = np.random.default_rng(0).normal(size=(32, 4)), np.arange(32) % 3
    model.fit(rows, labels, batch_size=8, epochs=2, verbose=0)
    averages = [variable for variable in model.optimizer.variables if variable.name.endswith("_average")]
    assert len(averages) == len(model.trainable_variables) == 2
    for weight, average in zip(model.trainable_variables, averages):
        np.testing.assert_array_equal(np.asarray(weight), np.asarray(average))


@pytest.mark.slow
@requires_mnist
def test_a_run_with_ema_saves_the_average_of_its_head(tmp_path):
    def run(name, **train_settings):
        return train(RunConfig.from_dict({
            "data": {"limit": 256, "val_size": 64, "test_limit": 64},
            "model": {"weights": "none", "backbone": "resnet50"},
            # (--calibrate none: a temperature folded into the last layer would move it off its average)
            "train": {"epochs": 3, "cache_dir": str(tmp_path / "cache"), "calibrate": "none", **train_settings},
            "run_dir": str(tmp_path / name)}))

    averaged, plain = run("ema", ema=True, ema_momentum=0.9), run("plain")
    head = head_of(averaged.model)
    averages = {variable.name: np.asarray(variable) for variable in averaged.model.optimizer.variables
                if variable.name.endswith("_average")}
    assert len(averages) == len(head.trainable_weights)  # carried from the head's optimizer
    assert all(any(np.array_equal(np.asarray(weight), average) for average in averages.values())
               for weight in head.trainable_weights)
    saved = keras.saving.load_model(tmp_path / "ema" / "model.keras")
    for weight, loaded in zip(head.weights, head_of(saved).weights):
        np.testing.assert_array_equal(np.asarray(weight), np.asarray(loaded))
    # the same seed and batches without the average end elsewhere
    assert not np.array_equal(np.asarray(head.trainable_weights[0]), np.asarray(head_of(plain.model).trainable_weights[0]))


def test_a_phase_that_goes_on_from_another_optimizers_steps_averages_its_new_weights_from_their_values():
    """The fine-tune phase's optimizer takes the head phase's step count (carry_optimizer_state): the averages
    of the backbone's weights, new to it, must start at those weights, not at zero."""
    keras.utils.set_random_seed(0)
    backbone, head = keras.layers.Dense(4, name="backbone"), keras.layers.Dense(3, activation="softmax", name="head")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, head(backbone(inputs)))
    rows, labels = np.random.default_rng(0).normal(size=(64, 4)), np.arange(64) % 3
    backbone.trainable = False  # the head phase
    model.compile(optimizer=make_optimizer(learning_rate=0.01, ema_momentum=0.9), loss="sparse_categorical_crossentropy")
    model.fit(rows, labels, batch_size=8, epochs=2, verbose=0)
    backbone.trainable = True  # the fine-tune phase, at a learning rate too small to move anything
    before = np.asarray(backbone.kernel).copy()
    optimizer = make_optimizer(learning_rate=1e-9, ema_momentum=0.9)
    optimizer.build(model.trainable_variables)
    carry_optimizer_state(model.optimizer, optimizer, learning_rate=False, variables=model.trainable_variables)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    model.fit(rows, labels, batch_size=8, epochs=2, verbose=0)
    np.testing.assert_allclose(np.asarray(backbone.kernel), before, atol=1e-6)  # (from zero: 0.9**16 of it)
