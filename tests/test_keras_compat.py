"""Contract tests of ``_keras_compat``: what its workarounds rely on in Keras's internals.

They run against the installed Keras whatever its version (the gate is opened for them),
so ``scripts/keras_contract.sh`` can run them against the newest Keras: a failure here
means a Keras release changed what a workaround relies on.
"""

import keras
import numpy as np
import pytest

from resnet_transfer import _keras_compat
from resnet_transfer.errors import ConfigError
from resnet_transfer.training.batches import EpochOrder, TensorBatches


@pytest.fixture
def gate_open(monkeypatch):
    monkeypatch.setattr(_keras_compat, "TESTED_KERAS", (_keras_compat.keras_minor(),))


@pytest.fixture
def gate_closed(monkeypatch):
    monkeypatch.setattr(_keras_compat, "TESTED_KERAS", ("2.0",))


def _small_model(steps_per_execution: int = 1) -> keras.Model:
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=steps_per_execution)
    return model


@pytest.mark.parametrize("steps_per_execution", [1, 2])
def test_fit_runs_the_train_function_set_before_it_until_stop_iteration(gate_open, steps_per_execution):
    """``fit`` keeps a ``model.train_function`` set before it is called, calls it once per
    ``steps_per_execution`` steps, and ends the epoch when it raises StopIteration."""
    model = _small_model(steps_per_execution)
    rng = np.random.default_rng(0)
    batches = TensorBatches(rng.normal(size=(10, 3)).astype("float32"), rng.integers(0, 2, 10), batch_size=4)
    calls = []
    ours = batches.train_function(model)

    def counted(iterator):
        calls.append(1)
        return ours(iterator)

    with _keras_compat.own_train_function(model, counted) as own:
        assert own
        history = model.fit(batches.step_counter, epochs=2, callbacks=[EpochOrder(batches)], verbose=0, shuffle=False)
    assert model.train_function is None  # dropped at the end: it holds the batches' tensors
    assert len(history.history["loss"]) == 2
    assert int(model.optimizer.iterations) == 2 * 3  # 3 batches of 10 rows, every one trained, in both epochs
    assert len(calls) == 2 * -(-3 // steps_per_execution)


def test_an_untested_keras_gets_its_own_train_function(gate_closed):
    model = _small_model()
    with _keras_compat.own_train_function(model, lambda iterator: {}) as own:
        assert not own
        assert model.train_function is None


def test_multi_worker_workarounds_refuse_an_untested_keras(gate_closed):
    with pytest.raises(ConfigError, match="install keras=="):
        _keras_compat.route_around_keras_20585()
    with pytest.raises(ConfigError, match="install keras=="):
        _keras_compat.unbind_from_strategy(_small_model())


def test_keras_20585_route_wraps_the_trainers_reduction_and_keeps_other_strategies_as_they_were(gate_open):
    """The TensorFlow trainer still has the function and the helpers the route wraps, the
    route is installed once, and outside a multi-worker strategy it changes nothing."""
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    _keras_compat.route_around_keras_20585()
    _keras_compat.route_around_keras_20585()
    assert trainer.reduce_per_replica.routes_around_keras_20585
    strategy = tf.distribute.get_strategy()
    values = {"loss": tf.constant(1.5), "rows": tf.constant([1.0, 2.0])}
    reduced = trainer.reduce_per_replica(values, strategy, "auto")
    assert float(reduced["loss"]) == 1.5 and reduced["rows"].numpy().tolist() == [1.0, 2.0]
    assert not trainer._collective_all_reduce_multi_worker(strategy)


def test_a_model_built_in_a_strategy_scope_keeps_the_strategy_where_unbind_clears_it(gate_open):
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(devices=["/cpu:0"])
    with strategy.scope():
        model = _small_model()
    assert model._distribute_strategy is strategy
    _keras_compat.unbind_from_strategy(model)
    assert model._distribute_strategy is None


@pytest.mark.parametrize("version, tested", [("3.15.1", True), ("3.15.0.dev2026", True), ("3.16.0", False),
                                             ("4.0.0", False)])
def test_the_gate_compares_minor_versions(version, tested, monkeypatch):
    monkeypatch.setattr(_keras_compat, "TESTED_KERAS", ("3.15",))
    assert _keras_compat.keras_is_tested(version) is tested


def test_an_optimizers_averages_are_named_after_their_weights_and_can_start_at_them(gate_open):
    """What start_averages_at_weights relies on: Keras names the average of a weight
    ``{path with "/" as "_"}_average`` among the optimizer's variables."""
    model = _small_model()
    optimizer = keras.optimizers.Adam(use_ema=True)
    optimizer.build(model.trainable_variables)
    names = {variable.name for variable in optimizer.variables}
    assert all(_keras_compat.average_name(weight) in names for weight in model.trainable_variables)
    kept = _keras_compat.average_name(model.trainable_variables[0])
    assert _keras_compat.start_averages_at_weights(optimizer, model.trainable_variables, keep={kept}) == 1
    averages = {variable.name: np.asarray(variable) for variable in optimizer.variables}
    np.testing.assert_array_equal(averages[_keras_compat.average_name(model.trainable_variables[1])],
                                  np.asarray(model.trainable_variables[1]))
    assert not np.any(averages[kept])  # the kept one as it was (Keras starts averages at zero)


def test_an_update_step_finds_its_variable_among_those_the_optimizer_was_built_with(gate_open):
    """``variable_index``: under ``fit``'s traced step, ``update_step`` is given each variable
    (a ``tf.Variable`` under TensorFlow) and its index is the variable's place in ``build``."""
    seen = []

    class Recording(keras.optimizers.Adam):
        def update_step(self, gradient, variable, learning_rate):
            seen.append((_keras_compat.variable_index(self, variable), tuple(variable.shape)))
            return super().update_step(gradient, variable, learning_rate)

    model = _small_model()
    model.compile(optimizer=Recording(), loss="sparse_categorical_crossentropy")
    model.fit(np.zeros((4, 3), "float32"), np.zeros(4), batch_size=4, verbose=0)
    assert sorted(set(seen)) == [(index, tuple(variable.shape)) for index, variable in enumerate(model.trainable_variables)]


def test_variable_index_refuses_an_untested_keras_with_one_line(gate_closed):
    optimizer = keras.optimizers.Adam()
    with pytest.raises(ConfigError, match="--lr-decay relies on Keras internals.*keras-team/keras#21741"):
        _keras_compat.variable_index(optimizer, keras.Variable(0.0))
