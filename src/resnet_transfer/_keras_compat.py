"""The one module that relies on Keras's internals.

Everything else in the package uses Keras's public API. Each workaround here names the
upstream issue it answers, runs only on the Keras minor versions it was checked against
(``TESTED_KERAS``, the version gate), and has a contract test in
``tests/test_keras_compat.py`` that fails when a Keras release changes what it relies on.
``scripts/keras_contract.sh`` runs those tests against the newest Keras on PyPI.

- ``own_train_function``: a train function of ours for ``fit`` (Keras's
  ``make_train_function`` keeps a ``model.train_function`` that is set before ``fit``, and
  ``fit`` ends an epoch when the function raises ``StopIteration``). Not a Keras bug: a
  speed choice (why: ``batches.TensorBatches.train_function``). On an untested Keras the
  caller gets False and feeds Keras's own train function a tf.data pipeline, the same
  batches a little slower.
- ``route_around_keras_20585`` and ``unbind_from_strategy``: Keras 3 cannot ``fit`` under
  ``MultiWorkerMirroredStrategy`` as it comes (keras-team/keras#20585, open).
- ``start_averages_at_weights``: an optimizer with ``use_ema`` copies a weight into its
  average only at its first step; one that goes on from another optimizer's step count
  (``fitting.carry_optimizer_state``) would average the weights new to it from zero. Keras
  has no public way to set an average (by design, not a bug), so they are found by Keras's
  naming of optimizer variables.
- ``variable_index``: which of an optimizer's variables ``update_step`` was given. Keras's
  optimizers look up their per-variable state this way in their own ``update_step``
  (``Optimizer._get_variable_index``); Keras has no public per-variable learning rate
  (keras-team/keras#21741 asks for one, open), so ``model.layer_decay`` scales the rate there.
"""

import contextlib
import logging
from typing import Callable

import keras

from resnet_transfer.errors import ConfigError

__all__ = ["TESTED_KERAS", "keras_is_tested", "own_train_function", "route_around_keras_20585",
           "start_averages_at_weights", "unbind_from_strategy", "variable_index"]

logger = logging.getLogger(__name__)

TESTED_KERAS = ("3.15",)  # minor versions whose internals the workarounds below were checked against


def keras_minor(version: str = keras.__version__) -> str:
    """"3.15" for "3.15.1" (and for "3.15.0.dev2026...")."""
    return ".".join(version.split(".")[:2])


def keras_is_tested(version: str = keras.__version__) -> bool:
    """Whether the installed Keras is a minor version the workarounds were checked against."""
    return keras_minor(version) in TESTED_KERAS


@contextlib.contextmanager
def own_train_function(model: keras.Model, train_function: Callable):
    """Within the block, ``model.fit`` runs ``train_function(iterator)`` for each call of
    ``steps_per_execution`` steps (it returns the logs, or raises ``StopIteration`` at the
    epoch's end). Yields whether it does: False on a Keras outside ``TESTED_KERAS``, where
    the caller must give ``fit`` its data as usual. The model drops the function at the end
    (it holds the batches' tensors)."""
    if not keras_is_tested():
        logger.debug("Keras %s is not among the tested versions %s: its own train function runs",
                     keras.__version__, TESTED_KERAS)
        yield False
        return
    model.train_function = train_function
    try:
        yield True
    finally:
        model.train_function = None


def unbind_from_strategy(model: keras.Model) -> None:
    """The second half of ``route_around_keras_20585``: Keras builds a model that belongs to
    a strategy from an input batch it reduces across workers, which fails under
    MultiWorkerMirroredStrategy (the reduction's tensor conversion); a model not bound to
    it builds when its step is traced, in the scope of the strategy."""
    _require_tested("multi-worker training")
    model._distribute_strategy = None


def average_name(variable) -> str:
    """The name Keras gives the optimizer's moving average of ``variable`` (``use_ema``):
    ``Optimizer.add_variable_from_reference``'s ``{path with "/" as "_"}_average``."""
    return f"{variable.path.replace('/', '_')}_average"


def start_averages_at_weights(optimizer: keras.optimizers.Optimizer, variables: list, *, keep: set) -> int:
    """Sets the moving average of each of ``variables`` to the variable's value, but those whose
    average's name is in ``keep`` (carried from another optimizer). Returns how many it set.

    Raises:
        ConfigError: an untested Keras (``--ema`` with a fine-tune phase relies on the naming).
    """
    if not getattr(optimizer, "use_ema", False):
        return 0
    _require_tested("--ema with a fine-tune phase")
    averages = {variable.name: variable for variable in optimizer.variables}
    count = 0
    for variable in variables:
        name = average_name(variable)
        if name in averages and name not in keep:
            averages[name].assign(variable)
            count += 1
    return count


def route_around_keras_20585() -> None:
    """Keras 3's step reduces every metric of the step across workers with
    ``strategy.reduce("MEAN", value, axis=0)``, which fails for the scalars that metrics
    are ("Invalid reduction dimension 0 for input with 0 dimensions"). From here on, scalars
    are reduced without an axis (the mean over replicas); everything else as Keras does.
    Only under a multi-worker strategy: the wrapper hands every other case to Keras."""
    _require_tested("multi-worker training")
    from keras.src.backend.tensorflow import trainer

    needed = ("reduce_per_replica", "_collective_all_reduce_multi_worker", "_is_per_replica_instance")
    if not all(hasattr(trainer, name) for name in needed):
        raise ConfigError(f"strategy=multi-worker works around keras-team/keras#20585 in Keras's TensorFlow trainer, "
                          f"which Keras {keras.__version__} lays out otherwise; install the Keras version of "
                          "pyproject.toml, or train on one machine")
    original = trainer.reduce_per_replica
    if getattr(original, "routes_around_keras_20585", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not trainer._collective_all_reduce_multi_worker(strategy):
            return original(values, strategy, reduction)

        def reduce(value):
            first = value.values[0] if trainer._is_per_replica_instance(value) else value
            if getattr(first, "shape", None) is not None and first.shape.rank == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return original(value, strategy, reduction)

        return keras.tree.map_structure(reduce, values)

    reduce_per_replica.routes_around_keras_20585 = True
    trainer.reduce_per_replica = reduce_per_replica


def variable_index(optimizer: keras.optimizers.Optimizer, variable) -> int:
    """The position in the optimizer's ``build`` list of the variable an ``update_step`` is
    given (under TensorFlow the ``tf.Variable`` inside the Keras variable, or a replica's).
    Refused on an untested Keras, with one line (``--lr-decay``)."""
    _require_tested("--lr-decay", issue="keras-team/keras#21741", fix="or leave out --lr-decay")
    return optimizer._get_variable_index(variable)


def _require_tested(feature: str, *, issue: str = "keras-team/keras#20585", fix: str = "or train on one machine") -> None:
    if not keras_is_tested():
        raise ConfigError(f"{feature} relies on Keras internals checked with Keras {', '.join(TESTED_KERAS)} "
                          f"({issue}); Keras {keras.__version__} is installed: install "
                          f"keras=={TESTED_KERAS[-1]}.*, {fix}")
