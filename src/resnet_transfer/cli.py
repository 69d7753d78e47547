"""The ``resnet-transfer`` command: parses arguments and calls the Python API.

``train``'s flags are built from the fields of the config dataclasses (name, type,
default, help), so each setting is declared once, in ``config``. Every problem a
user can cause ends as one line on stderr and exit status 2; ``--debug`` adds the
traceback of its cause.
"""

import argparse
import dataclasses
import errno
import json
import logging
import os
import shlex
import sys
import traceback
import typing
from typing import Optional

from resnet_transfer.config import (
    PHASES, DataConfig, ModelConfig, RunConfig, TrainConfig, check_export_settings, check_settings_take_effect,
    parse_shard, read_config_values,
)
from resnet_transfer.recipes import DEFAULT_PROBE_BACKBONES, DEFAULT_PROBE_LAYERS, DEFAULT_PROBE_LIMIT, PRETRAIN_SETTINGS, RECIPES
from resnet_transfer.errors import ResnetTransferError, RunInterrupted, RunKept, Terminated
from resnet_transfer.files import json_safe
from resnet_transfer.signals import quiet_startup
from resnet_transfer.verbosity import verbosity

__all__ = ["main", "build_parser"]

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


def _positive_float(text: str) -> float:
    return _finite_float(text, zero=False)


def _nonnegative_float(text: str) -> float:
    return _finite_float(text, zero=True)


# pretrain trains every layer end to end in one phase, BatchNormalization in training mode (its statistics are
# recomputed at the end): no recipe, cut, fine-tune phase, feature cache, AdaBN or --train-bn
PRETRAIN_SKIPS = ("recipe", "feature_layer", "fine_tune_epochs", "unfreeze", "fine_tune_lr", "augment_phase",
                  "feature_cache", "cache_dir", "cache_dtype", "extract_runtime", "bn_recalibrate", "train_bn")


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
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train_parsers(commands)

    _add_probe_parser(commands)

    evaluate = commands.add_parser("evaluate", help="re-compute the test metrics of a run from its saved model",
                                   allow_abbrev=False)
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--allow-changed-data", action="store_true",
                          help="evaluate even if the data changed since the run trained")
    evaluate.add_argument("--output", metavar="DIR", help="write the report files into DIR instead of the run folder")

    predict = commands.add_parser("predict", help="top-k classes of image files, folders or globs", allow_abbrev=False)
    predict.add_argument("run_dir", metavar="RUN_DIR")
    predict.add_argument("inputs", nargs="+", metavar="PATH")
    predict.add_argument("--top-k", type=int, default=3, help="classes per image (default: 3)")
    predict.add_argument("--format", default="table", choices=("table", "jsonl", "csv"), help="output format (default: table)")

    export = commands.add_parser("export", help="write a deployable SavedModel, TFLite or ONNX model, checked against Keras",
                                 allow_abbrev=False)
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--format", required=True, choices=("savedmodel", "tflite", "onnx"))
    export.add_argument("--quantize", action="store_true", help="dynamic-range quantisation (tflite only)")
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
    values = _merged(base or {}, read_config_values(arguments.config) if "config" in arguments else {})
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


def _merged(under: dict, over: dict) -> dict:
    """``over`` laid on ``under``, section by section (a damaged section is left for ``from_dict`` to name)."""
    merged = {**under, **over}
    for key in under.keys() & over.keys():
        if isinstance(under[key], dict) and isinstance(over[key], dict):
            merged[key] = {**under[key], **over[key]}
    return merged


# Each command checks its settings (``run_config_from``) before it imports what imports TensorFlow (seconds): a
# refused flag answers at once.


def _command_train(arguments: argparse.Namespace) -> int:
    config = run_config_from(arguments, ignore=("resume",))
    if not getattr(arguments, "resume", False):  # (a resumed run keeps the settings it recorded)
        check_settings_take_effect(config)
    from resnet_transfer.training.train import train

    result = train(config, resume=getattr(arguments, "resume", False))
    run_dir = result.run_dir if os.path.isdir(result.run_dir) else None  # a worker of a cluster: the chief keeps the run
    print(json.dumps(json_safe({"run_dir": run_dir, **{k: result.metrics[k] for k in ("test_loss", "test_accuracy")}})))
    return 0


def _command_extract(arguments: argparse.Namespace) -> int:
    config = run_config_from(arguments, ignore=("shard",))
    check_settings_take_effect(config)
    from resnet_transfer.training.extraction import extract

    statuses = extract(config, shard=getattr(arguments, "shard", None))
    print(json.dumps(statuses))
    return 0


