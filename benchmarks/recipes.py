"""A recipe's MNIST test accuracy and wall time, with the weights this machine can have.

    python benchmarks/recipes.py seed --weights none
    python benchmarks/recipes.py best --weights none
    python benchmarks/recipes.py best --weights imagenet      # where the ImageNet weights can be had

Runs ``train`` on the recipe's settings (every other setting as the recipe says; a fresh,
empty feature cache, so the time includes the backbone's pass over every image) and prints
one JSON object: the recipe, weights, test accuracy, the recipe's expectation for ImageNet
weights, the wall seconds of the whole call (data loading included) and each phase's
epochs, seconds and trainable parameters. Not a test: it prints figures for
benchmarks/README.md.
"""

import argparse
import json
import os
import platform
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", choices=("seed", "best"))
    parser.add_argument("--weights", default="none", help="none (offline machines), imagenet, or a weights file")
    parser.add_argument("--limit", type=int, default=None, help="train on the first N training images (default: all)")
    return parser.parse_args()


def main():
    arguments = parse_arguments()
    from resnet_transfer.config import RunConfig
    from resnet_transfer.recipes import get_recipe
    from resnet_transfer.training.train import train

    with tempfile.TemporaryDirectory() as folder:
        config = RunConfig.from_dict({
            "recipe": arguments.recipe,
            "model": {"weights": arguments.weights},
            "data": {"limit": arguments.limit},
            "train": {"cache_dir": os.path.join(folder, "cache")},
            "run_dir": os.path.join(folder, "run"),
        })
        started = time.perf_counter()
        result = train(config)
        wall = time.perf_counter() - started
    recipe = get_recipe(arguments.recipe)
    print(json.dumps({
        "recipe": arguments.recipe,
        "weights": arguments.weights,
        "limit": arguments.limit,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "test_accuracy": round(result.metrics["test_accuracy"], 4),
        "expected_with_imagenet_weights": recipe.expected_test_accuracy,
        "wall_seconds": round(wall, 1),
        "backbone_seconds": result.metrics["backbone_seconds"],
        "phases": [{key: phase[key] for key in ("name", "epochs", "trainable_parameters", "train_seconds")}
                   for phase in result.metrics["phases"]],
        "final_val_accuracy": round(result.history["val_accuracy"][-1], 4),
    }, indent=2))


if __name__ == "__main__":
    main()
