"""Does ``--mixup`` on a cached head phase (manifold MixUp of the stored features) help? A fixed offline protocol.

The protocol, fixed before the runs (issue 26): benchmarks/ema.py's, unchanged: the ResNet-50 pretrained on
MNIST digits 0-4 (``--weights``: transfer_gain.py's WORKDIR/digits04.weights.h5), frozen and cut at conv4, a
linear head on average-pooled cached features, 30 epochs at Adam's 1e-3, batches of 64, on the first 500
training images of digits 5-9, tested on all 4,861 test images of digits 5-9; seeds 0, 1 and 2. Variants:
the baseline (ema.py's own runs, reused from its WORKDIR when there), ``--mixup 0.2`` and ``--mixup 0.4``.

Prints a Markdown table: test accuracy per seed and mean, and seconds per head epoch (metrics.json).

Usage:
    python benchmarks/mixup.py --weights /tmp/tg/digits04.weights.h5 --workdir /tmp/ema --cache-dir /tmp/tg/cache
"""

import os
import statistics

import _runs

VARIANTS = {"baseline": [], "mixup 0.2": ["--mixup", "0.2"], "mixup 0.4": ["--mixup", "0.4"]}
SEEDS = (0, 1, 2)
FLAGS = ["--backbone", "resnet50", "--classes", "5,6,7,8,9", "--limit", "500", "--feature-layer", "conv4",
         "--head", "linear", "--pooling", "avg", "--epochs", "30"]  # ema.py's


def main() -> None:
    arguments = _runs.parse(_runs.parser(__doc__.splitlines()[0]))
    print("| variant | seed 0 | seed 1 | seed 2 | mean | seconds per head epoch (mean) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, flags in VARIANTS.items():
        results = [_runs.metrics(_runs.train(os.path.join(arguments.workdir, f"{name.replace(' ', '-')}-seed{seed}"),
                                             ["--weights", arguments.weights, *FLAGS, "--seed", str(seed),
                                              "--cache-dir", arguments.cache_dir, *flags]))
                   for seed in SEEDS]
        accuracies = [result["test_accuracy"] for result in results]
        seconds = statistics.mean(result["seconds_per_epoch"] for result in results)
        print(f"| {name} | " + " | ".join(f"{accuracy:.2%}" for accuracy in accuracies)
              + f" | **{statistics.mean(accuracies):.2%}** | {seconds:.2f} |", flush=True)


if __name__ == "__main__":
    main()