def _command_lr_find(arguments: argparse.Namespace) -> int:
    config = run_config_from(arguments, ignore=("phase", "start_lr", "end_lr", "steps"))
    check_settings_take_effect(config, verb="lr-find", fine_tuning=arguments.phase == "fine-tune")
    from resnet_transfer.training.lr_find import find_learning_rate

    sweep = find_learning_rate(config, phase=arguments.phase, start_lr=arguments.start_lr, end_lr=arguments.end_lr,
                               steps=arguments.steps, run_dir=config.run_dir)
    print(f"suggested learning rate: {sweep.suggestion:.2g} ({sweep.reason})")
    print(f"plot: {sweep.run_dir}/lr_find.png")
    return 0


def _command_reproduce(arguments: argparse.Namespace) -> int:
    config = run_config_from(arguments)
    check_settings_take_effect(config)
    from resnet_transfer.reproduction import format_reproduction, reproduce

    sys.stdout.write(format_reproduction(reproduce(arguments.recipe, config)))
    return 0


def _command_pretrain(arguments: argparse.Namespace) -> int:
    config = run_config_from(arguments, ignore=("out",), base=PRETRAIN_SETTINGS)
    check_settings_take_effect(config, verb="pretrain")
    from resnet_transfer.training.pretrain import pretrain

    result = pretrain(config, out=arguments.out)
    kept = os.path.isdir(result.run_dir)  # a worker of a cluster: the chief keeps the run and the weights
    print(json.dumps(json_safe({"weights": result.weights_file if kept else None, "run_dir": result.run_dir if kept else None,
                                "test_accuracy": result.metrics["test_accuracy"]})))
    return 0


def _command_probe(arguments: argparse.Namespace) -> int:
    own = ("probe_backbones", "probe_layers", "probe_weights")
    base = {"data": {"limit": DEFAULT_PROBE_LIMIT}, "model": {"backbone": arguments.probe_backbones[0]}}
    config = run_config_from(arguments, ignore=own, base=base)
    check_settings_take_effect(config)
    from resnet_transfer.probing import format_probe, probe
    from resnet_transfer.runs import default_run_dir

    result = probe(config, backbones=arguments.probe_backbones, feature_layers=arguments.probe_layers,
                   weights=arguments.probe_weights, run_dir=config.run_dir or default_run_dir("probe"))
    sys.stdout.write(format_probe(result))
    return 0


def _command_evaluate(arguments: argparse.Namespace) -> int:
    from resnet_transfer.evaluation import evaluate_run

    print(json.dumps(json_safe(evaluate_run(arguments.run_dir, allow_changed_data=arguments.allow_changed_data,
                                            output_dir=arguments.output))))
    return 0


def _command_predict(arguments: argparse.Namespace) -> int:
    from resnet_transfer.prediction import format_predictions, predict

    results = predict(arguments.run_dir, arguments.inputs, top_k=arguments.top_k)
    if not any("error" not in result for result in results):
        from resnet_transfer.errors import DataError

        found = (f"{len(results)} file(s), none readable as an image (for example {results[0]['path']!r}: "
                 f"{results[0]['error']})" if results else "no files there")
        raise DataError(f"no images found in {', '.join(map(repr, arguments.inputs))}: {found}; give image files "
                        "(PNG, JPEG, ...) or folders holding them")
    sys.stdout.write(format_predictions(results, arguments.format))
    return 0


def _command_export(arguments: argparse.Namespace) -> int:
    check_export_settings(arguments.format, arguments.quantize)
    from resnet_transfer.export import export_run

    result = export_run(arguments.run_dir, arguments.format, quantize=arguments.quantize, output_dir=arguments.output,
                        allow_changed_data=arguments.allow_changed_data)
    print(json.dumps(result))
    return 0


