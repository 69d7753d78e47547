"""Does ``--interpolate auto`` (WiSE-FT) help a fine-tuned run? A fixed offline protocol.

The protocol, fixed before the runs (issue 26): transfer_gain.py's part B fine-tuned setting, on digits 5-9
in the low-data regime (the first 500 training images; tested on all 4,861 test images of digits 5-9):
ResNet-50, a linear head on average-pooled features for 30 epochs at 1e-3 (cached), then every layer for 8
epochs at 1e-4, BatchNormalization in inference mode; with ``--interpolate auto``, which picks ``a`` from
0, 0.1, ..., 1 on the validation split. Two backbones: the ResNet-50 pretrained on digits 0-4
(``--weights``: transfer_gain.py's WORKDIR/digits04.weights.h5) and a random one (``--weights none``);
seeds 0, 1 and 2. Each run records the fine-tuned model's own test accuracy (a = 1, the baseline: exactly
the run without ``--interpolate``) beside the interpolated one's, so one run gives both.

Prints a Markdown table.

Usage:
    python benchmarks/interpolation.py --weights /tmp/tg/digits04.weights.h5 --workdir /tmp/wise --cache-dir /tmp/tg/cache
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

SEEDS = (0, 1, 2)


def run(arguments, backbone: str, seed: int) -> dict:
    run_dir = os.path.join(arguments.workdir, f"{backbone}-seed{seed}")
    if not os.path.isfile(os.path.join(run_dir, "metrics.json")):
        weights = arguments.weights if backbone == "pretrained" else "none"
        command = [sys.executable, "-m", "resnet_transfer.cli", "--quiet", "train", "--backbone", "resnet50",
                   "--weights", weights, "--classes", "5,6,7,8,9", "--limit", "500", "--head", "linear",
                   "--pooling", "avg", "--epochs", "30", "--fine-tune-epochs", "8", "--fine-tune-lr", "1e-4",
                   "--interpolate", "auto", "--seed", str(seed), "--cache-dir", arguments.cache_dir,
                   "--run-dir", run_dir]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(run_dir, "metrics.json")) as handle:
        return json.load(handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="the pretrained ResNet-50 (digits 0-4)")
    parser.add_argument("--workdir", required=True, help="where the run folders go (finished ones are reused)")
    parser.add_argument("--cache-dir", help="feature cache (default WORKDIR/cache)")
    arguments = parser.parse_args()
    arguments.cache_dir = arguments.cache_dir or os.path.join(arguments.workdir, "cache")
    os.makedirs(arguments.workdir, exist_ok=True)
    print("| backbone | seed | fine-tuned (a = 1) | interpolated | a picked | gain |")
    print("| --- | --- | --- | --- | --- | --- |")
    for backbone in ("pretrained", "random"):
        gains = []
        for seed in SEEDS:
            metrics = run(arguments, backbone, seed)
            record = metrics["interpolation"]
            plain, mixed = record["fine_tuned_test_accuracy"], metrics["test_accuracy"]
            gains.append(mixed - plain)
            print(f"| {backbone} | {seed} | {plain:.2%} | {mixed:.2%} | {record['alpha']:g} | "
                  f"{100 * (mixed - plain):+.2f} |", flush=True)
        print(f"| {backbone} | mean | | | | **{100 * statistics.mean(gains):+.2f}** |", flush=True)


if __name__ == "__main__":
    main()
