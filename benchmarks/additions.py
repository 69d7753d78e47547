"""Each of issue 26's additions alone and together, on one fixed offline protocol of a fine-tuned transfer.

The protocol, fixed before the runs: benchmarks/interpolation.py's fine-tuned setting with the backbone
pretrained on digits 0-4 (``--weights``: transfer_gain.py's WORKDIR/digits04.weights.h5), on digits 5-9 in the
low-data regime (the first 500 training images; tested on all 4,861 test images of digits 5-9): ResNet-50, a
linear head on average-pooled features for 30 epochs at 1e-3 (cached), then every layer for 8 epochs at 1e-4,
BatchNormalization in inference mode; seeds 0, 1 and 2.

Variants (each alone; values fixed before the runs, from the head-only benchmarks where there was one):

- baseline: none of them (the runs of interpolation.py, ``--baseline-dir``: the fine-tuned model's own test
  accuracy, which trains exactly as a run without ``--interpolate``);
- ``--ema --ema-momentum 0.9`` (ema.py's better momentum);
- ``--mixup 0.2`` (the head phase mixes the stored features, the fine-tune phase the images);
- ``--cutmix 1.0`` (the fine-tune phase's images);
- ``--lr-decay 0.5`` (layer_decay.py's runs, ``--decay-dir``);
- ``--interpolate auto`` (interpolation.py's runs);
- ``evaluate --tta`` of the baseline runs;
- together: all of the above in one run, evaluated with ``--tta``.

Prints a Markdown table: test accuracy per seed and mean, the gain over the baseline's mean, and the seconds of
the two training phases per run (metrics.json; TTA: the evaluation's seconds).

Usage:
    python benchmarks/additions.py --weights /tmp/tg/digits04.weights.h5 --workdir /tmp/additions --cache-dir /tmp/tg/cache --baseline-dir /tmp/wise --decay-dir /tmp/decay
"""

import json
import os
import statistics
import subprocess
import sys
import time

import _runs

SEEDS = (0, 1, 2)
FINE_TUNED = ["--backbone", "resnet50", "--classes", "5,6,7,8,9", "--limit", "500", "--head", "linear", "--pooling", "avg",
              "--epochs", "30", "--fine-tune-epochs", "8", "--fine-tune-lr", "1e-4"]  # interpolation.py's
TOGETHER = ["--ema", "--ema-momentum", "0.9", "--mixup", "0.2", "--cutmix", "1.0", "--lr-decay", "0.5",
            "--interpolate", "auto"]
VARIANTS = {"ema 0.9": ["--ema", "--ema-momentum", "0.9"], "mixup 0.2": ["--mixup", "0.2"],
            "cutmix 1.0": ["--cutmix", "1.0"], "together": TOGETHER}
_metrics = _runs.metrics


def train(arguments, name: str, flags: list, seed: int) -> str:
    return _runs.train(os.path.join(arguments.workdir, f"{name.replace(' ', '-')}-seed{seed}"),
                       ["--weights", arguments.weights, *FINE_TUNED, "--seed", str(seed),
                        "--cache-dir", arguments.cache_dir, *flags])


def with_tta(arguments, run_dir: str) -> tuple:
    """(test accuracy with --tta, seconds), evaluated once into run_dir/../<name>-tta."""
    out = os.path.join(arguments.workdir, os.path.basename(run_dir) + "-tta")
    record = os.path.join(out, "tta.json")
    if not os.path.isfile(record):
        started = time.perf_counter()
        printed = subprocess.run([sys.executable, "-m", "resnet_transfer.cli", "--quiet", "evaluate", run_dir, "--tta",
                                  "--output", out], check=True, capture_output=True, text=True).stdout
        seconds = time.perf_counter() - started
        result = json.loads(printed.strip().splitlines()[-1])
        with open(record, "w") as handle:
            json.dump({"accuracy": result["tta"]["test_accuracy"], "seconds": seconds}, handle)
    with open(record) as handle:
        saved = json.load(handle)
    return saved["accuracy"], saved["seconds"]


def _seconds(metrics: dict) -> float:
    return sum(phase["train_seconds"] for phase in metrics["phases"])


def main() -> None:
    parser = _runs.parser(__doc__.splitlines()[0])
    parser.add_argument("--baseline-dir", required=True, help="interpolation.py's WORKDIR (its pretrained runs)")
    parser.add_argument("--decay-dir", required=True, help="layer_decay.py's WORKDIR")
    arguments = _runs.parse(parser)

    baseline = [os.path.join(arguments.baseline_dir, f"pretrained-seed{seed}") for seed in SEEDS]
    rows = {"baseline": [(m["interpolation"]["fine_tuned_test_accuracy"], _seconds(m))
                         for m in map(_metrics, baseline)]}
    for name, flags in VARIANTS.items():
        if name == "together":
            continue
        rows[name] = [(m["test_accuracy"], _seconds(m))
                      for m in (_metrics(train(arguments, name, flags, seed)) for seed in SEEDS)]
    rows["lr-decay 0.5"] = [(m["test_accuracy"], _seconds(m)) for m in
                            (_metrics(os.path.join(arguments.decay_dir, f"decay0.5-seed{seed}")) for seed in SEEDS)]
    rows["interpolate auto"] = [(m["test_accuracy"], _seconds(m)) for m in map(_metrics, baseline)]
    rows["evaluate --tta"] = [with_tta(arguments, run_dir) for run_dir in baseline]
    together = [train(arguments, "together", TOGETHER, seed) for seed in SEEDS]
    rows["together (without TTA)"] = [(m["test_accuracy"], _seconds(m)) for m in map(_metrics, together)]
    rows["together, evaluated with --tta"] = [with_tta(arguments, run_dir) for run_dir in together]

    reference = statistics.mean(accuracy for accuracy, _ in rows["baseline"])
    print("| variant | seed 0 | seed 1 | seed 2 | mean | gain (points) | seconds per run (mean) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, results in rows.items():
        accuracies = [accuracy for accuracy, _ in results]
        mean = statistics.mean(accuracies)
        print(f"| {name} | " + " | ".join(f"{accuracy:.2%}" for accuracy in accuracies)
              + f" | **{mean:.2%}** | {100 * (mean - reference):+.2f} | {statistics.mean(s for _, s in results):.0f} |")


if __name__ == "__main__":
    main()
