"""Recipes: named sets of settings, each with the result it is expected to reach.

A recipe sits between the defaults and the user's settings: defaults < recipe <
config file < flags, so any flag overrides a recipe's value. ``config.json``
records the recipe's name and every resolved setting.

- ``seed``: the article's recipe (ResNet152, ImageNet weights, frozen, Flatten ->
  Dense(1000, relu) -> Dense(10, softmax), Adam, MNIST at 32x32x3, 40 epochs).
  These are the defaults, so it changes nothing.
- ``best``: the settings that scored highest on the project's offline transfer protocol
  (a backbone pretrained on digits 0-4, 500 images of digits 5-9), where every addition of
  issue 26 (EMA, MixUp, CutMix, layer-wise decay, interpolation, TTA) was measured alone
  and together and none beat plain fine-tuning beyond the seeds' spread
  (benchmarks/README.md).

This module is plain data: it imports no Keras.

Example:
    >>> get_recipe("best").settings["train"]["fine_tune_epochs"]
    8
"""

from dataclasses import dataclass, field

from resnet_transfer.errors import ConfigError

__all__ = [
    "Recipe", "RECIPES", "PRETRAIN_SETTINGS", "DEFAULT_PROBE_BACKBONES", "DEFAULT_PROBE_LAYERS", "DEFAULT_PROBE_LIMIT",
    "get_recipe", "apply_recipe", "merge_settings",
]

# What ``pretrain`` lays under the user's settings: from scratch, a temporary linear
# head on average-pooled features (the ImageNet classifier's shape), 10 epochs, and
# augmentation (when asked for) in its only phase.
PRETRAIN_SETTINGS = {
    "model": {"weights": "none", "head": "linear", "pooling": "avg"},
    "train": {"epochs": 10, "augment_phase": "both"},
}
# What ``probe`` compares unless told: one backbone per family, the cheapest of each, at
# three cuts, on at most 1,000 training images, so that a probe takes minutes on a CPU.
DEFAULT_PROBE_BACKBONES = ("resnet50", "resnet50v2")
DEFAULT_PROBE_LAYERS = ("conv3", "conv4", "conv5")
DEFAULT_PROBE_LIMIT = 1000


@dataclass(frozen=True)
class Recipe:
    """One recipe.

    Attributes:
        name: ``--recipe`` value.
        description: one line for ``--help`` and the log.
        settings: the settings it changes, nested as ``RunConfig.to_dict``.
        expected_test_accuracy: the MNIST test accuracy it is expected to reach with ImageNet weights.
        tolerance: how far (absolute) a measured accuracy may fall below the expectation.
        expected_source: where the expectation comes from.
        budget: the CPU budget the settings were chosen for.
    """

    name: str
    description: str
    expected_test_accuracy: float
    tolerance: float
    expected_source: str
    budget: str
    settings: dict = field(default_factory=dict)


RECIPES = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            "seed",
            "the article: ResNet152, ImageNet weights, frozen, flatten head, Adam, MNIST at 32 px, 40 epochs",
            expected_test_accuracy=0.9275,
            tolerance=0.01,
            expected_source="the article's reported test accuracy (one run)",
            budget="about 12 minutes on 2 CPU cores with the feature cache",
        ),
        Recipe(
            "best",
            "ResNet50 with its ImageNet preprocessing, a linear head on average-pooled features trained 30 epochs "
            "on cached features, then every layer fine-tuned 8 epochs at 1e-4 (BatchNormalization in inference "
            "mode)",
            expected_test_accuracy=0.99,
            tolerance=0.005,
            expected_source="the project's target for ImageNet weights, which cannot be downloaded on the "
            "machines it was developed on: not measured. Chosen on an offline transfer protocol, where it beat "
            "seed (benchmarks/README.md, 'The best recipe against the seed recipe')",
            budget="about 8 hours on 2 CPU cores for MNIST's 58,000 images at 32 px (a fine-tune epoch runs about "
            "16 images/s there); its head phase alone takes minutes",
            settings={
                "model": {"backbone": "resnet50", "preprocess": "imagenet", "pooling": "avg", "head": "linear"},
                "train": {"epochs": 30, "fine_tune_epochs": 8, "unfreeze": "all", "fine_tune_lr": 1e-4},
            },
        ),
    )
}


def get_recipe(name) -> Recipe:
    """The recipe called ``name``; an unknown name lists the known ones.

    Raises:
        ConfigError: ``name`` is not in ``RECIPES``.
    """
    if not isinstance(name, str) or name not in RECIPES:
        raise ConfigError(f"recipe must be one of: {', '.join(RECIPES)}. Received: recipe={name!r}")
    return RECIPES[name]


def apply_recipe(values: dict) -> dict:
    """``values`` (nested settings, possibly with "recipe") laid over its recipe's settings."""
    return merge_settings(get_recipe(values.get("recipe", "seed")).settings, values)


def merge_settings(under: dict, over: dict) -> dict:
    """``over``'s nested settings laid on ``under``'s, section by section: the one merge of
    settings (defaults < recipe < a command's own defaults < config file < flags). Neither
    is changed; a section that is not a dict on either side is replaced whole (and left for
    ``RunConfig.from_dict`` to name if it is damaged)."""
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in {**under, **over}.items()}
    for key in under.keys() & over.keys():
        if isinstance(under[key], dict) and isinstance(over[key], dict):
            merged[key] = {**under[key], **over[key]}
    return merged
