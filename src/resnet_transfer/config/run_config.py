"""``RunConfig``: every setting of a run (its defaults are the seed recipe), built from
nested dicts laid over a recipe's settings, and the JSON config files that hold them."""

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Optional

from resnet_transfer.config.choices import option, require_choice, require_text
from resnet_transfer.config.sections import DataConfig, ModelConfig, TrainConfig
from resnet_transfer.errors import ConfigError
from resnet_transfer.recipes import RECIPES, apply_recipe, merge_settings
from resnet_transfer.registry import get_backbone_spec

__all__ = ["RunConfig", "load_config_file", "read_config_values"]


@dataclass(frozen=True)
class RunConfig:
    """Everything one ``train`` run needs; its defaults are the seed recipe.

    Args:
        data, model, train: the stage configurations.
        recipe: the named settings laid under the given ones (``recipes.RECIPES``).
        run_dir: the run's output folder (None: ``runs/<UTC timestamp>-<backbone>``).
        tensorboard: also write TensorBoard logs to ``RUN_DIR/tensorboard``.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run_dir: Optional[str] = option(None, "output folder (runs/<UTC timestamp>-<backbone> if not given); never overwritten")
    tensorboard: bool = option(False, "also write TensorBoard logs to RUN_DIR/tensorboard", const=True)
    recipe: str = option("seed", "; ".join(f"{name}: {recipe.description}" for name, recipe in RECIPES.items())
                         + "; flags override its settings")

    SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}

    def __post_init__(self):
        require_text("run_dir", self.run_dir, allow_none=True)
        require_choice("recipe", self.recipe, tuple(RECIPES))
        if not isinstance(self.tensorboard, bool):
            raise ConfigError(f"tensorboard must be true or false. Received: tensorboard={self.tensorboard!r}")
        unfreeze, cut = self.train.unfreeze, self.model.feature_layer
        if unfreeze != "all" and unfreeze > cut:
            raise ConfigError(
                f"unfreeze={unfreeze!r} (from --unfreeze, the config file or the recipe) is above feature_layer={cut!r}: "
                f"the backbone is cut at the end of {cut}, so {unfreeze} is not in the model. Pass --unfreeze {cut} "
                "(or an earlier stage, or all), or a later --feature-layer"
            )
        if self.data.image_size is not None:
            spec = get_backbone_spec(self.model.backbone)
            if self.data.image_size < spec.min_input_size:
                raise ConfigError(
                    f"image_size must be at least {spec.min_input_size} for {spec.name} (Keras's smallest input "
                    f"without the top). Received: image_size={self.data.image_size}"
                )

    @classmethod
    def from_dict(cls, values: Any) -> "RunConfig":
        """Builds a config from nested dicts laid over their recipe's settings (``recipes``);
        unknown keys and wrong types raise ``ConfigError``."""
        if not isinstance(values, dict):
            raise ConfigError(f"a config must be a JSON object. Received: {type(values).__name__}")
        values = apply_recipe(values)
        top_level = {f.name for f in dataclasses.fields(cls)} - set(cls.SECTIONS)
        unknown = set(values) - set(cls.SECTIONS) - top_level
        if unknown:
            allowed = ", ".join(sorted(set(cls.SECTIONS) | top_level))
            raise ConfigError(f"unknown config keys: {', '.join(sorted(map(str, unknown)))}. Allowed: {allowed}")
        built = {}
        for name, section_class in cls.SECTIONS.items():
            section = values.get(name, {})
            if not isinstance(section, dict):
                raise ConfigError(
                    f"config section '{name}' must be an object of settings, like {{\"{name}\": {{...}}}}. "
                    f"Received: {type(section).__name__}"
                )
            names = {f.name for f in dataclasses.fields(section_class)}
            unknown = set(section) - names
            if unknown:
                raise ConfigError(
                    f"unknown keys in config section '{name}': {', '.join(sorted(map(str, unknown)))}. "
                    f"Allowed: {', '.join(sorted(names))}"
                )
            built[name] = section_class(**section)
        return cls(**built, **{key: values[key] for key in top_level if key in values})

    def to_dict(self) -> dict:
        """The config as nested plain dicts (what ``config.json`` stores under "config")."""
        return dataclasses.asdict(self)

    def updated(self, overrides: dict) -> "RunConfig":
        """Returns a copy with ``overrides`` (same nesting as ``to_dict``) applied.

        A changed ``recipe`` is laid under the overrides only: this config's resolved
        values win over it. To combine a recipe with settings, use ``from_dict``.
        """
        return RunConfig.from_dict(merge_settings(self.to_dict(), overrides))


def load_config_file(path: str) -> RunConfig:
    """Reads a JSON config file (same nesting as ``RunConfig.to_dict``).

    Raises:
        ConfigError: the file cannot be read, is not UTF-8 JSON, or has unknown keys or bad values.
    """
    return RunConfig.from_dict(read_config_values(path))


def read_config_values(path: str) -> dict:
    """The settings of a JSON config file as nested dicts, not yet checked.

    Raises:
        ConfigError: the file cannot be read or is not UTF-8 JSON.
    """
    try:
        with open(path, encoding="utf-8-sig") as handle:
            values = json.load(handle)
    except OSError as error:
        raise ConfigError(f"cannot read config file {path!r}: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path!r} is not UTF-8 text ({error.reason}); save it as UTF-8 JSON") from error
    except json.JSONDecodeError as error:
        raise ConfigError(f"config file {path!r} is not valid JSON ({error}); fix it or leave out --config") from error
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path!r} must hold a JSON object. Received: {type(values).__name__}")
    return values
