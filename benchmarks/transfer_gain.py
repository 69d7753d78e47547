"""When does transfer from a project-pretrained backbone help? Measured offline, with the project's commands.

1. ``resnet-transfer pretrain``: ResNet-50 from scratch on MNIST digits 0-4 (32 px).
2. ``resnet-transfer train`` on digits 5-9, from (a) that backbone and (b) a random
   backbone of the same architecture (``--weights none``, seed 0), in a low-data regime
   (the first ``--low-data`` training images, about 100 per class) and the full one, each:
   - frozen, cut at conv3, conv4 and conv5: a linear head (average pooling -> softmax)
     trained ``--head-epochs`` on cached features;
   - fine-tuned: that head, then every layer ``--fine-tune-epochs`` at 1e-4 (1 epoch in
     the full regime, the CPU budget), BatchNormalization in inference mode as always.
3. Prints the table of test accuracies (the 4,861 test images of digits 5-9) and the
   gains, and writes it to WORKDIR/transfer_gain.md and .json.

Every run is a normal run folder under WORKDIR; a run folder that finished is reused,
so an interrupted benchmark continues where it stopped.

Usage:
    python benchmarks/transfer_gain.py --workdir /tmp/transfer-gain
    python benchmarks/transfer_gain.py --workdir /tmp/transfer-gain --regimes low   # about 20 min less
"""

import argparse
import json
import os
import subprocess
import sys
import time

SOURCE_CLASSES, TARGET_CLASSES = "0,1,2,3,4", "5,6,7,8,9"
SETTINGS = ("conv3", "conv4", "conv5", "fine-tuned")


def run_command(arguments: list, log_path: str) -> float:
    """Runs ``resnet-transfer ARGUMENTS``; returns its wall seconds. Stops the benchmark on failure."""
    started = time.perf_counter()
    with open(log_path, "w") as log:
        status = subprocess.call([sys.executable, "-m", "resnet_transfer.cli", *arguments], stdout=log, stderr=log)
    if status != 0:
        sys.exit(f"'resnet-transfer {' '.join(arguments)}' failed with status {status}; see {log_path}")
    return time.perf_counter() - started


def finished(run_dir: str) -> bool:
    try:
        with open(os.path.join(run_dir, "status.json")) as handle:
            return json.load(handle)["state"] == "finished"
    except (OSError, ValueError, KeyError):
        return False


def pretrain(arguments) -> str:
    weights = os.path.join(arguments.workdir, "digits04.weights.h5")
    if os.path.exists(weights):
        print(f"pretrained backbone: {weights} (reused)", flush=True)
        return weights
    command = ["pretrain", "--backbone", "resnet50", "--data", "mnist", "--classes", SOURCE_CLASSES,
               "--limit", str(arguments.pretrain_limit), "--epochs", str(arguments.pretrain_epochs),
               "--out", weights, "--run-dir", os.path.join(arguments.workdir, "pretrain")]
    print("resnet-transfer " + " ".join(command), flush=True)
    seconds = run_command(command, os.path.join(arguments.workdir, "pretrain.log"))
    print(f"pretrained in {seconds:.0f} s", flush=True)
    return weights


def target_command(arguments, weights: str, regime: str, setting: str, run_dir: str) -> list:
    command = ["train", "--backbone", "resnet50", "--weights", weights, "--data", "mnist", "--classes", TARGET_CLASSES,
               "--head", "linear", "--pooling", "avg", "--epochs", str(arguments.head_epochs),
               "--cache-dir", arguments.cache_dir, "--run-dir", run_dir]
    if regime == "low":
        command += ["--limit", str(arguments.low_data)]
    if setting == "fine-tuned":
        epochs = arguments.fine_tune_epochs if regime == "low" else arguments.full_fine_tune_epochs
        command += ["--fine-tune-epochs", str(epochs), "--unfreeze", "all", "--fine-tune-lr", str(arguments.fine_tune_lr)]
    else:
        command += ["--feature-layer", setting]
    return command


