"""The command line's arguments: ``build_parser`` (every subcommand and its flags) and
``run_config_from`` (a ``RunConfig`` from the parsed flags).

``train``'s flags are built from the fields of the config dataclasses (name, type,
default, help: ``config.option``), so each setting is declared once, in ``config``.
Nothing here imports Keras or TensorFlow: a bad flag is refused at once.
"""

import argparse
import dataclasses
import typing
from typing import Optional

from resnet_transfer.config import (
    EXPORT_FORMATS, FEATURE_LAYERS, PHASES, PREDICT_FORMATS, TUNE_SEARCHERS, DataConfig, ModelConfig, RunConfig, TrainConfig, parse_shard,
    read_config_values,
)
from resnet_transfer.serving.command import add_serve_parser
from resnet_transfer.recipes import (
    DEFAULT_PROBE_BACKBONES, DEFAULT_PROBE_LAYERS, DEFAULT_PROBE_LIMIT, PRETRAIN_SETTINGS, RECIPES, merge_settings,
)

__all__ = ["EXIT_USAGE", "build_parser", "run_config_from"]

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse with the project's one-line errors (argparse prints the usage first)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"resnet-transfer: error: {message} (see '{self.prog} --help')\n")


def _flag_type(config_field: dataclasses.Field):
    """The parser of a field's flag: its metadata's ``parse``, else from its annotation."""
    if config_field.metadata.get("parse"):
        parse = config_field.metadata["parse"]

        def convert(text: str):
            try:
                return parse(text)
            except ValueError as error:
                raise argparse.ArgumentTypeError(str(error)) from error

        return convert
    annotation = config_field.type
    inner = [argument for argument in typing.get_args(annotation) if argument is not type(None)]  # Optional[X] -> X
    base = inner[0] if inner else annotation
    return base if base in (int, float) else str


def _add_config_flags(parser: argparse.ArgumentParser, config_class, section: Optional[str], skip: tuple = (),
                      defaults: Optional[dict] = None) -> None:
    for config_field in dataclasses.fields(config_class):
        if "help" not in config_field.metadata or config_field.name in skip:
            continue
        metadata = config_field.metadata
        flag = metadata.get("flag") or "--" + config_field.name.replace("_", "-")
        value = (defaults or {}).get(config_field.name, config_field.default)
        default = "" if value in (None, False) else f" (default: {value})"
        destination = f"{section}.{config_field.name}" if section else config_field.name
        if metadata.get("const") is not None:
            parser.add_argument(flag, dest=destination, action="store_const", const=metadata["const"], help=metadata["help"])
        else:
            parser.add_argument(flag, dest=destination, type=_flag_type(config_field), metavar=metadata.get("metavar"),
                                help=metadata["help"] + default)


def _add_config_parser(commands, name: str, help: str, skip: tuple = (), defaults: Optional[dict] = None
                       ) -> argparse.ArgumentParser:
    """A subcommand with every setting of ``RunConfig`` but ``skip`` as a flag (defaults: "not
    given"; ``defaults``: the command's own, nested as ``RunConfig.to_dict``, shown in the help)."""
    parser = commands.add_parser(name, help=help, argument_default=argparse.SUPPRESS, allow_abbrev=False)
    parser.add_argument("--config", help="JSON config file (flags override it)")
    for section, config_class in RunConfig.SECTIONS.items():
        _add_config_flags(parser, config_class, section, skip=skip, defaults=(defaults or {}).get(section))
    _add_config_flags(parser, RunConfig, None, skip=skip)
    return parser


