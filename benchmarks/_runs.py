"""What the transfer benchmarks share: their common flags, a train run that is reused once finished, and
reading its figures. (Imported by the scripts in this folder: ``python benchmarks/NAME.py`` puts the folder
on the import path.)"""

import argparse
import csv
import json
import os
import subprocess
import sys


def parser(description: str) -> argparse.ArgumentParser:
    """--weights, --workdir and --cache-dir, as every transfer benchmark takes them."""
    arguments = argparse.ArgumentParser(description=description)
    arguments.add_argument("--weights", required=True, help="the pretrained ResNet-50 (digits 0-4)")
    arguments.add_argument("--workdir", required=True, help="where the run folders go (finished ones are reused)")
    arguments.add_argument("--cache-dir", help="feature cache (default WORKDIR/cache)")
    return arguments


def parse(arguments: argparse.ArgumentParser) -> argparse.Namespace:
    parsed = arguments.parse_args()
    parsed.cache_dir = parsed.cache_dir or os.path.join(parsed.workdir, "cache")
    os.makedirs(parsed.workdir, exist_ok=True)
    return parsed


def cli(*flags) -> None:
    subprocess.run([sys.executable, "-m", "resnet_transfer.cli", "--quiet", *flags], check=True,
                   stdout=subprocess.DEVNULL)


def train(run_dir: str, flags: list) -> str:
    """``train FLAGS --run-dir RUN_DIR``, unless a finished run is there already."""
    if not os.path.isfile(os.path.join(run_dir, "metrics.json")):
        cli("train", *flags, "--run-dir", run_dir)
    return run_dir


def metrics(run_dir: str) -> dict:
    with open(os.path.join(run_dir, "metrics.json")) as handle:
        return json.load(handle)


def last_validation(run_dir: str) -> float:
    """The last epoch's validation accuracy (history.csv)."""
    with open(os.path.join(run_dir, "history.csv")) as handle:
        return float(list(csv.DictReader(handle))[-1]["val_accuracy"])
