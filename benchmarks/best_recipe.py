"""Does ``--recipe best`` beat ``--recipe seed``? A fixed offline protocol of a transfer from a pretrained backbone.

The protocol, fixed before the runs (issue 26): the ResNet-50 pretrained by ``resnet-transfer pretrain`` on
MNIST digits 0-4 (``--weights``: transfer_gain.py's WORKDIR/digits04.weights.h5), transferred to digits 5-9 in
the low-data regime: the first 500 training images (``--classes 5,6,7,8,9 --limit 500``), tested on all 4,861
test images of digits 5-9; seeds 0, 1 and 2. Each recipe runs as it is, with three overrides that this
backbone needs (ImageNet weights cannot be downloaded here): ``--backbone resnet50 --weights FILE
--preprocess seed`` (the backbone's own, from its sidecar; ``best`` asks for ImageNet's preprocessing, which
is right for ImageNet weights only). Reported: test accuracy per seed and mean, the validation accuracy of the
last epoch (what a user sees before testing) and minutes per run.

Prints a Markdown table.

Usage:
    python benchmarks/best_recipe.py --weights /tmp/tg/digits04.weights.h5 --workdir /tmp/best --cache-dir /tmp/tg/cache
"""

import os
import statistics
import time

import _runs

SEEDS = (0, 1, 2)


def run(arguments, recipe: str, seed: int) -> dict:
    run_dir = os.path.join(arguments.workdir, f"{recipe}-seed{seed}")
    timing = run_dir + ".seconds"
    if not os.path.isfile(os.path.join(run_dir, "metrics.json")):
        started = time.perf_counter()
        _runs.train(run_dir, ["--recipe", recipe, "--backbone", "resnet50", "--weights", arguments.weights,
                              "--preprocess", "seed", "--classes", "5,6,7,8,9", "--limit", "500", "--seed", str(seed),
                              "--cache-dir", arguments.cache_dir])
        with open(timing, "w") as handle:
            handle.write(str(time.perf_counter() - started))
    with open(timing) as handle:
        seconds = float(handle.read())
    return {"test": _runs.metrics(run_dir)["test_accuracy"], "val": _runs.last_validation(run_dir), "seconds": seconds}


def main() -> None:
    arguments = _runs.parse(_runs.parser(__doc__.splitlines()[0]))
    print("| recipe | seed 0 | seed 1 | seed 2 | mean test accuracy | mean validation accuracy | minutes per run |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    means = {}
    for recipe in ("seed", "best"):
        results = [run(arguments, recipe, seed) for seed in SEEDS]
        means[recipe] = statistics.mean(result["test"] for result in results)
        print(f"| `{recipe}` | " + " | ".join(f"{result['test']:.2%}" for result in results)
              + f" | **{means[recipe]:.2%}** | {statistics.mean(r['val'] for r in results):.2%} | "
              f"{statistics.mean(r['seconds'] for r in results) / 60:.1f} |", flush=True)
    print(f"\nbest - seed: {100 * (means['best'] - means['seed']):+.2f} points")


if __name__ == "__main__":
    main()
