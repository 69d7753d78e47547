"""The ``resnet-transfer`` command: parses arguments and calls the Python API.

Every problem a user can fix ends as one line on stderr and exit status 2.
"""

import argparse
import json
import logging
import os
import sys
from typing import Optional

__all__ = ["main", "build_parser"]

EXIT_USAGE = 2

# flag destination -> (config section or None for top level, config field)
_TRAIN_FLAGS = {
    "data": ("data", "source"),
    "data_dir": ("data", "data_dir"),
    "limit": ("data", "limit"),
    "val_size": ("data", "val_size"),
    "test_limit": ("data", "test_limit"),
    "test_size": ("data", "test_size"),
    "image_size": ("data", "image_size"),
    "resize": ("data", "resize"),
    "path_column": ("data", "path_column"),
    "label_column": ("data", "label_column"),
    "strict": ("data", "strict"),
    "class_weight": ("train", "class_weight"),
    "backbone": ("model", "backbone"),
    "weights": ("model", "weights"),
    "preprocess": ("model", "preprocess"),
    "head_units": ("model", "head_units"),
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "learning_rate": ("train", "learning_rate"),
    "seed": ("train", "seed"),
    "feature_cache": ("train", "feature_cache"),
    "cache_dir": ("train", "cache_dir"),
    "cache_dtype": ("train", "cache_dtype"),
    "steps_per_execution": ("train", "steps_per_execution"),
    "run_dir": (None, "run_dir"),
    "tensorboard": (None, "tensorboard"),
}


