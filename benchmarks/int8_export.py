"""What does INT8 cost and buy? ``export --int8`` of a ResNet-50 run at 224 px, for OpenVINO (NNCF) and TFLite
(full-integer): top-1 accuracy on the run's test split in float and in INT8, images per second of each in its
own runtime (one timed batch of 64 after a warm-up one, on this machine's cores), and file sizes, as export.json
records them. The run: MNIST resized to 224 px (2,000 training images, 500 for validation, 1,000 test images),
ResNet-50 with random weights (no ImageNet weights offline), average pooling and a linear head, 10 epochs.

Targets (issue 28): at least 2x the float OpenVINO model's images per second, at most 1 point of top-1 lost
(or refused, with the drop said).

    python benchmarks/int8_export.py --workdir /tmp/bench/int8
"""

import argparse
import json
import os

from _runs import cli, train


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--workdir", required=True)
    parsed = arguments.parse_args()
    run = train(os.path.join(parsed.workdir, "run"), [
        "--backbone", "resnet50", "--weights", "none", "--image-size", "224", "--resize", "stretch", "--pooling",
        "avg", "--head", "linear", "--limit", "2000", "--val-size", "500", "--test-limit", "1000", "--epochs", "10",
        "--cache-dir", os.path.join(parsed.workdir, "cache")])
    print("| format | float top-1 | INT8 top-1 | drop (points) | float images/s | INT8 images/s | speed-up | float MB | "
          "INT8 MB | calibration images |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for output_format in ("openvino", "tflite"):
        folder = os.path.join(run, "export", f"{output_format}-int8")
        if not os.path.isfile(os.path.join(folder, "export.json")):
            cli("export", run, "--format", output_format, "--int8")
        with open(os.path.join(folder, "export.json")) as handle:
            gate = json.load(handle)["accuracy_gate"]
        floating, int8 = gate["float"], gate["int8"]
        print(f"| {output_format} | {floating['accuracy']:.4f} | {int8['accuracy']:.4f} | "
              f"{gate['accuracy_drop_points']:.2f} | {floating['images_per_second']:.1f} | "
              f"{int8['images_per_second']:.1f} | {int8['images_per_second'] / floating['images_per_second']:.2f}x | "
              f"{floating['bytes'] / 1e6:.1f} | {int8['bytes'] / 1e6:.1f} | {gate['calibration_images']} |")


if __name__ == "__main__":
    main()