def _command_cache(arguments: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from resnet_transfer.errors import ConfigError
    from resnet_transfer.training.cache_admin import default_cache_dir, discard, list_entries, prune, verify_entry

    if arguments.action != "prune" and (arguments.older_than is not None or arguments.max_size is not None):
        raise ConfigError(f"--older-than and --max-size go with 'cache prune', not 'cache {arguments.action}'")
    if arguments.cache_dir is not None and not arguments.cache_dir.strip():
        raise ConfigError("--cache-dir must name a folder; leave it out for the default cache. Received: --cache-dir ''")
    directory = arguments.cache_dir or default_cache_dir()
    size = lambda count: f"{count / 1e6:,.1f} MB"  # noqa: E731
    if arguments.action in ("prune", "verify") and not os.path.isdir(directory):
        if arguments.cache_dir is not None:  # most likely a typo: 'nothing removed' would hide it
            raise ConfigError(f"--cache-dir {directory!r} is no folder, so there is no cache to {arguments.action} "
                              "there; give the --cache-dir your runs used ('cache list --cache-dir DIR' shows a cache)")
        print(f"no feature cache at {directory} yet: nothing to {arguments.action}")
        return 0
    if arguments.action == "prune":
        removed = prune(directory, older_than_days=arguments.older_than,
                        max_bytes=None if arguments.max_size is None else int(arguments.max_size * 1e9))
        for entry in removed:
            print(f"removed {entry.state} {os.path.basename(entry.path)} ({size(entry.size)})")
        left = list_entries(directory)
        print(f"{len(removed)} removed, {size(sum(entry.size for entry in removed))} freed; {len(left)} left, "
              f"{size(sum(entry.size for entry in left))} in {directory}")
        return 0
    entries = list_entries(directory)
    if arguments.action == "verify":
        damaged = 0
        for entry in entries:
            if entry.state in ("partial", "chunks", "discarded"):
                print(f"{'skip':<4} {os.path.basename(entry.path)}: {entry.state} (cache prune removes what killed runs left)")
                continue
            problem = verify_entry(entry) if entry.state == "complete" else "no readable entry.json"
            if problem:
                damaged += 1
                discard(entry)
                problem += "; discarded (a run recomputes it)"
            print(f"{'ok' if not problem else 'bad':<4} {os.path.basename(entry.path)}{': ' + problem if problem else ''}")
        print(f"{len(entries)} folders in {directory}: {damaged} damaged entries discarded")
        return 0
    print(f"{len(entries)} folders, {size(sum(entry.size for entry in entries))} in {directory}"
          + ("" if os.path.isdir(directory) else " (no such folder: is --cache-dir right?)"))
    if entries:
        print(f"{'state':<10}{'size':>12}  {'last used (UTC)':<17} {'backbone':<12}{'weights':<26}{'layer':<7}"
              f"{'pooling':<9}{'runtime':<10}{'shape':<16}entry")
    for entry in entries:
        key = entry.key or {}
        used = datetime.fromtimestamp(entry.last_used, timezone.utc).strftime("%Y-%m-%d %H:%M")
        print(f"{entry.state:<10}{size(entry.size):>12}  {used:<17} {str(key.get('backbone', '-')):<12}"
              f"{str(key.get('weights', '-'))[:24]:<26}{str(key.get('feature_layer', '-')):<7}"
              f"{str(key.get('pooling', '-')):<9}{str(key.get('runtime', key.get('converted_for', '-'))):<10}"
              f"{_entry_contents(entry):<16}"
              f"{os.path.basename(entry.path)}")
    return 0


def _entry_contents(entry) -> str:
    """What a cache entry holds, for ``cache list``: the features' shape, or a converted backbone."""
    if entry.key and entry.key.get("converted_for"):
        return "converted model"
    return "x".join(map(str, entry.shape or [])) or "-"


def _command_info(arguments: argparse.Namespace) -> int:
    from resnet_transfer.info import collect_info, format_info

    info = collect_info()
    print(json.dumps(info, indent=2) if arguments.json else format_info(info))
    return 0


def _command_weights(arguments: argparse.Namespace) -> int:
    from resnet_transfer.registry import get_backbone_spec
    from resnet_transfer.model.weights import fetch_weights, import_weights

    if arguments.weights_command == "import":
        print(f"imported: {import_weights(arguments.file, arguments.backbone)}")
        return 0
    for name in arguments.backbones:
        get_backbone_spec(name)
    for name in arguments.backbones:
        print(f"cached: {fetch_weights(name)}")
    return 0


_COMMANDS = {
    "train": _command_train,
    "lr-find": _command_lr_find,
    "extract": _command_extract,
    "reproduce": _command_reproduce,
    "pretrain": _command_pretrain,
    "probe": _command_probe,
    "evaluate": _command_evaluate,
    "predict": _command_predict,
    "export": _command_export,
    "info": _command_info,
    "cache": _command_cache,
    "weights": _command_weights,
}


def _fail(message: str, *, debug: bool, status: int = EXIT_USAGE) -> int:
    if debug:
        traceback.print_exc()
    elif sys.exc_info()[1] is not None and sys.exc_info()[1].__cause__ is not None:
        message += " (--debug shows the cause)"
    print(f"resnet-transfer: error: {message}", file=sys.stderr)
    return status


def resume_command(argv: list, run_dir: str) -> str:
    """The command line that goes on with the run of ``argv`` in ``run_dir``."""
    arguments = [str(argument) for argument in argv if argument != "--resume"]
    if not any(argument == "--run-dir" or argument.startswith("--run-dir=") for argument in arguments):
        arguments += ["--run-dir", run_dir]
    return shlex.join(["resnet-transfer", *arguments, "--resume"])


def _lost_worker(error: BaseException) -> bool:
    """Whether ``error`` is TensorFlow's word that another worker of the cluster is gone."""
    return bool(os.environ.get("TF_CONFIG")) and type(error).__module__.startswith("tensorflow") and type(
        error).__name__ in ("UnavailableError", "AbortedError", "CancelledError", "DeadlineExceededError",
                            "InternalError", "UnknownError")  # ("Collective ops is aborted by: ...")


def _disk_problem(error: OSError) -> str:
    """What went wrong with a file, and what to do about it, by its errno."""
    where = f" ({error.filename})" if error.filename else ""
    if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        advice = "free some space there or choose a folder on another disk"
    elif error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        advice = "choose a folder you can write to (or make this one writable)"
    else:
        advice = "check that path"
    return f"{error.strerror or error}{where}: {advice}"


def main(argv: Optional[list] = None) -> int:
    """Runs the command line; returns the exit status (2 for a problem the user can fix)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    arguments, unknown = parser.parse_known_args(argv)
    if unknown:  # (argparse would point to the top-level help, which does not list a command's flags)
        command = " ".join(filter(None, (arguments.command, getattr(arguments, "weights_command", None))))
        parser.exit(EXIT_USAGE, f"resnet-transfer: error: unrecognized arguments: {' '.join(unknown)} (see "
                                f"'resnet-transfer {command} --help')\n")
    logging.basicConfig(level=logging.WARNING, format="resnet-transfer: %(message)s", stream=sys.stderr)
    try:
        with verbosity(arguments.verbosity):
            return _COMMANDS[arguments.command](arguments)
    except ResnetTransferError as error:
        return _fail(str(error), debug=arguments.debug, status=error.exit_status)
    except RunInterrupted as error:
        if not os.path.isdir(error.run_dir):  # a worker of a cluster, whose files are gone: the chief keeps the run
            return _fail(f"interrupted ({error.signal_name}); this worker's temporary files are removed, the chief keeps "
                         "the run",
                         debug=arguments.debug)
        then = (f"go on with {resume_command(argv, error.run_dir)}" if arguments.command == "train"
                else f"its folder is {error.run_dir}")
        if arguments.command == "train" and os.environ.get("TF_CONFIG"):
            then += " (on one machine: unset TF_CONFIG first; --resume does not run on a cluster yet)"
        return _fail(f"interrupted ({error.signal_name}) after {error.epochs_done} finished epochs; the run is kept: "
                     f"{then}", debug=arguments.debug)
    except KeyboardInterrupt as error:
        name = "SIGTERM" if isinstance(error, Terminated) else "Ctrl-C"
        return _fail(f"interrupted ({name}); nothing of an unfinished run is left that blocks running it again",
                     debug=arguments.debug)
    except RunKept as kept:  # a full or read-only disk after a finished epoch
        return _fail(f"{_disk_problem(kept.cause)}; the run is kept after {kept.epochs_done} finished epochs: then go on "
                     f"with {resume_command(argv, kept.run_dir)}", debug=arguments.debug)
    except OSError as error:  # a full or read-only disk, a file removed under us
        return _fail(f"{_disk_problem(error)}, then run the command again", debug=arguments.debug)
    except Exception as error:
        if not _lost_worker(error):
            raise
        return _fail(f"a worker of the cluster of TF_CONFIG stopped or cannot be reached (TensorFlow's "
                     f"{type(error).__name__}); the chief's run folder keeps any finished epochs. Start every worker "
                     "again, or go on without the cluster: unset TF_CONFIG and add --resume", debug=arguments.debug)


def _entry_point() -> None:
    quiet_startup()
    sys.exit(main())


if __name__ == "__main__":
    _entry_point()