def _finite_float(text: str, *, zero: bool) -> float:
    """A finite number above 0 (``zero``: or 0), for argparse."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not ((value >= 0 if zero else value > 0) and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number {'>=' if zero else '>'} 0, got {text!r}")
    return value


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    return _finite_float(text, zero=False)


def _nonnegative_float(text: str) -> float:
    return _finite_float(text, zero=True)


# pretrain trains every layer end to end in one phase, BatchNormalization in training mode (its statistics are
# recomputed at the end): no recipe, cut, fine-tune phase, feature cache, AdaBN or --train-bn
PRETRAIN_SKIPS = ("recipe", "feature_layer", "fine_tune_epochs", "unfreeze", "fine_tune_lr", "augment_phase",
                  "feature_cache", "cache_dir", "cache_dtype", "extract_runtime", "bn_recalibrate", "train_bn", "calibrate")


# audit computes features and trains no head of its own: only the data's, the backbone's and the cache's settings
AUDIT_SKIPS = ("head", "head_units", "dropout", "tensorboard", "recipe", *(
    name for name in ("epochs", "batch_size", "learning_rate", "steps_per_execution", "class_weight", "label_smoothing",
                      "weight_decay", "ema", "ema_momentum", "mixup", "cutmix", "lr_decay", "interpolate", "tta",
                      "calibrate", "fine_tune_epochs", "unfreeze", "fine_tune_lr", "augment", "augment_phase", "flip",
                      "train_bn", "jit_compile", "run_eagerly", "strategy")))


def _add_train_parsers(commands) -> None:
    train = _add_config_parser(commands, "train", "train a head (then fine-tune, if asked) and write a run directory")
    train.add_argument("--resume", action="store_true",
                       help="go on with the stopped run in --run-dir from its last finished epoch (same settings)")

    extract = _add_config_parser(commands, "extract", "compute a run's frozen-backbone features into the feature "
                                 "cache ahead of train, whole or one shard (for a job array)")
    extract.add_argument("--shard", type=_shard, metavar="I/N",
                         help="only shard I of N (0 <= I < N): every Nth chunk of 4,096 images from the Ith on")

    lr_find = _add_config_parser(commands, "lr-find", "sweep learning rates and suggest one (writes lr_find.png)")
    lr_find.add_argument("--phase", default="head", choices=PHASES,
                         help="head (on stored features) or fine-tune (the unfrozen model on images) (default: head)")
    lr_find.add_argument("--start-lr", type=_positive_float, default=1e-7, help="first learning rate (default: 1e-07)")
    lr_find.add_argument("--end-lr", type=_positive_float, default=1.0, help="last learning rate (default: 1.0)")
    lr_find.add_argument("--steps", type=int, default=100, help="optimizer steps in the sweep, at least 10 (default: 100)")

    tune = _add_config_parser(commands, "tune", "search the head's settings on cached features with KerasTuner "
                              "(writes tune.csv and best_config.json for 'train --config')")
    tune.add_argument("--trials", type=_at_least_one, default=30, help="the most trials (default: 30)")
    tune.add_argument("--max-minutes", type=_positive_float, default=None,
                      help="start no new trial after this many minutes (default: no limit)")
    tune.add_argument("--searcher", default="hyperband", choices=TUNE_SEARCHERS,
                      help="KerasTuner's Hyperband (also picks each trial's epochs, up to --epochs) or Bayesian "
                      "optimisation (default: hyperband)")
    tune.add_argument("--resume", action="store_true",
                      help="go on with the stopped search in --run-dir (same settings; --trials and --max-minutes "
                      "may change)")

    audit = _add_config_parser(commands, "audit", "find label issues, duplicates and leakage across splits, outliers "
                               "and overlapping classes from cached features (writes audit.html, audit.csv and "
                               "exclude.txt for 'train --exclude')", skip=AUDIT_SKIPS)
    audit.add_argument("audited_run", nargs="?", default=None, metavar="RUN_DIR",
                       help="a finished run: audit its data from its cached features, into its folder (else: the data "
                       "that train's flags name, into --run-dir)")
    audit.add_argument("--extract", action="store_true", default=False,
                       help="with RUN_DIR: run the backbone for features the cache lacks")
    audit.add_argument("--allow-changed-data", action="store_true", default=False,
                       help="with RUN_DIR: audit the data as it is now even if it changed since the run trained")

    reproduce = _add_config_parser(commands, "reproduce", "run a recipe and compare with the accuracy it is expected "
                                   "to reach", skip=("recipe",))
    reproduce.add_argument("recipe", choices=tuple(RECIPES), help="the recipe to run")

    pretrain = _add_config_parser(commands, "pretrain", "train a backbone on your own data and save its weights "
                                  "for 'train --weights FILE'", skip=PRETRAIN_SKIPS, defaults=PRETRAIN_SETTINGS)
    pretrain.add_argument("--out", required=True, metavar="FILE",
                          help="the new weights file, ending in .weights.h5 (a .weights.json sidecar goes beside it)")


def _shard(text: str) -> tuple:
    try:
        return parse_shard(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _names(text: str) -> tuple:
    names = tuple(part.strip() for part in text.split(","))
    if any(not name for name in names):
        raise argparse.ArgumentTypeError(f"expected names separated by commas, got {text!r}")
    return names


def _add_probe_parser(commands) -> None:
    probe = commands.add_parser("probe", help="rank backbones and cuts for your images with fast probes on frozen "
                                "features (minutes, before any training)", argument_default=argparse.SUPPRESS,
                                allow_abbrev=False)
    probe.add_argument("--config", help="JSON config file (flags override it)")
    _add_config_flags(probe, DataConfig, "data", defaults={"limit": f"{DEFAULT_PROBE_LIMIT}, at most: a seeded sample balanced across classes"})
    probe.add_argument("--backbone", dest="probe_backbones", type=_names, default=DEFAULT_PROBE_BACKBONES,
                       metavar="A,B,...", help=f"backbones to compare (default: {','.join(DEFAULT_PROBE_BACKBONES)})")
    probe.add_argument("--feature-layer", dest="probe_layers", type=_names, default=DEFAULT_PROBE_LAYERS,
                       metavar="conv2,...", help=f"cuts to compare (default: {','.join(DEFAULT_PROBE_LAYERS)})")
    probe.add_argument("--weights", dest="probe_weights", type=_names, default=("imagenet",), metavar="W[,W...]",
                       help="imagenet, none or a weights file: one for every backbone, or one per backbone "
                       "(default: imagenet)")
    _add_config_flags(probe, ModelConfig, "model", skip=("backbone", "weights", "feature_layer", "head", "head_units",
                                                         "dropout"))
    _add_config_flags(probe, TrainConfig, "train", skip=tuple(
        field.name for field in dataclasses.fields(TrainConfig) if field.name not in ("seed", "cache_dir", "cache_dtype")))
    probe.add_argument("--run-dir", dest="run_dir", help="output folder (runs/<UTC timestamp>-probe if not given)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand (train's flags default to "not given")."""
    parser = _Parser(
        prog="resnet-transfer",
        allow_abbrev=False,
        description="Transfer learning with ImageNet-pretrained Keras ResNets. "
        "'resnet-transfer train' with no flags runs the seed recipe (ResNet152, MNIST 32x32x3, 40 epochs).",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback behind an error message")
    _add_verbosity_flags(parser, default="normal")
    # (not required here: main names an unknown flag given without a command, where argparse names the command)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train_parsers(commands)

    _add_probe_parser(commands)

    evaluate = commands.add_parser("evaluate", help="re-compute the test metrics of a run from its saved model",
                                   allow_abbrev=False)
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--allow-changed-data", action="store_true",
                          help="evaluate even if the data changed since the run trained")
    evaluate.add_argument("--output", metavar="DIR", help="write the report files into DIR instead of the run folder")
    evaluate.add_argument("--tta", action="store_true", help="also the metrics of test-time augmentation: the mean "
                          "over the image and its 2-pixel shifts (and its mirror, where the run trained with --flip)")

    predict = commands.add_parser("predict", help="top-k classes of image files, folders or globs", allow_abbrev=False)
    predict.add_argument("run_dir", metavar="RUN_DIR")
    predict.add_argument("inputs", nargs="+", metavar="PATH")
    predict.add_argument("--top-k", type=int, default=None,
                         help="classes per image (default: 3, or every class of a run with fewer)")
    predict.add_argument("--format", default="table", choices=PREDICT_FORMATS, help="output format (default: table)")
    predict.add_argument("--tta", action="store_true", help="average over the image and its 2-pixel shifts (and its "
                         "mirror, where the run trained with --flip)")

    explain = commands.add_parser("explain", help="Grad-CAM: where in each image the run's model looked for its "
                                  "class (one PNG per image)", allow_abbrev=False)
    explain.add_argument("run_dir", metavar="RUN_DIR")
    explain.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files, folders or globs")
    explain.add_argument("--class", dest="class_name", metavar="NAME",
                         help="explain this class in every image (default: each image's predicted class)")
    explain.add_argument("--feature-layer", dest="layer", choices=FEATURE_LAYERS,
                         help="the backbone stage whose feature map is explained (default: the last one at least "
                         "4x4: conv5 at 224 px, conv3 for ResNet50 at 32 px)")
    explain.add_argument("--output", metavar="DIR", help="folder for the PNGs (default: RUN_DIR/explanations)")

    export = commands.add_parser("export", help="write a deployable SavedModel, TFLite or ONNX model, checked against Keras",
                                 allow_abbrev=False)
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    export.add_argument("--quantize", action="store_true", help="dynamic-range quantisation (tflite only)")
    export.add_argument("--int8", action="store_true",
                        help="INT8 post-training quantisation (openvino through NNCF, tflite full-integer), calibrated "
                        "on the run's training images and refused when it loses more than --max-accuracy-drop")
    export.add_argument("--calibration-images", type=_at_least_one, default=None,
                        help="with --int8: training images to calibrate on (default: 300)")
    export.add_argument("--max-accuracy-drop", type=_nonnegative_float, default=None, metavar="POINTS",
                        help="with --int8: the most top-1 accuracy on the run's test split the INT8 model may lose, "
                        "in points (default: 1.0)")
    export.add_argument("--output", help="output folder (default RUN_DIR/export/FORMAT)")
    export.add_argument("--allow-changed-data", action="store_true",
                        help="check the export on the run's data even if it changed since training")

    cache = commands.add_parser("cache", help="list, verify or prune the feature cache", allow_abbrev=False)
    cache.add_argument("action", choices=("list", "verify", "prune"),
                       help="list: entries with their key, size and last use; verify: re-check every checksum and "
                       "discard damaged entries; prune: remove what killed runs left, and with --older-than or "
                       "--max-size the least recently used entries")
    cache.add_argument("--cache-dir", help="the cache folder (default: $RESNET_TRANSFER_CACHE_DIR, else "
                       "~/.cache/resnet-transfer/features)")
    cache.add_argument("--older-than", type=_nonnegative_float, metavar="DAYS",
                       help="prune: also remove entries no run has used for DAYS days")
    cache.add_argument("--max-size", type=_nonnegative_float, metavar="GB",
                       help="prune: then remove the least recently used entries until the cache holds at most GB gigabytes")

    info = commands.add_parser("info", help="versions, devices, cached weights, where MNIST would load from",
                               allow_abbrev=False)
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")

    weights = commands.add_parser("weights", help="manage ImageNet weights in Keras's cache", allow_abbrev=False)
    weights_commands = weights.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    import_parser = weights_commands.add_parser("import", help="verify a carried-in weights file and cache it")
    import_parser.add_argument("file", metavar="FILE")
    import_parser.add_argument("--backbone", required=True)
    fetch_parser = weights_commands.add_parser("fetch", help="download weights ahead of time (needs network)")
    fetch_parser.add_argument("backbones", nargs="+", metavar="NAME")
    add_serve_parser(commands)
    for subparser in (*commands.choices.values(), *weights_commands.choices.values()):
        _add_verbosity_flags(subparser, default=argparse.SUPPRESS)  # (SUPPRESS: the top level's value stays)
    return parser


def _add_verbosity_flags(parser: argparse.ArgumentParser, *, default) -> None:
    """--verbose and --quiet, before or after the command (``verbosity`` says what each shows)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const="verbose", default=default,
                       help="also say how each decision was reached and which internal path runs")
    group.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const="quiet", default=default,
                       help="print only warnings, errors and the result (no progress bars)")


def run_config_from(arguments: argparse.Namespace, *, ignore: tuple = (), base: Optional[dict] = None) -> RunConfig:
    """Defaults < recipe < ``base`` (a command's own defaults) < ``--config`` file < flags
    (``ignore``: the command's own arguments)."""
    values = merge_settings(base or {}, read_config_values(arguments.config) if "config" in arguments else {})
    for destination, value in vars(arguments).items():
        if destination in ("command", "config", "debug", "verbosity") + tuple(ignore):
            continue
        section, _, name = destination.rpartition(".")
        if section:
            values.setdefault(section, {})
            if isinstance(values[section], dict):  # else from_dict names the damaged section
                values[section] = {**values[section], name: value}
        else:
            values[name] = value
    return RunConfig.from_dict(values)
