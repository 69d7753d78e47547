"""The allowed values of every setting, declared once, and the checks every section's
``__post_init__`` runs (they name the setting, the value received and what is allowed)."""

import math
from dataclasses import field
from typing import Any, Optional

from resnet_transfer.errors import ConfigError

__all__ = [
    "AUGMENT_LEVELS", "AUGMENT_PHASES", "BUILTIN_DATA", "CACHE_DTYPES", "EXPORT_FORMATS", "EXTRACT_RUNTIMES",
    "CALIBRATIONS", "FEATURE_LAYERS", "HEADS", "PHASES", "POOLINGS", "PREDICT_FORMATS", "PREPROCESS_MODES", "RESIZE_MODES", "SPLITS", "STRATEGIES",
    "UNFREEZE_POINTS", "class_selection", "interpolation_weight", "option", "parse_class_list", "parse_count_or_fraction", "parse_shard",
    "require_choice", "require_int", "require_number", "require_size", "require_text",
]

BUILTIN_DATA = ("mnist", "fashion_mnist", "cifar10", "cifar100")
RESIZE_MODES = ("pad", "stretch", "crop")
SPLITS = ("train", "val", "test")  # a data set's splits, in this order
PREPROCESS_MODES = ("seed", "imagenet")
CACHE_DTYPES = ("float32", "float16")
POOLINGS = ("auto", "flatten", "avg", "max")
HEADS = ("seed", "linear", "mlp")
UNFREEZE_POINTS = ("all", "conv5", "conv4", "conv3", "conv2")
AUGMENT_LEVELS = ("none", "light", "strong")
AUGMENT_PHASES = ("fine-tune", "both")
PHASES = ("head", "fine-tune")
# tf.distribute strategies (training.distribution)
STRATEGIES = ("auto", "default", "mirrored", "multi-worker")
EXTRACT_RUNTIMES = ("auto", "keras", "openvino", "tflite", "onnx", "openvino-int8")
# Where features are taken: the end of a residual stage (fastai's "cut"); conv5 is the backbone's output.
FEATURE_LAYERS = ("conv2", "conv3", "conv4", "conv5")
# How a run's probabilities are calibrated after training (calibration)
CALIBRATIONS = ("temperature", "none")


def parse_class_list(text: str) -> tuple:
    """'0,1,2' or 'cat, dog' -> a tuple of class names or indices, as text."""
    names = tuple(part.strip() for part in str(text).split(","))
    if not names or any(not name for name in names):
        raise ValueError(f"expected class names or indices separated by commas (e.g. 0,1,2 or cat,dog), got {text!r}")
    return names


def parse_count_or_fraction(text: str):
    """'500' -> 500, '0.2' -> 0.2 (range checked by the config)."""
    try:
        return float(text) if any(mark in text.lower() for mark in ".en") else int(text)
    except ValueError:
        raise ValueError(f"expected a count (e.g. 500) or a fraction (e.g. 0.2), got {text!r}") from None


def option(default, help: str, *, flag: Optional[str] = None, parse=None, const=None, metavar=None):
    """A config field with its command-line flag: ``--field-name`` unless ``flag`` says otherwise.

    Args:
        default: the field's default.
        help: the flag's help text (the default is appended by the CLI).
        flag: the flag's name when it is not the field's name with dashes.
        parse: converts the flag's text (default: from the field's type).
        const: for switches (``--strict``, ``--no-cache``), the value the switch sets.
    """
    metadata = {"help": help, "flag": flag, "parse": parse, "const": const, "metavar": metavar}
    return field(default=default, metadata=metadata)


def require_int(name: str, value: Any, minimum: int, *, allow_none: bool = False, maximum: Optional[int] = None) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum is not None and value > maximum):
        allowed = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ConfigError(f"{name} must be an integer {allowed}. Received: {name}={value!r}")


def require_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of: {', '.join(choices)}. Received: {name}={value!r}")


def require_text(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a non-empty string. Received: {name}={value!r}")


def require_number(name: str, value: Any, *, low: float, high: float, high_included: bool = False,
                    low_included: bool = True) -> None:
    """A finite number in [low, high) (or with the ends the flags say)."""
    inside = (
        not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
        and (value >= low if low_included else value > low) and (value <= high if high_included else value < high)
    )
    if not inside:
        allowed = f"{'[' if low_included else '('}{low:g}, {high:g}{']' if high_included else ')'}"
        raise ConfigError(f"{name} must be a number in {allowed}. Received: {name}={value!r}")


def require_size(name: str, value: Any) -> None:
    """A count (int >= 1), a fraction (0 < float < 1), or None."""
    if value is None or (isinstance(value, float) and 0 < value < 1):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"{name} must be a count (an integer >= 1) or a fraction (between 0 and 1). Received: {name}={value!r}"
        )


def class_selection(value: Any) -> tuple:
    """A class selection from a flag's text, or a config file's list of names and indices."""
    if isinstance(value, str):
        try:
            entries = list(parse_class_list(value))
        except ValueError as error:
            raise ConfigError(f"classes: {error}. Received: classes={value!r}") from None
    else:
        entries = list(value) if isinstance(value, (list, tuple)) else None
    if not entries or any(isinstance(entry, bool) or not isinstance(entry, (str, int)) or str(entry).strip() == ""
                          for entry in entries):
        raise ConfigError("classes must be a non-empty list of class names or indices, or their comma-separated text "
                          f"(e.g. \"0,1,2\"). Received: classes={value!r}")
    names = tuple(str(entry).strip() for entry in entries)
    if len(set(names)) != len(names):
        raise ConfigError(f"classes names a class twice; name each once. Received: classes={','.join(names)}")
    return names


# export's formats (``export.export_run``)
EXPORT_FORMATS = ("savedmodel", "tflite", "onnx", "openvino")
PREDICT_FORMATS = ("table", "jsonl", "csv")  # predict's output formats
TUNE_SEARCHERS = ("hyperband", "bayesian")  # tune's KerasTuner tuners


def interpolation_weight(setting) -> Optional[float]:
    """``--interpolate``'s ``a`` for a setting: None for "none" and "auto" (picked on the validation
    split later), else the number in [0, 1].

    Raises:
        ValueError: anything else.
    """
    if setting in ("none", "auto"):
        return None
    try:
        value = float(setting)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(setting, bool) or not 0 <= value <= 1:
        raise ValueError(f"expected none, auto or a number from 0 to 1, got {setting!r}")
    return value


def parse_shard(text: str) -> tuple:
    """"i/n" -> (i, n), with 0 <= i < n (``extract --shard``).

    Raises:
        ValueError: anything else.
    """
    index, _, count = text.partition("/")
    if not (index.isdecimal() and count.isdecimal()) or not 0 <= int(index) < int(count):
        raise ValueError(f"expected i/n with 0 <= i < n (for example 0/4: the first of 4 shards), got {text!r}")
    return int(index), int(count)
