"""Checks across settings: the one rule for settings that take no effect under the others
(``check_settings_take_effect``), what ``--resume`` compares (``HOW_SETTINGS``,
``flat_settings``), and export's settings."""

from typing import Optional

from resnet_transfer.config.choices import EXPORT_FORMATS, require_choice
from resnet_transfer.config.run_config import RunConfig
from resnet_transfer.errors import ConfigError
from resnet_transfer.recipes import PRETRAIN_SETTINGS, apply_recipe

__all__ = ["HOW_SETTINGS", "check_export_settings", "check_settings_take_effect", "flat_settings"]


# Settings that change where a run's files are and how it computes, not what it computes.
# The extraction runtime is one of them: a converted backbone's features are checked within 1e-5 of Keras's.
HOW_SETTINGS = frozenset({"run_dir", "tensorboard", "data.data_dir", "train.cache_dir", "train.jit_compile",
                          "train.run_eagerly", "train.strategy", "train.extract_runtime"})


def flat_settings(values: dict, prefix: str = "") -> dict:
    """``RunConfig.to_dict``-style nested settings as {"section.name": value}."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flat_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_settings_take_effect(config: RunConfig, *, verb: str = "train", fine_tuning: Optional[bool] = None) -> None:
    """Raises ``ConfigError`` for a setting given (set apart from its default and its recipe's
    value) that changes nothing under the others, naming what would give it effect: one rule
    for all of them, as for ``flip`` without ``augment``.

    Args:
        verb: "train" (and extract, reproduce), "pretrain" (one phase; it always recomputes
            the BatchNormalization statistics) or "lr-find" (whose config is usually the
            train run's that follows: its phase settings are not checked).
        fine_tuning: whether the verb trains an unfrozen backbone (None: whether there is
            a fine-tune phase; ``lr-find --phase fine-tune`` sweeps one without it).
    """
    defaults = flat_settings(RunConfig().to_dict())
    recipe = flat_settings(apply_recipe({"recipe": config.recipe}))
    if verb == "pretrain":  # (pretrain's own defaults, laid under the user's settings, are not the user's)
        recipe = flat_settings(PRETRAIN_SETTINGS)
    given = flat_settings(config.to_dict())
    fine_tuning = config.train.fine_tune_epochs > 0 if fine_tuning is None else fine_tuning
    no_phase = ("there is no fine-tune phase (fine_tune_epochs=0)", "add --fine-tune-epochs N")
    if verb == "pretrain":
        no_phase = ("pretrain trains every layer in one phase", "remove it from the config file")
    no_cache = ("--no-cache runs the backbone in every epoch, with no features to store", "leave out --no-cache")
    phase_rules = {"train.fine_tune_lr", "train.unfreeze", "train.train_bn", "train.interpolate", "train.lr_decay",
                   "train.cutmix"}
    end_to_end = (fine_tuning or verb == "pretrain" or config.train.feature_cache == "off"
                  or (config.train.augment != "none" and config.train.augment_phase == "both"))
    rules = (
        ("model.head_units", config.model.head == "linear", "the linear head has no hidden layer",
         "give --head seed or --head mlp"),
        ("model.dropout", config.model.head != "mlp", f"only the mlp head has dropout, and head={config.model.head!r}",
         "give --head mlp"),
        ("model.bn_images", not config.model.bn_recalibrate and verb != "pretrain",
         "it is the sample --bn-recalibrate recomputes the BatchNormalization statistics over", "add --bn-recalibrate"),
        ("train.fine_tune_lr", not fine_tuning, *no_phase),
        ("train.unfreeze", not fine_tuning, *no_phase),
        ("train.train_bn", not fine_tuning, *no_phase),
        ("train.interpolate", not fine_tuning, *no_phase),
        ("train.lr_decay", not fine_tuning, *no_phase),
        ("train.cutmix", not end_to_end, "CutMix pastes boxes of images, and the only phase here trains the head on "
         "stored features", "add --fine-tune-epochs N or --no-cache (or use --mixup, which mixes stored features)"),
        ("train.extract_runtime", config.train.feature_cache == "off", *no_cache),
        ("train.cache_dtype", config.train.feature_cache == "off", *no_cache),
        ("train.augment_phase", config.train.augment == "none", "nothing is augmented (augment='none')",
         "add --augment light or --augment strong"),
        ("train.jit_compile", config.train.run_eagerly, "--run-eagerly traces no graph for XLA to compile",
         "leave out --run-eagerly"),
        ("train.ema_momentum", not config.train.ema, "no moving average is kept without --ema", "add --ema"),
    )
    for name, idle, why, fix in rules:
        if verb == "lr-find" and name in phase_rules:
            continue  # (lr-find is asked with the settings of the train run it prepares)
        value = given[name]
        if idle and value != defaults[name] and value != recipe.get(name, defaults[name]):
            flag = "--" + name.split(".")[1].replace("_", "-")
            raise ConfigError(f"{flag} changes nothing here: {why}. {fix[0].upper() + fix[1:]}, or leave out {flag}. "
                              f"Received: {name.split('.')[1]}={value!r}")


def check_export_settings(output_format: str, quantize: bool, int8: bool = False) -> None:
    """Raises ``ConfigError`` for an unknown format, ``quantize`` with a format other than TFLite,
    or ``int8`` with a format other than OpenVINO and TFLite, or with ``quantize``."""
    require_choice("format", output_format, EXPORT_FORMATS)
    if quantize and output_format != "tflite":
        raise ConfigError(f"--quantize applies to tflite only. Received: format={output_format!r}")
    if int8 and output_format not in ("openvino", "tflite"):
        raise ConfigError(f"--int8 applies to openvino and tflite. Received: format={output_format!r}")
    if int8 and quantize:
        raise ConfigError("--quantize (dynamic-range: 8-bit weights) and --int8 (8-bit weights and activations, "
                          "calibrated, gated on accuracy) are two kinds of quantisation: give one")
