"""Does temperature scaling calibrate a head that overfits? The seed head (Dense 1000 -> softmax) trained for
40 epochs on 1,000 MNIST images (it fits them perfectly and grows overconfident), on a ResNet-50 with random
weights (no ImageNet weights offline), seeds 0, 1 and 2; the temperature is fitted on MNIST's last 2,000
training images (the validation split) and measured on the 10,000 test images. Each run is
``train --calibrate temperature``: metrics.json records ECE (15 bins) and NLL before and after.

Target (issue 27): test ECE after scaling at most half of the ECE before.

    python benchmarks/calibration.py --workdir /tmp/bench/calibration
"""

import argparse
import os

from _runs import metrics, train

SEEDS = (0, 1, 2)


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--workdir", required=True)
    parsed = arguments.parse_args()
    cache = os.path.join(parsed.workdir, "cache")
    print("| seed | temperature | val ECE before | val ECE after | test ECE before | test ECE after | test NLL before "
          "| test NLL after | test accuracy |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for seed in SEEDS:
        run = train(os.path.join(parsed.workdir, f"seed{seed}"),
                    ["--backbone", "resnet50", "--weights", "none", "--limit", "1000", "--epochs", "40", "--seed",
                     str(seed), "--cache-dir", cache])
        figures = metrics(run)
        record = figures["calibration"]
        val, test = record["val"], record["test"]
        print(f"| {seed} | {record['temperature']:.3f} | {val['ece_before']:.4f} | {val['ece_after']:.4f} | "
              f"{test['ece_before']:.4f} | {test['ece_after']:.4f} | {test['nll_before']:.4f} | {test['nll_after']:.4f} "
              f"| {figures['test_accuracy']:.4f} |")


if __name__ == "__main__":
    main()
