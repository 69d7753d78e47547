"""When does transfer from a project-pretrained backbone help? Measured offline, with the project's commands.

The protocol, fixed before the runs (issue 23):

A. The README path of issue 23, exactly as the issue followed it (the README's example then):
   1. ``resnet-transfer pretrain --backbone resnet50 --classes 0,1,2,3,4 --limit 5000 --epochs 1``
      (pretrain's defaults otherwise: a linear head on average pooling, Adam 1e-3, batches of 64;
      its BatchNormalization statistics are recomputed at the end, PreciseBN);
   2. ``resnet-transfer train --backbone resnet50 --weights W --classes 5,6,7,8,9 --limit 500
      --epochs 3 --fine-tune-epochs 3 --unfreeze all --fine-tune-lr 1e-4`` (the seed head) with W
      that file and ``none`` (a random ResNet-50, seed 0).

B. The transfer table:
   1. ``resnet-transfer pretrain``: ResNet-50 from scratch on ``--pretrain-limit`` MNIST digits 0-4
      (32 px), ``--pretrain-epochs`` epochs;
   2. ``resnet-transfer train`` on digits 5-9 from four backbones: that pretrained one and a random one
      (``--weights none``, seed 0), each as is and with ``--bn-recalibrate`` (AdaBN on the target's
      training images), in the low-data regime (the first ``--low-data`` training images, about 100 per
      class) and, if asked, the full one:
      - frozen, cut at conv3, conv4 and conv5: a linear head (average pooling -> softmax) trained
        ``--head-epochs`` on cached features;
      - fine-tuned: that head, then every layer ``--fine-tune-epochs`` at 1e-4 (1 epoch in the full
        regime, the CPU budget), BatchNormalization in inference mode as always;
      - fine-tuned with ``--train-bn`` (BatchNormalization's scale and offset train too), for the two
        backbones without AdaBN.

C. ``--bn-recalibrate`` on the seed recipe's settings: ``resnet-transfer train --weights none --limit 10000
   --epochs 10`` (ResNet-152, the seed head, MNIST at 32 px, all 10,000 test images) with and without it.
   ImageNet weights, the recipe's own, cannot be had offline: this says what AdaBN does to a random ResNet-152's
   features for the seed head, not what it does to ImageNet's.

Prints, and writes to WORKDIR/transfer_gain.md and .json: each pretraining's validation accuracy in
training and inference mode before and after PreciseBN (from its sidecar), and the test accuracies
(the 4,861 MNIST test images of digits 5-9) with the gains of pretraining.

Every run is a normal run folder under WORKDIR; a run folder that finished is reused, so an interrupted
benchmark continues where it stopped.

Usage:
    python benchmarks/transfer_gain.py --workdir /tmp/transfer-gain
    python benchmarks/transfer_gain.py --workdir /tmp/transfer-gain --parts readme   # part A only
    python benchmarks/transfer_gain.py --workdir /tmp/transfer-gain --parts seed     # part C only
"""

import argparse
import json
import os
import subprocess
import sys
import time

SOURCE_CLASSES, TARGET_CLASSES = "0,1,2,3,4", "5,6,7,8,9"
SETTINGS = ("conv3", "conv4", "conv5", "fine-tuned", "fine-tuned+train-bn")
BACKBONES = ("random", "random+adabn", "pretrained", "pretrained+adabn")


def run_command(arguments: list, log_path: str) -> float:
    """Runs ``resnet-transfer ARGUMENTS``; returns its wall seconds. Stops the benchmark on failure."""
    print("resnet-transfer " + " ".join(arguments), flush=True)
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


def pretrain(arguments, name: str, limit: int, epochs: int) -> str:
    """The pretrained weights file ``name`` (reused when there)."""
    weights = os.path.join(arguments.workdir, f"{name}.weights.h5")
    if os.path.exists(weights):
        print(f"pretrained backbone: {weights} (reused)", flush=True)
        return weights
    command = ["pretrain", "--backbone", "resnet50", "--data", "mnist", "--classes", SOURCE_CLASSES,
               "--limit", str(limit), "--epochs", str(epochs), "--out", weights,
               "--run-dir", os.path.join(arguments.workdir, f"{name}-run")]
    seconds = run_command(command, os.path.join(arguments.workdir, f"{name}.log"))
    print(f"pretrained in {seconds:.0f} s", flush=True)
    return weights


def modes(weights: str) -> dict:
    """The sidecar's record of PreciseBN: validation accuracy in both modes, before and after."""
    with open(weights[: -len(".h5")] + ".json") as handle:
        return json.load(handle)["bn_recalibration"]


def measured(run_dir: str, command: list) -> dict:
    if not finished(run_dir):
        run_command(command, run_dir + ".log")
    with open(os.path.join(run_dir, "metrics.json")) as handle:
        metrics = json.load(handle)
    return {"test_accuracy": metrics["test_accuracy"], "n_train": metrics["n_train"],
            "train_seconds": metrics["train_seconds"], "backbone_seconds": metrics["backbone_seconds"]}


