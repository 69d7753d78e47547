"""The learning-rate finder (fastai's ``lr_find``, Lightning's ``Tuner.lr_find``; Keras has none).

A short run over exponentially growing learning rates, one optimizer step each,
records the loss of every batch. The loss first stays flat, then falls, then
explodes; a good learning rate lies on the steepest part of the fall, well before
the minimum. The sweep stops early when the smoothed loss exceeds four times its
minimum (fastai's rule) or stops being finite.

- ``phase="head"``: the head on stored features (from the feature cache: seconds);
- ``phase="fine-tune"``: the model with the backbone unfrozen as ``--unfreeze`` says,
  on images (as the fine-tune phase trains it).

The model is a throwaway: nothing of the sweep is kept but its figures.

Example:
    >>> result = find_learning_rate(RunConfig.from_dict({"model": {"weights": "none"}}), steps=100)
    >>> result.suggestion
"""

import logging
import math
from dataclasses import dataclass
from typing import Optional

import keras
import numpy as np

from resnet_transfer.model.precision import precision_policy
from resnet_transfer.config import PHASES, RunConfig, check_settings_take_effect
from resnet_transfer.errors import ConfigError
from resnet_transfer.files import write_json_atomic, write_text_atomic
from resnet_transfer.model.assembly import backbone_of, compile_model, head_of
from resnet_transfer.model.heads import classifier_on_features
from resnet_transfer.report import save_figure, subplots
from resnet_transfer.runs import Run, RunContext, check_run_dir_free, default_run_dir
from resnet_transfer.training.batches import ArrayBatches
from resnet_transfer.training.distribution import choose_strategy, strategy_scope
from resnet_transfer.training.backbone_pass import stored_features
from resnet_transfer.training.fitting import jit_compile_for
from resnet_transfer.training.phases import fine_tune_optimizer, unfreeze
from resnet_transfer.training.setup import prepare

__all__ = ["LearningRateSweep", "find_learning_rate", "suggest_learning_rate"]

logger = logging.getLogger(__name__)

_SMOOTHING = 0.98  # fastai's exponential moving average of the loss
_DIVERGED = 4.0  # stop when the smoothed loss is this many times its minimum


@dataclass
class LearningRateSweep:
    """The sweep's figures: one learning rate, loss and smoothed loss per step, and the suggestion."""

    learning_rates: list
    losses: list
    smoothed: list
    suggestion: float
    reason: str
    run_dir: Optional[str] = None


def suggest_learning_rate(learning_rates, smoothed_losses) -> tuple:
    """The learning rate at the steepest fall of the smoothed loss before its minimum, and why.

    Returns:
        (learning rate, a sentence saying how it was chosen).

    Raises:
        ValueError: fewer than 5 finite points (the sweep diverged at once), or no fall before
            the minimum (the loss only rose: the sweep started too high).
    """
    rates, losses = np.asarray(learning_rates, float), np.asarray(smoothed_losses, float)
    finite = np.isfinite(losses)
    rates, losses = rates[finite], losses[finite]
    if len(losses) < 5:
        raise ValueError("fewer than 5 finite losses: the sweep diverged at once; lower --start-lr")
    lowest = int(np.argmin(losses))
    if lowest < 3:
        raise ValueError(f"the smoothed loss was lowest at the start ({rates[lowest]:.2g}) and never fell: "
                         "lower --start-lr, or give more --steps")
    window = slice(0, lowest + 1)
    slopes = np.gradient(losses[window], np.log10(rates[window]))
    steepest = int(np.argmin(slopes))
    return float(rates[steepest]), (
        f"steepest fall of the smoothed loss ({slopes[steepest]:.3g} per decade), before its minimum at "
        f"{rates[lowest]:.2g}; the minimum / 10 would be {rates[lowest] / 10:.2g}")