def _count_or_fraction(text: str):
    """'500' -> 500, '0.2' -> 0.2 (validated by the config)."""
    try:
        return float(text) if any(mark in text for mark in ".eE") else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count (e.g. 500) or a fraction (e.g. 0.2), got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand (flags default to "not given")."""
    parser = argparse.ArgumentParser(
        prog="resnet-transfer",
        allow_abbrev=False,
        description="Transfer learning with ImageNet-pretrained Keras ResNets. "
        "'resnet-transfer train' with no flags runs the seed recipe (ResNet152, MNIST 32x32x3, 40 epochs).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a head on a frozen backbone and write a run directory",
                                argument_default=argparse.SUPPRESS, allow_abbrev=False)
    train.add_argument("--config", help="JSON config file (flags override it)")
    train.add_argument("--data", help="mnist (default), fashion_mnist, cifar10, cifar100, a folder of class folders, "
                       "a .csv or a .npz file")
    train.add_argument("--data-dir", help="folder with mnist.npz or the four MNIST IDX .gz files")
    train.add_argument("--backbone", help="resnet50, resnet101, resnet152 (default), resnet50v2, resnet101v2, resnet152v2")
    train.add_argument("--weights", help="imagenet (default), none, or the path of a weights file")
    train.add_argument("--preprocess", help="seed (scale to [0,1], default) or imagenet (the backbone's preprocess_input)")
    train.add_argument("--head-units", type=int, help="width of the head's hidden layer (default 1000)")
    train.add_argument("--epochs", type=int, help="default 40")
    train.add_argument("--batch-size", type=int, help="default 64")
    train.add_argument("--learning-rate", type=float, help="Adam learning rate (default 0.001)")
    train.add_argument("--val-size", type=_count_or_fraction,
                       help="validation images, a count or a fraction (MNIST: the last 2000; others: stratified 0.2)")
    train.add_argument("--test-size", type=_count_or_fraction, help="test share for data without test images (default 0.2)")
    train.add_argument("--image-size", type=int, help="square input side (default 32 for 28x28 images, else 224)")
    train.add_argument("--resize", help="pad, stretch or crop (default pad for 28x28 -> 32, else stretch)")
    train.add_argument("--path-column", help="CSV column with image paths (default path)")
    train.add_argument("--label-column", help="CSV column with labels (default label)")
    train.add_argument("--class-weight", help="balanced: weight the loss by inverse class frequency")
    train.add_argument("--strict", action="store_const", const=True, help="stop on any unreadable or unusable input")
    train.add_argument("--limit", type=int, help="train on the first N training images only")
    train.add_argument("--test-limit", type=int, help="evaluate on the first N test images only")
    train.add_argument("--seed", type=int, help="random seed (default 0)")
    train.add_argument("--no-cache", dest="feature_cache", action="store_const", const="off",
                       help="run the backbone in every epoch (the article's way) instead of once")
    train.add_argument("--cache-dir", help="feature cache folder (default ~/.cache/resnet-transfer/features)")
    train.add_argument("--cache-dtype", help="float32 (default) or float16 for stored features")
    train.add_argument("--steps-per-execution", type=int, help="optimizer steps per compiled call (default 8)")
    train.add_argument("--run-dir", help="output folder (default runs/<UTC timestamp>-<backbone>); never overwritten")
    train.add_argument("--tensorboard", action="store_const", const=True, help="also write TensorBoard logs")

    evaluate = commands.add_parser("evaluate", help="re-compute the test metrics of a run from its saved model")
    evaluate.add_argument("run_dir", metavar="RUN_DIR")

    predict = commands.add_parser("predict", help="top-k classes of image files, folders or globs", allow_abbrev=False)
    predict.add_argument("run_dir", metavar="RUN_DIR")
    predict.add_argument("inputs", nargs="+", metavar="PATH")
    predict.add_argument("--top-k", type=int, default=3)
    predict.add_argument("--format", default="table", help="table (default), jsonl or csv")

    export = commands.add_parser("export", help="write a deployable SavedModel, TFLite or ONNX model, checked against Keras",
                                 allow_abbrev=False)
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--format", required=True, help="savedmodel, tflite or onnx")
    export.add_argument("--quantize", action="store_true", help="dynamic-range quantisation (tflite only)")
    export.add_argument("--output", help="output folder (default RUN_DIR/export/FORMAT)")

    commands.add_parser("info", help="versions, devices, cached weights, where MNIST would load from")

    weights = commands.add_parser("weights", help="manage ImageNet weights in Keras's cache")
    weights_commands = weights.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    import_parser = weights_commands.add_parser("import", help="verify a carried-in weights file and cache it")
    import_parser.add_argument("file", metavar="FILE")
    import_parser.add_argument("--backbone", required=True)
    fetch_parser = weights_commands.add_parser("fetch", help="download weights ahead of time (needs network)")
    fetch_parser.add_argument("backbones", nargs="+", metavar="NAME")
    return parser


def _run_config(arguments: argparse.Namespace):
    from resnet_transfer.config import RunConfig, load_config_file

    base = load_config_file(arguments.config) if "config" in arguments else RunConfig()
    overrides = {}
    for flag, (section, name) in _TRAIN_FLAGS.items():
        if flag in arguments:
            target = overrides.setdefault(section, {}) if section else overrides
            target[name] = getattr(arguments, flag)
    return base.updated(overrides)


def _command_train(arguments: argparse.Namespace) -> int:
    from resnet_transfer.training import train

    result = train(_run_config(arguments))
    print(json.dumps({"run_dir": result.run_dir, **{k: result.metrics[k] for k in ("test_loss", "test_accuracy")}}))
    return 0


def _command_evaluate(arguments: argparse.Namespace) -> int:
    from resnet_transfer.evaluation import evaluate_run

    print(json.dumps(evaluate_run(arguments.run_dir)))
    return 0


def _command_predict(arguments: argparse.Namespace) -> int:
    from resnet_transfer.prediction import PREDICT_FORMATS, format_predictions, predict

    if arguments.format not in PREDICT_FORMATS:
        from resnet_transfer.errors import ConfigError

        raise ConfigError(f"format must be one of: {', '.join(PREDICT_FORMATS)}. Received: format={arguments.format!r}")
    results = predict(arguments.run_dir, arguments.inputs, top_k=arguments.top_k)
    sys.stdout.write(format_predictions(results, arguments.format))
    return 0


def _command_export(arguments: argparse.Namespace) -> int:
    from resnet_transfer.export import export_run

    print(json.dumps(export_run(arguments.run_dir, arguments.format, quantize=arguments.quantize, output_dir=arguments.output)))
    return 0


def _command_info(arguments: argparse.Namespace) -> int:
    from resnet_transfer.info import collect_info

    print(json.dumps(collect_info(), indent=2))
    return 0


def _command_weights(arguments: argparse.Namespace) -> int:
    from resnet_transfer.backbones import fetch_weights, get_backbone_spec, import_weights

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
    "evaluate": _command_evaluate,
    "predict": _command_predict,
    "export": _command_export,
    "info": _command_info,
    "weights": _command_weights,
}


def main(argv: Optional[list] = None) -> int:
    """Runs the command line; returns the exit status (2 for a problem the user can fix)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    arguments = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="resnet-transfer: %(message)s", stream=sys.stderr)
    from resnet_transfer.errors import ResnetTransferError

    try:
        return _COMMANDS[arguments.command](arguments)
    except ResnetTransferError as error:
        print(f"resnet-transfer: error: {error}", file=sys.stderr)
        return error.exit_status


def _entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    _entry_point()
