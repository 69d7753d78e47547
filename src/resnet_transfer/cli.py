"""The ``resnet-transfer`` command: parses arguments (``arguments``) and calls the Python
API. Every problem a user can cause ends as one line on stderr and exit status 2;
``--debug`` adds the traceback of its cause.
"""

import argparse
import errno
import json
import logging
import os
import shlex
import sys
import traceback
from typing import Optional

from resnet_transfer.arguments import EXIT_USAGE, build_parser, run_config_from
from resnet_transfer.config import check_export_settings, check_settings_take_effect
from resnet_transfer.errors import ResnetTransferError, RunInterrupted, RunKept, Terminated
from resnet_transfer.files import json_safe
from resnet_transfer.recipes import DEFAULT_PROBE_LIMIT, PRETRAIN_SETTINGS
from resnet_transfer.serving.command import command_serve
from resnet_transfer.signals import quiet_startup
from resnet_transfer.verbosity import verbosity

__all__ = ["main", "build_parser"]


def _command_train(arguments: argparse.Namespace) -> int:
    config = run_config_from(arguments, ignore=("resume",))
    if not getattr(arguments, "resume", False):  # (a resumed run keeps the settings it recorded)
        check_settings_take_effect(config)
    from resnet_transfer.training.train import train

    result = train(config, resume=getattr(arguments, "resume", False))
    run_dir = result.run_dir if os.path.isdir(result.run_dir) else None  # a worker of a cluster: the chief keeps the run
    printed = {"run_dir": run_dir, **{k: result.metrics[k] for k in ("test_loss", "test_accuracy")}}
    if "tta" in result.metrics:
        printed["tta_test_accuracy"] = result.metrics["tta"]["test_accuracy"]
    print(json.dumps(json_safe(printed)))
    return 0


def _command_tune(arguments: argparse.Namespace) -> int:
    config = run_config_from(arguments, ignore=("trials", "max_minutes", "searcher", "resume"))
    from resnet_transfer.training.tune import tune

    result = tune(config, trials=arguments.trials, max_minutes=arguments.max_minutes, searcher=arguments.searcher,
                  resume=getattr(arguments, "resume", False))
    print(json.dumps({"run_dir": result.run_dir, "best_val_accuracy": result.best_val_accuracy,
                      "trials": result.trials, "best_config": os.path.join(result.run_dir, "best_config.json")}))
    return 0


_AUDIT_OWN = ("audited_run", "extract", "allow_changed_data")


def _command_audit(arguments: argparse.Namespace) -> int:
    from resnet_transfer.errors import ConfigError

    given = sorted(name for name in vars(arguments) if name not in ("command", "debug", "verbosity") + _AUDIT_OWN)
    if arguments.audited_run is not None:
        if given:
            raise ConfigError(f"audit RUN_DIR audits the run's own data with its own settings; leave out "
                              f"{', '.join('--' + name.rpartition('.')[2].replace('_', '-') for name in given)} (or "
                              "audit other data without RUN_DIR)")
        from resnet_transfer.audit import audit_run

        summary = audit_run(arguments.audited_run, extract=arguments.extract,
                            allow_changed_data=arguments.allow_changed_data)
        folder = arguments.audited_run
    else:
        if arguments.extract or arguments.allow_changed_data:
            raise ConfigError("--extract and --allow-changed-data go with audit RUN_DIR; without it, audit computes the "
                              "features of the data it is given")
        config = run_config_from(arguments, ignore=_AUDIT_OWN)
        check_settings_take_effect(config)
        from resnet_transfer.audit import audit_data

        summary = audit_data(config)
        folder = summary["folder"]
    print(json.dumps({"audit": os.path.join(folder, "audit.html"), **summary["counts"],
                      "exclude_list": os.path.join(folder, "exclude.txt")}))
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
                                            output_dir=arguments.output, tta=arguments.tta))))
    return 0


def _command_predict(arguments: argparse.Namespace) -> int:
    from resnet_transfer.prediction import format_predictions, predict

    results = predict(arguments.run_dir, arguments.inputs, top_k=arguments.top_k, tta=arguments.tta)
    if not any("error" not in result for result in results):
        from resnet_transfer.errors import DataError

        found = (f"{len(results)} file(s), none readable as an image (for example {results[0]['path']!r}: "
                 f"{results[0]['error']})" if results else "no files there")
        raise DataError(f"no images found in {', '.join(map(repr, arguments.inputs))}: {found}; give image files "
                        "(PNG, JPEG, ...) or folders holding them")
    sys.stdout.write(format_predictions(results, arguments.format))
    return 0


