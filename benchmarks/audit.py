"""Does the audit find known faults? MNIST with faults planted at random (seeded), audited from its cached
features by ``resnet-transfer audit --data``:

- 5 % of the 60,000 training labels changed to another class, drawn at random (3,000 images);
- 50 training images (whose labels were not changed) copied into the test split;
- 30 images of no digit added to the training split with random labels: 10 of uniform noise, 10 of stripes,
  10 of grey rectangles.

Printed: precision and recall of the label issues flagged (any split, against the changed labels), the share
of the copies found as leakage, the share of the added images among the flagged outliers and among the 30
most certain, and the audit's own seconds (audit.json: reduction, classifier, cleanlab, neighbours, t-SNE;
the backbone's pass is cached by the first audit and not counted), with a second audit timed from the cache.
Targets (issue 27): precision and recall >= 0.6, leakage >= 90 %, half the outliers in the top flagged,
under 2 minutes for 60,000 cached images.

    python benchmarks/audit.py --workdir /tmp/bench/audit [--backbone resnet50 --weights none]
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import time

import numpy as np

from resnet_transfer.data.mnist import load_mnist

FLIPPED_SHARE, COPIES, ADDED = 0.05, 50, 30


def planted(folder: str, seed: int = 0) -> tuple:
    """Writes faulty.npz and truth.json into ``folder`` (once); returns their paths."""
    data, truth_path = os.path.join(folder, "faulty.npz"), os.path.join(folder, "truth.json")
    if os.path.isfile(data) and os.path.isfile(truth_path):
        return data, truth_path
    rng = np.random.default_rng(seed)
    (x_train, y_train), (x_test, y_test), _ = load_mnist()
    y_given = y_train.copy()
    flipped = np.sort(rng.choice(len(y_train), size=int(FLIPPED_SHARE * len(y_train)), replace=False))
    y_given[flipped] = (y_train[flipped] + rng.integers(1, 10, size=len(flipped))) % 10
    copies = np.sort(rng.choice(np.setdiff1d(np.arange(len(y_train)), flipped), size=COPIES, replace=False))
    added = np.concatenate([rng.integers(0, 256, size=(10, 28, 28)),  # uniform noise
                            np.tile((np.arange(28) // rng.integers(2, 5, size=(10, 1, 1)) % 2) * 255, (1, 28, 1)),
                            np.full((10, 28, 28), 128)]).astype(np.uint8)
    for index in range(20, 30):  # grey rectangles
        top, left = rng.integers(0, 20, size=2)
        added[index, top: top + 8, left: left + 8] = 255
    x = np.concatenate([x_train, added])
    y = np.concatenate([y_given, rng.integers(0, 10, size=ADDED)])
    xt = np.concatenate([x_test, x_train[copies]])
    yt = np.concatenate([y_test, y_given[copies]])
    np.savez(data, x_train=x, y_train=y, x_test=xt, y_test=yt)
    with open(truth_path, "w") as handle:
        json.dump({"flipped": [f"x_train[{index}]" for index in flipped],
                   "copies": [[f"x_test[{len(x_test) + place}]", f"x_train[{index}]"] for place, index in enumerate(copies)],
                   "added": [f"x_train[{len(x_train) + place}]" for place in range(ADDED)]}, handle)
    return data, truth_path


def audit(data: str, folder: str, flags: list) -> float:
    """``resnet-transfer audit --data DATA`` into ``folder`` (once); returns its wall-clock seconds."""
    started = time.perf_counter()
    if not os.path.isfile(os.path.join(folder, "audit.json")):
        subprocess.run([sys.executable, "-m", "resnet_transfer.cli", "--quiet", "audit", "--data", data,
                        "--val-size", "2000", "--run-dir", folder, *flags], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--workdir", required=True)
    arguments.add_argument("--backbone", default="resnet50")
    arguments.add_argument("--weights", default="none")
    parsed = arguments.parse_args()
    os.makedirs(parsed.workdir, exist_ok=True)
    data, truth_path = planted(parsed.workdir)
    flags = ["--backbone", parsed.backbone, "--weights", parsed.weights, "--cache-dir",
             os.path.join(parsed.workdir, "cache")]
    audit(data, os.path.join(parsed.workdir, "first"), flags)  # (computes the features into the cache)
    second = os.path.join(parsed.workdir, "second")
    wall = audit(data, second, flags)
    with open(truth_path) as handle:
        truth = json.load(handle)
    with open(os.path.join(second, "audit.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(os.path.join(second, "audit.json")) as handle:
        summary = json.load(handle)
    flipped, added = set(truth["flipped"]), set(truth["added"])
    issues = {row["path"] for row in rows if row["kind"] == "label_issue"}
    leaks = {frozenset((row["path"], row["partner_path"])) for row in rows if row["kind"] in ("leakage", "duplicate")}
    outliers = [row["path"] for row in rows if row["kind"] == "outlier"]
    found = len(issues & flipped)
    print(f"backbone {parsed.backbone}, weights {parsed.weights}; images {summary['images']}; "
          f"out-of-sample accuracy {summary['out_of_sample_accuracy']}")
    print(f"label issues: {len(issues)} flagged, {found} of the {len(flipped)} changed labels: precision "
          f"{found / max(1, len(issues)):.3f}, recall {found / len(flipped):.3f}")
    copies = sum(frozenset(pair) in leaks for pair in truth["copies"])
    print(f"leakage: {copies} of {len(truth['copies'])} copies found ({copies / len(truth['copies']):.0%}); "
          f"{summary['counts']['leakage']} leakage and {summary['counts']['duplicate']} duplicate rows in all")
    print(f"outliers: {len(outliers)} flagged, {len(added & set(outliers))} of the {len(added)} added images among "
          f"them; {len(added & set(outliers[:len(added)]))} among the {len(added)} most certain")
    print(f"audit seconds (audit.json, backbone cached): {sum(summary['seconds'].values()):.1f} "
          f"{summary['seconds']}; wall-clock of the whole command from the cache: {wall:.1f} s")


if __name__ == "__main__":
    main()
