"""Does ``--ema`` help? A fixed offline protocol, with the project's own commands.

The protocol, fixed before the runs (issue 26):

- backbone: a ResNet-50 pretrained by ``resnet-transfer pretrain`` on MNIST digits 0-4 (``--weights``:
  benchmarks/transfer_gain.py's part B writes one, WORKDIR/digits04.weights.h5: 24,000 images, 1 epoch);
- target: digits 5-9, low data: the first 500 training images (``--limit 500``), tested on all 4,861 test
  images of digits 5-9; frozen, cut at conv4 (the best cut of transfer_gain.py's table), a linear head on
  average-pooled cached features, 30 epochs at Adam's 1e-3, batches of 64;
- variants: the baseline (no average), ``--ema --ema-momentum 0.9`` and ``--ema --ema-momentum 0.99``;
- seeds 0, 1 and 2 for each (``--seed``: the head's initialisation and the batches' order; the split is the
  same), reported one by one and as their mean.

Prints a Markdown table: test accuracy per seed and mean, and seconds per head epoch (metrics.json).

Usage:
    python benchmarks/ema.py --weights /tmp/tg/digits04.weights.h5 --workdir /tmp/ema --cache-dir /tmp/tg/cache
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

VARIANTS = {"baseline": [], "ema 0.9": ["--ema", "--ema-momentum", "0.9"],
            "ema 0.99": ["--ema", "--ema-momentum", "0.99"]}
SEEDS = (0, 1, 2)


def run(arguments, name: str, flags: list, seed: int) -> dict:
    run_dir = os.path.join(arguments.workdir, f"{name.replace(' ', '-')}-seed{seed}")
    if not os.path.isfile(os.path.join(run_dir, "metrics.json")):
        command = [sys.executable, "-m", "resnet_transfer.cli", "--quiet", "train", "--backbone", "resnet50",
                   "--weights", arguments.weights, "--classes", "5,6,7,8,9", "--limit", "500",
                   "--feature-layer", "conv4", "--head", "linear", "--pooling", "avg", "--epochs", "30",
                   "--seed", str(seed), "--cache-dir", arguments.cache_dir, "--run-dir", run_dir, *flags]
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
    print("| variant | seed 0 | seed 1 | seed 2 | mean | seconds per head epoch (mean) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, flags in VARIANTS.items():
        results = [run(arguments, name, flags, seed) for seed in SEEDS]
        accuracies = [result["test_accuracy"] for result in results]
        seconds = statistics.mean(result["seconds_per_epoch"] for result in results)
        print(f"| {name} | " + " | ".join(f"{accuracy:.2%}" for accuracy in accuracies)
              + f" | **{statistics.mean(accuracies):.2%}** | {seconds:.2f} |", flush=True)


if __name__ == "__main__":
    main()