def measure(arguments, backbones: dict) -> dict:
    results = {}
    for regime in arguments.regimes:
        for setting in SETTINGS:
            for name, weights in backbones.items():
                run_dir = os.path.join(arguments.workdir, f"{regime}-{name}-{setting}")
                if not finished(run_dir):
                    command = target_command(arguments, weights, regime, setting, run_dir)
                    print("resnet-transfer " + " ".join(command), flush=True)
                    run_command(command, run_dir + ".log")
                with open(os.path.join(run_dir, "metrics.json")) as handle:
                    metrics = json.load(handle)
                results[f"{regime}/{name}/{setting}"] = {
                    "test_accuracy": metrics["test_accuracy"], "n_train": metrics["n_train"],
                    "train_seconds": metrics["train_seconds"], "backbone_seconds": metrics["backbone_seconds"],
                }
                print(f"  {regime:<4} {name:<10} {setting:<10} test accuracy {metrics['test_accuracy']:.4f} "
                      f"({metrics['n_train']} training images)", flush=True)
    return results


def table(results: dict, regimes: list) -> str:
    lines = []
    for regime in regimes:
        n_train = results[f"{regime}/pretrained/conv5"]["n_train"]
        lines += [f"\n{regime} regime ({n_train} training images of digits 5-9):\n",
                  "| backbone | conv3 cut | conv4 cut | conv5 cut | fine-tuned |", "| --- | --- | --- | --- | --- |"]
        for name in ("random", "pretrained"):
            cells = [f"{100 * results[f'{regime}/{name}/{setting}']['test_accuracy']:.1f} %" for setting in SETTINGS]
            lines.append(f"| {name if name == 'random' else 'pretrained on 0-4'} | " + " | ".join(cells) + " |")
        gains = [100 * (results[f"{regime}/pretrained/{s}"]["test_accuracy"] - results[f"{regime}/random/{s}"]["test_accuracy"])
                 for s in SETTINGS]
        lines.append("| gain (points) | " + " | ".join(f"{gain:+.1f}" for gain in gains) + " |")
        best = {name: max(results[f"{regime}/{name}/{s}"]["test_accuracy"] for s in SETTINGS) for name in ("random", "pretrained")}
        lines.append(f"\nbest pretrained setting minus best random setting: {100 * (best['pretrained'] - best['random']):+.1f} points")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="where the weights, run folders and results go")
    parser.add_argument("--cache-dir", help="feature cache (default WORKDIR/cache)")
    parser.add_argument("--pretrain-limit", type=int, default=24000, help="training images of digits 0-4 (default: 24000)")
    parser.add_argument("--pretrain-epochs", type=int, default=1, help="(default: 1; 24,000 images x 1 epoch is about "
                        "15 minutes on the 2-core machine)")
    parser.add_argument("--low-data", type=int, default=500, help="training images in the low-data regime (default: 500)")
    parser.add_argument("--head-epochs", type=int, default=30, help="linear head epochs on cached features (default: 30)")
    parser.add_argument("--fine-tune-epochs", type=int, default=8, help="low-data regime (default: 8)")
    parser.add_argument("--full-fine-tune-epochs", type=int, default=1, help="full regime (default: 1)")
    parser.add_argument("--fine-tune-lr", type=float, default=1e-4)
    parser.add_argument("--regimes", default="low,full", help="low, full or both (default: low,full)")
    arguments = parser.parse_args()
    arguments.regimes = [regime.strip() for regime in arguments.regimes.split(",")]
    if not set(arguments.regimes) <= {"low", "full"}:
        parser.error(f"--regimes takes low and/or full, got {arguments.regimes}")
    os.makedirs(arguments.workdir, exist_ok=True)
    arguments.cache_dir = arguments.cache_dir or os.path.join(arguments.workdir, "cache")

    started = time.perf_counter()
    backbones = {"pretrained": pretrain(arguments), "random": "none"}
    results = measure(arguments, backbones)
    text = table(results, arguments.regimes)
    print(text)
    print(f"total {time.perf_counter() - started:.0f} s")
    with open(os.path.join(arguments.workdir, "transfer_gain.md"), "w") as handle:
        handle.write(text)
    with open(os.path.join(arguments.workdir, "transfer_gain.json"), "w") as handle:
        json.dump({"results": results, "settings": vars(arguments)}, handle, indent=2)


if __name__ == "__main__":
    main()