def readme_path(arguments) -> dict:
    """Part A: the README's pretrain -> train path, pretrained against random."""
    weights = pretrain(arguments, "readme-digits04", limit=5000, epochs=1)
    results = {"pretraining": modes(weights)}
    for name, source in (("pretrained", weights), ("random", "none")):
        run_dir = os.path.join(arguments.workdir, f"readme-{name}")
        command = ["train", "--backbone", "resnet50", "--weights", source, "--data", "mnist", "--classes",
                   TARGET_CLASSES, "--limit", "500", "--epochs", "3", "--fine-tune-epochs", "3", "--unfreeze", "all",
                   "--fine-tune-lr", "1e-4", "--cache-dir", arguments.cache_dir, "--run-dir", run_dir]
        results[name] = measured(run_dir, command)
        print(f"  readme path {name:<10} test accuracy {results[name]['test_accuracy']:.4f}", flush=True)
    return results


def seed_recipe(arguments) -> dict:
    """Part C: the seed recipe's settings on 10,000 images with a random ResNet-152, with and without AdaBN."""
    results = {}
    for name, extra in (("seed", []), ("seed+adabn", ["--bn-recalibrate"])):
        run_dir = os.path.join(arguments.workdir, f"recipe-{name}")
        command = ["train", "--weights", "none", "--limit", "10000", "--epochs", "10", "--cache-dir", arguments.cache_dir,
                   "--run-dir", run_dir, *extra]
        results[name] = measured(run_dir, command)
        print(f"  seed recipe {name:<11} test accuracy {results[name]['test_accuracy']:.4f}", flush=True)
    return results


def target_command(arguments, weights: str, regime: str, backbone: str, setting: str, run_dir: str) -> list:
    command = ["train", "--backbone", "resnet50", "--weights", weights, "--data", "mnist", "--classes", TARGET_CLASSES,
               "--head", "linear", "--pooling", "avg", "--epochs", str(arguments.head_epochs),
               "--cache-dir", arguments.cache_dir, "--run-dir", run_dir]
    if backbone.endswith("+adabn"):
        command.append("--bn-recalibrate")
    if regime == "low":
        command += ["--limit", str(arguments.low_data)]
    if setting.startswith("fine-tuned"):
        epochs = arguments.fine_tune_epochs if regime == "low" else arguments.full_fine_tune_epochs
        command += ["--fine-tune-epochs", str(epochs), "--unfreeze", "all", "--fine-tune-lr", str(arguments.fine_tune_lr)]
        if setting.endswith("+train-bn"):
            command.append("--train-bn")
    else:
        command += ["--feature-layer", setting]
    return command


def planned(backbone: str, setting: str) -> bool:
    return not (setting.endswith("+train-bn") and backbone.endswith("+adabn"))


def transfer_table(arguments) -> dict:
    """Part B: four backbones, five settings, one or two regimes."""
    weights = pretrain(arguments, "digits04", limit=arguments.pretrain_limit, epochs=arguments.pretrain_epochs)
    results = {"pretraining": modes(weights)}
    for regime in arguments.regimes:
        for setting in SETTINGS:
            for backbone in BACKBONES:
                if not planned(backbone, setting):
                    continue
                run_dir = os.path.join(arguments.workdir, f"{regime}-{backbone}-{setting}")
                source = weights if backbone.startswith("pretrained") else "none"
                results[f"{regime}/{backbone}/{setting}"] = measured(
                    run_dir, target_command(arguments, source, regime, backbone, setting, run_dir))
                print(f"  {regime:<4} {backbone:<16} {setting:<20} test accuracy "
                      f"{results[f'{regime}/{backbone}/{setting}']['test_accuracy']:.4f}", flush=True)
    return results


def _percent(value) -> str:
    return "not run" if value is None else f"{100 * value:.1f} %"


def _modes_line(name: str, record: dict) -> str:
    before, after = record["before"], record["after"]
    return (f"| {name} | {record['images']} | {_percent(before['training_mode'])} | {_percent(before['inference_mode'])} "
            f"| {_percent(after['training_mode'])} | {_percent(after['inference_mode'])} |")


