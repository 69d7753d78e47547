"""The full seed recipe with the frozen pass in INT8: ``resnet-transfer train --weights none --extract-runtime
openvino-int8`` (ResNet152, 58,000 training, 2,000 validation and 10,000 test MNIST images, 40 epochs, an empty
feature cache), timed from outside; printed with the run's own figures: the pass, converting and quantising,
the head's training, and ``int8_extraction`` (the features' distance from Keras's, and the head's validation
accuracy on the INT8 features and on Keras's float features).

Targets (issue 28): at most 5 minutes on our 2 cores, validation accuracy within 0.5 points of float.

    python benchmarks/int8_extraction.py --workdir /tmp/bench/int8-extraction
"""

import argparse
import json
import os
import time

from _runs import cli, last_validation, metrics


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--workdir", required=True)
    parsed = arguments.parse_args()
    run = os.path.join(parsed.workdir, "run")
    started = time.perf_counter()
    if not os.path.isfile(os.path.join(run, "metrics.json")):
        cli("train", "--weights", "none", "--extract-runtime", "openvino-int8", "--cache-dir",
            os.path.join(parsed.workdir, "cache"), "--run-dir", run)
        print(f"whole train command: {time.perf_counter() - started:.1f} s")
    figures = metrics(run)
    print(f"conversion and quantisation: {figures['conversion_seconds']:.1f} s; backbone pass: "
          f"{figures['backbone_seconds']:.1f} s; head (40 epochs): {figures['train_seconds']:.1f} s")
    print(f"last validation accuracy: {last_validation(run):.4f}; test accuracy {figures['test_accuracy']:.4f}")
    print(f"int8_extraction: {json.dumps(figures['int8_extraction'])}")


if __name__ == "__main__":
    main()
