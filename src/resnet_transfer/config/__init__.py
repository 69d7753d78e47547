"""Run configuration: one frozen dataclass per stage, validated on creation.

Precedence is defaults < config file (JSON) < command-line flags. Unknown keys
are errors. Every run writes its resolved configuration to ``config.json``.

Each field carries its command-line help in its metadata (``option``), and the
CLI builds its ``train`` flags from these fields, so a setting is declared once.

Example:
    >>> config = RunConfig.from_dict({"model": {"weights": "none"}, "data": {"limit": 512}})
    >>> config.train.epochs
    40
"""

from resnet_transfer.config.choices import (
    AUGMENT_LEVELS, AUGMENT_PHASES, BUILTIN_DATA, CACHE_DTYPES, EXPORT_FORMATS, EXTRACT_RUNTIMES, FEATURE_LAYERS, HEADS,
    PHASES, POOLINGS, PREDICT_FORMATS, PREPROCESS_MODES, RESIZE_MODES, SPLITS, STRATEGIES, TUNE_SEARCHERS, UNFREEZE_POINTS,
    interpolation_weight, option, parse_class_list,
    parse_count_or_fraction, parse_shard,
)
from resnet_transfer.config.rules import HOW_SETTINGS, check_export_settings, check_settings_take_effect, flat_settings
from resnet_transfer.config.run_config import RunConfig, load_config_file, read_config_values
from resnet_transfer.config.sections import DataConfig, ModelConfig, TrainConfig

__all__ = [
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "RunConfig",
    "load_config_file",
    "read_config_values",
    "flat_settings",
    "HOW_SETTINGS",
    "parse_shard",
    "option",
    "parse_count_or_fraction",
    "BUILTIN_DATA",
    "RESIZE_MODES",
    "PREPROCESS_MODES",
    "CACHE_DTYPES",
    "POOLINGS",
    "HEADS",
    "UNFREEZE_POINTS",
    "AUGMENT_LEVELS",
    "AUGMENT_PHASES",
    "PHASES",
    "FEATURE_LAYERS",
    "parse_class_list",
    "check_settings_take_effect",
    "EXPORT_FORMATS",
    "check_export_settings",
    "STRATEGIES",
    "EXTRACT_RUNTIMES",
    "SPLITS",
    "PREDICT_FORMATS",
    "TUNE_SEARCHERS",
    "interpolation_weight",
]