def report(results: dict, regimes: list) -> str:
    lines = ["Pretraining on digits 0-4, validation accuracy by BatchNormalization mode (PreciseBN):\n",
             "| pretraining | PreciseBN images | training mode before | inference mode before | training mode after "
             "| inference mode after |", "| --- | --- | --- | --- | --- | --- |"]
    for part, name in (("readme", "README path (5,000 images, 1 epoch)"), ("table", "transfer table")):
        if part in results:
            lines.append(_modes_line(name, results[part]["pretraining"]))
    if "readme" in results:
        readme = results["readme"]
        gain = 100 * (readme["pretrained"]["test_accuracy"] - readme["random"]["test_accuracy"])
        lines += ["\nREADME path (seed head, 3 + 3 epochs, 500 images of 5-9):\n",
                  "| backbone | test accuracy |", "| --- | --- |",
                  f"| random | {_percent(readme['random']['test_accuracy'])} |",
                  f"| pretrained on 0-4 | {_percent(readme['pretrained']['test_accuracy'])} |",
                  f"| gain (points) | {gain:+.1f} |"]
    if "seed" in results:
        seed = results["seed"]
        lines += ["\nSeed recipe's settings, random ResNet-152, 10,000 training images, 10 epochs:\n",
                  "| backbone statistics | test accuracy |", "| --- | --- |",
                  f"| as built (--weights none) | {_percent(seed['seed']['test_accuracy'])} |",
                  f"| --bn-recalibrate | {_percent(seed['seed+adabn']['test_accuracy'])} |"]
    if "table" in results:
        table = results["table"]
        for regime in regimes:
            n_train = table[f"{regime}/pretrained/conv5"]["n_train"]
            lines += [f"\n{regime} regime ({n_train} training images of digits 5-9):\n",
                      "| backbone | " + " | ".join(SETTINGS) + " |", "| --- " * (len(SETTINGS) + 1) + "|"]
            accuracy = {(backbone, setting): table.get(f"{regime}/{backbone}/{setting}", {}).get("test_accuracy")
                        for backbone in BACKBONES for setting in SETTINGS}
            for backbone in BACKBONES:
                lines.append(f"| {backbone} | " + " | ".join(_percent(accuracy[backbone, s]) for s in SETTINGS) + " |")
            for pretrained, random in (("pretrained", "random"), ("pretrained+adabn", "random+adabn")):
                gains = [("" if None in (accuracy[pretrained, s], accuracy[random, s])
                          else f"{100 * (accuracy[pretrained, s] - accuracy[random, s]):+.1f}") for s in SETTINGS]
                lines.append(f"| gain {pretrained} - {random} (points) | " + " | ".join(gains) + " |")
            best = {kind: max(value for (backbone, _), value in accuracy.items()
                              if value is not None and backbone.startswith(kind)) for kind in ("random", "pretrained")}
            lines.append(f"\nbest pretrained setting minus best random setting (with or without AdaBN): "
                         f"{100 * (best['pretrained'] - best['random']):+.1f} points")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="where the weights, run folders and results go")
    parser.add_argument("--cache-dir", help="feature cache (default WORKDIR/cache)")
    parser.add_argument("--parts", default="readme,table,seed", help="readme (part A), table (part B), seed (part C)")
    parser.add_argument("--pretrain-limit", type=int, default=24000, help="part B: training images of digits 0-4 "
                        "(default: 24000)")
    parser.add_argument("--pretrain-epochs", type=int, default=1, help="part B (default: 1; 24,000 images x 1 epoch "
                        "is about 15 minutes on the 2-core machine)")
    parser.add_argument("--low-data", type=int, default=500, help="training images in the low-data regime (default: 500)")
    parser.add_argument("--head-epochs", type=int, default=30, help="linear head epochs on cached features (default: 30)")
    parser.add_argument("--fine-tune-epochs", type=int, default=8, help="low-data regime (default: 8)")
    parser.add_argument("--full-fine-tune-epochs", type=int, default=1, help="full regime (default: 1)")
    parser.add_argument("--fine-tune-lr", type=float, default=1e-4)
    parser.add_argument("--regimes", default="low", help="low and/or full (default: low)")
    arguments = parser.parse_args()
    arguments.regimes = [regime.strip() for regime in arguments.regimes.split(",")]
    parts = [part.strip() for part in arguments.parts.split(",")]
    if not set(arguments.regimes) <= {"low", "full"}:
        parser.error(f"--regimes takes low and/or full, got {arguments.regimes}")
    if not set(parts) <= {"readme", "table", "seed"}:
        parser.error(f"--parts takes readme, table and/or seed, got {parts}")
    os.makedirs(arguments.workdir, exist_ok=True)
    arguments.cache_dir = arguments.cache_dir or os.path.join(arguments.workdir, "cache")

    started = time.perf_counter()
    results = {}
    if "readme" in parts:
        results["readme"] = readme_path(arguments)
    if "table" in parts:
        results["table"] = transfer_table(arguments)
    if "seed" in parts:
        results["seed"] = seed_recipe(arguments)
    text = report(results, arguments.regimes)
    print(text)
    print(f"total {time.perf_counter() - started:.0f} s")
    with open(os.path.join(arguments.workdir, "transfer_gain.md"), "w") as handle:
        handle.write(text)
    with open(os.path.join(arguments.workdir, "transfer_gain.json"), "w") as handle:
        json.dump({"results": results, "settings": vars(arguments)}, handle, indent=2)


if __name__ == "__main__":
    main()
