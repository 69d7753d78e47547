"""Does ``evaluate --tta`` help? Test accuracy of finished runs without and with test-time augmentation.

The protocol, fixed before the runs (issue 26): the nine run folders of benchmarks/ema.py (a frozen
pretrained ResNet-50 cut at conv4, a linear head on 500 training digits 5-9; three variants x seeds 0-2),
each evaluated on its 4,861 test images as it is and with ``--tta`` (the image and its four 2-pixel shifts,
edges repeated; no mirror, as digits are not mirror-safe and the runs did not train with ``--flip``).
``evaluate --output`` writes each report to a scratch folder, so the runs stay as they were.

Usage:
    python benchmarks/tta.py --workdir /tmp/ema     # after benchmarks/ema.py --workdir /tmp/ema
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="benchmarks/ema.py's workdir")
    arguments = parser.parse_args()
    runs = sorted(name for name in os.listdir(arguments.workdir)
                  if os.path.isfile(os.path.join(arguments.workdir, name, "metrics.json")))
    print("| run | without | with `--tta` | gain | seconds (evaluate --tta) |")
    print("| --- | --- | --- | --- | --- |")
    gains = []
    for name in runs:
        with tempfile.TemporaryDirectory() as scratch:
            started = time.perf_counter()
            printed = subprocess.run([sys.executable, "-m", "resnet_transfer.cli", "--quiet", "evaluate",
                                      os.path.join(arguments.workdir, name), "--tta", "--output",
                                      os.path.join(scratch, "report")], check=True, capture_output=True, text=True)
            seconds = time.perf_counter() - started
        metrics = json.loads(printed.stdout.splitlines()[-1])
        plain, tta = metrics["test_accuracy"], metrics["tta"]["test_accuracy"]
        gains.append(tta - plain)
        print(f"| {name} | {plain:.2%} | {tta:.2%} | {100 * (tta - plain):+.2f} | {seconds:.0f} |", flush=True)
    print(f"\nmean gain {100 * statistics.mean(gains):+.2f} points over {len(gains)} runs "
          f"(from {100 * min(gains):+.2f} to {100 * max(gains):+.2f})")


if __name__ == "__main__":
    main()
