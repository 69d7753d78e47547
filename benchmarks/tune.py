"""Does ``tune`` with a 10-minute budget beat the default head? A fixed offline protocol on two data sets.

The protocol, fixed before the runs (issue 26):

- data set A: MNIST digits 5-9, the first 2,000 training images (``--classes 5,6,7,8,9 --limit 2000``; the
  default validation split), on the ResNet-50 pretrained on digits 0-4 (``--weights``: transfer_gain.py's
  WORKDIR/digits04.weights.h5), cut at conv4, average-pooled (ema.py's setting);
- data set B: synthetic shapes (``resnet_transfer.samples.write_shapes``, 600 images of each of 3 classes,
  seed 0, its .npz), on a random ResNet-50 (``--weights none``) at 32 px;
- the default head: ``train`` with only the data flags above (the seed head, Adam at 1e-3, 40 epochs);
- tuned: ``tune --max-minutes 10 --trials 500 --epochs 40`` (Hyperband) with the same flags, then
  ``train --config best_config.json``;
- one run each, seed 0. Reported: the final validation accuracy of each train run (history.csv), its test
  accuracy, and the search's trials and best trial's validation accuracy (selected on that split, so biased up).

Prints a Markdown table.

Usage:
    python benchmarks/tune.py --weights /tmp/tg/digits04.weights.h5 --workdir /tmp/tunebench --cache-dir /tmp/tg/cache
"""

import csv
import os

import _runs
from resnet_transfer.samples import write_shapes


def _train(run_dir: str, flags: list) -> dict:
    _runs.train(run_dir, flags)
    return {"val": _runs.last_validation(run_dir), "test": _runs.metrics(run_dir)["test_accuracy"]}


def main() -> None:
    arguments = _runs.parse(_runs.parser(__doc__.splitlines()[0]))
    cache = arguments.cache_dir
    shapes = os.path.join(arguments.workdir, "shapes")
    if not os.path.isfile(os.path.join(shapes, "shapes.npz")):
        write_shapes(shapes, per_class=(600, 600, 600), seed=0)
    data_sets = {
        "A: MNIST 5-9, 2,000 images, pretrained ResNet-50 at conv4": [
            "--weights", arguments.weights, "--backbone", "resnet50", "--classes", "5,6,7,8,9", "--limit", "2000",
            "--feature-layer", "conv4", "--pooling", "avg"],
        "B: shapes, 1,440 training images, random ResNet-50": [
            "--data", os.path.join(shapes, "shapes.npz"), "--weights", "none", "--backbone", "resnet50"],
    }
    print("| data set | default head: validation | default head: test | tune: trials, best trial's validation "
          "| tuned head: validation | tuned head: test |")
    print("| --- | --- | --- | --- | --- | --- |")
    for index, (name, flags) in enumerate(data_sets.items()):
        flags = [*flags, "--cache-dir", cache]
        default = _train(os.path.join(arguments.workdir, f"default-{index}"), flags)
        search = os.path.join(arguments.workdir, f"tune-{index}")
        if not os.path.isfile(os.path.join(search, "best_config.json")):
            _runs.cli("tune", *flags, "--max-minutes", "10", "--trials", "500", "--epochs", "40", "--run-dir", search)
        with open(os.path.join(search, "tune.csv")) as handle:
            trials = [row for row in csv.DictReader(handle) if row["status"] == "COMPLETED"]
        best = max(float(row["val_accuracy"]) for row in trials)
        tuned = _train(os.path.join(arguments.workdir, f"tuned-{index}"),
                       ["--config", os.path.join(search, "best_config.json")])
        print(f"| {name} | {default['val']:.2%} | {default['test']:.2%} | {len(trials)}, {best:.2%} | "
              f"**{tuned['val']:.2%}** | {tuned['test']:.2%} |", flush=True)


if __name__ == "__main__":
    main()