def _sweep(model: keras.Model, inputs, labels, *, start_lr: float, end_lr: float, steps: int, batch_size: int,
           seed: int) -> tuple:
    batches = ArrayBatches(inputs, labels, batch_size=batch_size, shuffle=True, seed=seed)
    factor = (end_lr / start_lr) ** (1 / max(steps - 1, 1))
    rates, losses, smoothed, average = [], [], [], 0.0
    for step in range(steps):
        rate = start_lr * factor**step
        model.optimizer.learning_rate.assign(rate)
        if step and step % len(batches) == 0:
            batches.set_epoch(step // len(batches))
        x, y = batches[step % len(batches)]
        model.reset_metrics()
        loss = float(model.train_on_batch(x, y, return_dict=True)["loss"])
        average = _SMOOTHING * average + (1 - _SMOOTHING) * loss
        rates.append(rate)
        losses.append(loss)
        smoothed.append(average / (1 - _SMOOTHING ** (step + 1)))
        if not math.isfinite(loss) or (step > 10 and smoothed[-1] > _DIVERGED * min(smoothed)):
            logger.info("lr-find: stopped at step %d (learning rate %.3g): the loss diverged", step + 1, rate)
            break
    return rates, losses, smoothed


def _check(start_lr: float, end_lr: float, steps: int, phase: str) -> None:
    if phase not in PHASES:
        raise ConfigError(f"phase must be one of: {', '.join(PHASES)}. Received: phase={phase!r}")
    if not (isinstance(steps, int) and steps >= 10):
        raise ConfigError(f"steps must be an integer >= 10. Received: steps={steps!r}")
    if not (0 < start_lr < end_lr and math.isfinite(end_lr)):
        raise ConfigError(f"learning rates must satisfy 0 < start-lr < end-lr. Received: start_lr={start_lr!r}, end_lr={end_lr!r}")


def find_learning_rate(config: RunConfig, *, phase: str = "head", start_lr: float = 1e-7, end_lr: float = 1.0,
                       steps: int = 100, run_dir: Optional[str] = None) -> LearningRateSweep:
    """Sweeps the learning rate for ``phase`` and writes ``lr_find.png`` and ``lr_find.csv``.

    Args:
        config: the run's settings (data, model, batch size, seed, unfreeze, cache).
        phase: "head" (on stored features) or "fine-tune" (the unfrozen model on images).
        start_lr, end_lr: the sweep's first and last learning rates.
        steps: optimizer steps (batches) in the sweep.
        run_dir: the output folder (None: ``runs/<UTC timestamp>-lr-find``); never overwritten.

    Returns:
        A ``LearningRateSweep`` with the suggestion and the folder.

    Raises:
        ConfigError, DataError, WeightsError, RunDirectoryError: bad input; nothing is written.
    """
    _check(start_lr, end_lr, steps, phase)
    check_settings_take_effect(config, verb="lr-find", fine_tuning=phase == "fine-tune")
    run_dir = run_dir or default_run_dir("lr-find")
    check_run_dir_free(run_dir)
    strategy = choose_strategy(config.train.strategy, batch_size=config.train.batch_size, command="lr-find")
    with strategy_scope(strategy), precision_policy(config.train.mixed_precision):
        rates, losses, smoothed = _sweep_for(config, phase, start_lr=start_lr, end_lr=end_lr, steps=steps)
    try:
        suggestion, reason = suggest_learning_rate(rates, smoothed)
    except ValueError as error:
        raise ConfigError(f"lr-find found no learning rate: {error}") from error
    sweep = LearningRateSweep(rates, losses, smoothed, suggestion, reason)
    with RunContext(run_dir) as context:  # a full disk or Ctrl-C: nothing is left that blocks running it again
        sweep.run_dir = _write(context.run, sweep, config, phase)
        context.finish()
    return sweep


def _sweep_for(config: RunConfig, phase: str, *, start_lr: float, end_lr: float, steps: int) -> tuple:
    """Builds the model for ``phase`` and sweeps; returns (rates, losses, smoothed)."""
    dataset, model, _ = prepare(config, splits=("train",))
    optimizer = None
    if phase == "head":
        features, _, _ = stored_features(model, dataset, config, splits=("train",))
        trainer, inputs = classifier_on_features(head_of(model)), features["train"]
    else:
        unfreeze(backbone_of(model), config.train.unfreeze, train_bn=config.train.train_bn)
        trainer, inputs = model, dataset.x_train
        optimizer = fine_tune_optimizer(model, learning_rate=start_lr, weight_decay=config.train.weight_decay,
                                        train_bn=config.train.train_bn,
                                        lr_decay=config.train.lr_decay)  # (as the fine-tune phase's)
    labels = keras.utils.to_categorical(dataset.y_train, dataset.num_classes) if config.train.label_smoothing else dataset.y_train
    compile_model(trainer, learning_rate=start_lr, optimizer=optimizer, weight_decay=config.train.weight_decay,
                  label_smoothing=config.train.label_smoothing,
                  jit_compile=jit_compile_for(config, measured_faster=True), run_eagerly=config.train.run_eagerly)
    return _sweep(trainer, inputs, labels, start_lr=start_lr, end_lr=end_lr, steps=steps,
                  batch_size=config.train.batch_size, seed=config.train.seed)


def _write(run: Run, sweep: LearningRateSweep, config: RunConfig, phase: str) -> str:
    rows = "".join(f"{step + 1},{rate:.6g},{loss:.6g},{smooth:.6g}\n" for step, (rate, loss, smooth)
                   in enumerate(zip(sweep.learning_rates, sweep.losses, sweep.smoothed)))
    write_text_atomic(run.file("lr_find.csv"), "step,learning_rate,loss,smoothed_loss\n" + rows)
    write_json_atomic(run.file("lr_find.json"), {"phase": phase, "suggestion": sweep.suggestion, "reason": sweep.reason,
                                                 "config": config.to_dict()})
    figure, axis = subplots(figsize=(7, 4))
    axis.plot(sweep.learning_rates, sweep.losses, alpha=0.3, label="loss per batch")
    axis.plot(sweep.learning_rates, sweep.smoothed, label="smoothed")
    axis.axvline(sweep.suggestion, color="red", linestyle="--", label=f"suggested {sweep.suggestion:.2g}")
    axis.set_ylim(top=min(max(sweep.losses), 3 * sweep.smoothed[0]))  # spikes past divergence would hide the fall
    axis.set_xscale("log")
    axis.set_xlabel("learning rate (log scale)")
    axis.set_ylabel("loss")
    axis.set_title(f"Learning-rate finder ({phase} phase)")
    axis.grid(alpha=0.3)
    axis.legend()
    save_figure(figure, run.file("lr_find.png"))
    return run.path
