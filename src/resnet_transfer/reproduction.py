"""``reproduce``: run a recipe and compare its test accuracy with what it is expected to reach.

A recipe's expectation holds for its own settings with ImageNet weights on MNIST.
When the weights cannot be had (no network, nothing imported), the comparison
cannot be made: the recipe then runs with random weights (``--weights none``), and
the result says why it cannot compare and what the random backbone reached instead.
Settings changed by flags (a ``--limit``, fewer epochs) also make it incomparable,
and the result names them.

Example:
    >>> result = reproduce("seed")
    >>> result["comparable"], result["measured_test_accuracy"]
"""

import logging
from typing import Optional

from resnet_transfer.config import HOW_SETTINGS, RunConfig, flat_settings
from resnet_transfer.errors import ConfigError, WeightsError
from resnet_transfer.files import first_line
from resnet_transfer.model.weights import fetch_weights
from resnet_transfer.recipes import get_recipe
from resnet_transfer.training.distribution import cluster_role
from resnet_transfer.training.train import train

__all__ = ["reproduce", "format_reproduction", "within_tolerance"]

logger = logging.getLogger(__name__)

# Settings that do not change what a run computes (float16 features stay within the recipe's tolerance).
_NEUTRAL = HOW_SETTINGS | {"train.cache_dtype"}


def _changed_settings(config: RunConfig) -> list:
    recipe_values = flat_settings(RunConfig.from_dict({"recipe": config.recipe}).to_dict())
    return [f"{name}={value!r}" for name, value in flat_settings(config.to_dict()).items()
            if name not in _NEUTRAL and recipe_values.get(name) != value]


def within_tolerance(measured: float, recipe) -> bool:
    """Whether ``measured`` reaches the recipe's expectation less its tolerance. One-sided,
    as ``Recipe.tolerance`` says: reaching more than expected is not a failure."""
    return measured >= recipe.expected_test_accuracy - recipe.tolerance


def reproduce(name: str, config: Optional[RunConfig] = None) -> dict:
    """Runs recipe ``name`` (with ``config``'s changes, if any) and compares its test accuracy.

    Args:
        name: a recipe name ("seed", "best").
        config: the recipe's settings with the user's flags laid over them (None: the recipe as is).

    Returns:
        A dict: recipe, expected_test_accuracy, tolerance, measured_test_accuracy, weights,
        comparable, within_tolerance (None when not comparable), why_not_comparable, run_dir.
    """
    recipe = get_recipe(name)
    config = config or RunConfig.from_dict({"recipe": name})
    if config.train.strategy in ("auto", "multi-worker") and cluster_role() is not None:
        raise ConfigError("reproduce does not run on a cluster yet (TF_CONFIG describes one): run it on one machine "
                          "without TF_CONFIG")
    reasons = []
    if config.model.weights == "imagenet":
        try:
            fetch_weights(config.model.backbone)
        except WeightsError as error:
            reasons.append(f"the ImageNet weights cannot be had here ({first_line(error)})")
            config = config.updated({"model": {"weights": "none"}})
            logger.info("reproduce: %s; running the recipe with random weights (--weights none) instead", reasons[-1])
    else:
        reasons.append(f"the expectation holds for ImageNet weights, and this run uses --weights {config.model.weights}")
    changed = [setting for setting in _changed_settings(config) if not setting.startswith("model.weights=")]
    if changed:
        reasons.append(f"settings differ from the recipe's: {', '.join(changed)}")
    result = train(config)
    measured = result.metrics["test_accuracy"]
    comparable = not reasons
    return {
        "recipe": recipe.name,
        "expected_test_accuracy": recipe.expected_test_accuracy,
        "tolerance": recipe.tolerance,
        "expected_source": recipe.expected_source,
        "measured_test_accuracy": measured,
        "weights": config.model.weights,
        "comparable": comparable,
        "within_tolerance": within_tolerance(measured, recipe) if comparable else None,
        "why_not_comparable": "; ".join(reasons) or None,
        "train_seconds": result.metrics["train_seconds"],
        "run_dir": result.run_dir,
    }


def format_reproduction(result: dict) -> str:
    """The result as a few lines for people."""
    lines = [
        f"recipe {result['recipe']}: expected test accuracy {result['expected_test_accuracy']:.4f}, at least "
        f"{result['expected_test_accuracy'] - result['tolerance']:.4f}, with ImageNet weights ({result['expected_source']})",
        f"measured: {result['measured_test_accuracy']:.4f} with --weights {result['weights']} "
        f"(run folder {result['run_dir']})",
    ]
    if result["comparable"]:
        verdict = "within tolerance" if result["within_tolerance"] else "NOT within tolerance"
        lines.append(f"comparison: {verdict} (difference {result['measured_test_accuracy'] - result['expected_test_accuracy']:+.4f})")
    else:
        lines.append(f"comparison: cannot be made here: {result['why_not_comparable']}. "
                     f"The measured figure is what this run reached instead, not a reproduction.")
    return "\n".join(lines) + "\n"
