"""Run configuration: one frozen dataclass per stage, validated on creation.

Precedence is defaults < config file (JSON) < command-line flags. Unknown keys
are errors. Every run writes its resolved configuration to ``config.json``.

Example:
    >>> config = RunConfig.from_dict({"model": {"weights": "none"}, "data": {"limit": 512}})
    >>> config.train.epochs
    40
"""

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from resnet_transfer.errors import ConfigError

__all__ = [
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "RunConfig",
    "load_config_file",
    "BUILTIN_DATA",
    "RESIZE_MODES",
    "PREPROCESS_MODES",
    "CACHE_DTYPES",
]

BUILTIN_DATA = ("mnist", "fashion_mnist", "cifar10", "cifar100")
RESIZE_MODES = ("pad", "stretch", "crop")
PREPROCESS_MODES = ("seed", "imagenet")
CACHE_DTYPES = ("float32", "float16")


def _require_int(name: str, value: Any, minimum: int, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer >= {minimum}. Received: {name}={value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}. Received: {name}={value}")


def _require_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        allowed = ", ".join(choices)
        raise ConfigError(f"{name} must be one of: {allowed}. Received: {name}={value!r}")


def _require_size(name: str, value: Any) -> None:
    """A count (int >= 1), a fraction (0 < float < 1), or None."""
    if value is None or (isinstance(value, float) and 0 < value < 1):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"{name} must be a count (an integer >= 1) or a fraction (between 0 and 1). Received: {name}={value!r}"
        )


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from, how they are shaped and how they are split.

    Args:
        source: "mnist" (the seed recipe's), "fashion_mnist", "cifar10", "cifar100",
            a folder of class folders (or with train/, val/, test/), a .csv or a .npz file.
        data_dir: for MNIST, a folder holding ``mnist.npz`` or the four IDX ``.gz``
            files; searched before any other place.
        limit: train on the first ``limit`` training images only (None: all).
        val_size: images held out for validation, a count or a fraction. MNIST holds
            out the LAST ones (default 2000, as the seed recipe does); other sources a
            stratified, seeded sample (default 0.2) unless they have a val/ folder.
        test_limit: evaluate on the first ``test_limit`` test images only (None: all).
        test_size: held-out test share for sources without test images (default 0.2).
        image_size: side of the square backbone input (None: 32 for 28x28 inputs,
            padded as in the seed recipe; otherwise 224).
        resize: "pad", "stretch" or "crop" (None: "pad" for the 28x28 -> 32 case,
            otherwise "stretch").
        path_column, label_column: the CSV's columns.
        strict: turn every skipped input into an error.
    """

    source: str = "mnist"
    data_dir: Optional[str] = None
    limit: Optional[int] = None
    val_size: Any = None
    test_limit: Optional[int] = None
    test_size: Any = 0.2
    image_size: Optional[int] = None
    resize: Optional[str] = None
    path_column: str = "path"
    label_column: str = "label"
    strict: bool = False

    def __post_init__(self):
        if not isinstance(self.source, str) or not (
            self.source in BUILTIN_DATA or os.path.isdir(self.source) or (
                os.path.isfile(self.source) and self.source.endswith((".csv", ".npz")))
        ):
            raise ConfigError(
                f"data must be one of {', '.join(BUILTIN_DATA)}, an existing folder of class folders, "
                f"or an existing .csv or .npz file. Received: data={self.source!r}"
            )
        _require_int("limit", self.limit, 1, allow_none=True)
        _require_size("val_size", self.val_size)
        _require_int("test_limit", self.test_limit, 1, allow_none=True)
        _require_size("test_size", self.test_size)
        _require_int("image_size", self.image_size, 8, allow_none=True)
        if self.resize is not None:
            _require_choice("resize", self.resize, RESIZE_MODES)
        if self.data_dir is not None and not os.path.isdir(self.data_dir):
            raise ConfigError(f"data_dir must be an existing folder. Received: data_dir={self.data_dir!r}")


@dataclass(frozen=True)
class ModelConfig:
    """The backbone, its weights and preprocessing, and the head on top.

    Args:
        backbone: a name from ``resnet_transfer.backbones.BACKBONES``.
        weights: "imagenet" (Keras downloads and caches them under KERAS_HOME),
            "none" (random initialisation) or the path of a weights file.
        preprocess: "seed" (scale pixels to [0, 1], as the article does) or
            "imagenet" (the backbone's own ``preprocess_input``).
        head_units: width of the head's hidden Dense layer.
    """

    backbone: str = "resnet152"
    weights: str = "imagenet"
    preprocess: str = "seed"
    head_units: int = 1000

    def __post_init__(self):
        from resnet_transfer.backbones import BACKBONES  # deferred: backbones imports keras

        _require_choice("backbone", self.backbone, tuple(BACKBONES))
        _require_choice("preprocess", self.preprocess, PREPROCESS_MODES)
        _require_int("head_units", self.head_units, 1)
        if not isinstance(self.weights, str) or not self.weights:
            raise ConfigError(
                f"weights must be 'imagenet', 'none' or the path of a weights file. Received: weights={self.weights!r}"
            )
        if self.weights not in ("imagenet", "none"):
            if not os.path.isfile(self.weights) or not os.access(self.weights, os.R_OK):
                raise ConfigError(
                    "weights must be 'imagenet', 'none' or the path of a readable weights file. "
                    f"Received: weights={self.weights!r}, which is not a readable file"
                )


@dataclass(frozen=True)
class TrainConfig:
    """How the head is trained.

    Args:
        epochs: passes over the training images (0 trains nothing, only evaluates).
        batch_size: images per optimizer step.
        learning_rate: Adam's learning rate (Keras's default is 0.001).
        seed: fixes Python, numpy and Keras random state, and the shuffling.
        feature_cache: "auto" runs the frozen backbone once and trains the head on
            stored features; "off" runs the backbone in every epoch, as the article does.
        cache_dir: where stored features live (None: the user's cache directory).
        cache_dtype: "float32" or "float16" for stored features.
        steps_per_execution: optimizer steps per compiled call (Keras's knob for
            per-step overhead; 8 measured fastest for the head, see benchmarks/README.md).
        class_weight: None, or "balanced" to weight the loss by inverse class frequency
            on the training split (scikit-learn's definition).
    """

    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 0.001
    seed: int = 0
    feature_cache: str = "auto"
    cache_dir: Optional[str] = None
    cache_dtype: str = "float32"
    steps_per_execution: int = 8
    class_weight: Optional[str] = None

    def __post_init__(self):
        _require_int("epochs", self.epochs, 0)
        _require_int("batch_size", self.batch_size, 1)
        _require_int("seed", self.seed, 0)
        _require_int("steps_per_execution", self.steps_per_execution, 1)
        if isinstance(self.learning_rate, bool) or not isinstance(self.learning_rate, (int, float)) or not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be a number > 0. Received: learning_rate={self.learning_rate!r}")
        _require_choice("feature_cache", self.feature_cache, ("auto", "off"))
        _require_choice("cache_dtype", self.cache_dtype, CACHE_DTYPES)
        if self.class_weight is not None:
            _require_choice("class_weight", self.class_weight, ("balanced",))


@dataclass(frozen=True)
class RunConfig:
    """Everything one ``train`` run needs; its defaults are the seed recipe.

    Args:
        data, model, train: the stage configurations.
        run_dir: the run's output folder (None: ``runs/<UTC timestamp>-<backbone>``).
        tensorboard: also write TensorBoard logs to ``RUN_DIR/tensorboard``.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run_dir: Optional[str] = None
    tensorboard: bool = False

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        """Builds a config from nested dicts; unknown keys raise ``ConfigError``."""
        if not isinstance(values, dict):
            raise ConfigError(f"a config must be a JSON object. Received: {type(values).__name__}")
        sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
        top_level = {"run_dir", "tensorboard"}
        unknown = set(values) - set(sections) - top_level
        if unknown:
            allowed = ", ".join(sorted(set(sections) | top_level))
            raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}. Allowed: {allowed}")
        built = {}
        for name, section_class in sections.items():
            section = values.get(name, {})
            names = {f.name for f in dataclasses.fields(section_class)}
            unknown = set(section) - names
            if unknown:
                raise ConfigError(
                    f"unknown keys in config section '{name}': {', '.join(sorted(unknown))}. "
                    f"Allowed: {', '.join(sorted(names))}"
                )
            built[name] = section_class(**section)
        return cls(**built, **{key: values[key] for key in top_level if key in values})

    def to_dict(self) -> dict:
        """The config as nested plain dicts (what ``config.json`` stores under "config")."""
        return dataclasses.asdict(self)

    def updated(self, overrides: dict) -> "RunConfig":
        """Returns a copy with ``overrides`` (same nesting as ``to_dict``) applied."""
        merged = self.to_dict()
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key].update(value)
            else:
                merged[key] = value
        return RunConfig.from_dict(merged)


def load_config_file(path: str) -> RunConfig:
    """Reads a JSON config file (same nesting as ``RunConfig.to_dict``).

    Raises:
        ConfigError: the file cannot be read, is not JSON, or has unknown keys.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            values = json.load(handle)
    except OSError as error:
        raise ConfigError(f"cannot read config file {path!r}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"config file {path!r} is not valid JSON: {error}") from None
    return RunConfig.from_dict(values)