def _command_explain(arguments: argparse.Namespace) -> int:
    from resnet_transfer.explanation import explain_run

    for row in explain_run(arguments.run_dir, arguments.inputs, class_name=arguments.class_name, layer=arguments.layer,
                           output_dir=arguments.output):
        if "error" in row:
            print(f"skipped {row['path']}: {row['error']}", file=sys.stderr)
        else:
            print(f"{row['explanation']}  {row['class']} {row['probability']:.3f} at {row['layer']}  ({row['path']})")
    return 0


def _command_export(arguments: argparse.Namespace) -> int:
    check_export_settings(arguments.format, arguments.quantize, arguments.int8)
    for flag, value in (("--calibration-images", arguments.calibration_images),
                        ("--max-accuracy-drop", arguments.max_accuracy_drop)):
        if value is not None and not arguments.int8:
            from resnet_transfer.errors import ConfigError

            raise ConfigError(f"{flag} goes with --int8 (the INT8 export's calibration and accuracy gate); add --int8 "
                              f"or leave out {flag}")
    from resnet_transfer.export import export_run
    from resnet_transfer.quantization import DEFAULT_CALIBRATION_IMAGES, DEFAULT_MAX_ACCURACY_DROP

    result = export_run(arguments.run_dir, arguments.format, quantize=arguments.quantize, output_dir=arguments.output,
                        allow_changed_data=arguments.allow_changed_data, int8=arguments.int8,
                        calibration_images=arguments.calibration_images or DEFAULT_CALIBRATION_IMAGES,
                        max_accuracy_drop=DEFAULT_MAX_ACCURACY_DROP if arguments.max_accuracy_drop is None
                        else arguments.max_accuracy_drop)
    print(json.dumps(result))
    return 0


def _command_cache(arguments: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from resnet_transfer.errors import ConfigError
    from resnet_transfer.cache.admin import discard, list_entries, prune, verify_entry
    from resnet_transfer.cache.folders import default_cache_dir

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
              f"{'pooling':<9}{'runtime':<15}{'shape':<16}entry")
    for entry in entries:
        key = entry.key or {}
        used = datetime.fromtimestamp(entry.last_used, timezone.utc).strftime("%Y-%m-%d %H:%M")
        print(f"{entry.state:<10}{size(entry.size):>12}  {used:<17} {str(key.get('backbone', '-')):<12}"
              f"{str(key.get('weights', '-'))[:24]:<26}{str(key.get('feature_layer', '-')):<7}"
              f"{str(key.get('pooling', '-')):<9}"
              f"{str(key.get('runtime', key.get('converted_for', '-'))).split(':')[0]:<15}"  # (INT8's calibration: no)
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
    "tune": _command_tune,
    "extract": _command_extract,
    "reproduce": _command_reproduce,
    "pretrain": _command_pretrain,
    "probe": _command_probe,
    "evaluate": _command_evaluate,
    "predict": _command_predict,
    "explain": _command_explain,
    "serve": command_serve,
    "audit": _command_audit,
    "export": _command_export,
    "info": _command_info,
    "cache": _command_cache,
    "weights": _command_weights,
}


# What a command stopped by Ctrl-C or SIGTERM leaves, where that is not "an unfinished run"
_LEFT_AFTER_INTERRUPT = {
    "explain": "the PNGs written so far are complete; run the command again for the rest",
    "audit": "an audit is written aside and moved in when complete, so the run folder keeps the earlier one; run "
             "the command again",
    "export": "an export is written aside and renamed when checked, so none was left; run the command again",
    "serve": "the server stopped",
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
    if arguments.command is None:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}" if unknown
                     else "the following arguments are required: COMMAND")
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
        then = (f"go on with {resume_command(argv, error.run_dir)}" if arguments.command in ("train", "tune")
                else f"its folder is {error.run_dir}")
        if arguments.command == "train" and os.environ.get("TF_CONFIG"):
            then += " (on one machine: unset TF_CONFIG first; --resume does not run on a cluster yet)"
        return _fail(f"interrupted ({error.signal_name}) after {error.epochs_done} finished {error.unit}; the run is kept: "
                     f"{then}", debug=arguments.debug)
    except KeyboardInterrupt as error:
        name = "SIGTERM" if isinstance(error, Terminated) else "Ctrl-C"
        left = _LEFT_AFTER_INTERRUPT.get(arguments.command, "nothing of an unfinished run is left that blocks running "
                                                                "it again")
        return _fail(f"interrupted ({name}); {left}", debug=arguments.debug)
    except RunKept as kept:  # a full or read-only disk after a finished epoch
        return _fail(f"{_disk_problem(kept.cause)}; the run is kept after {kept.epochs_done} finished {kept.unit}: then go on "
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
