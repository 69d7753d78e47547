"""The seed recipe two ways, in one process, one after the other: end-to-end vs cached features.

Prints backbone images per second (in the cached run, and for a bare ``model.predict``
of the same backbone), seconds per epoch and total seconds of each way, their ratio,
the final validation accuracy of each way and the largest relative difference in
validation loss over the epochs.

    python benchmarks/seed_recipe.py --train-images 2000 --epochs 10
    python benchmarks/seed_recipe.py --train-images 58000 --epochs 40 --skip-end-to-end [--skip-bare-predict]

Both runs start with an empty feature cache, so the cached run's total includes its
backbone pass. Not a test: it prints figures for benchmarks/README.md.
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
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--val-size", type=int, default=2000)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--backbone", default="resnet152")
    parser.add_argument("--weights", default="none", help="none (offline machines) or imagenet")
    parser.add_argument("--steps-per-execution", type=int, default=1)
    parser.add_argument("--skip-end-to-end", action="store_true", help="only the cached way (the full recipe end-to-end takes hours on a CPU)")
    parser.add_argument("--skip-bare-predict", action="store_true",
                        help="no bare model.predict over the training and validation images after the run (minutes at full size)")
    return parser.parse_args()


def timed_train(config):
    from resnet_transfer.training.train import train

    started = time.perf_counter()
    result = train(config)
    return result, time.perf_counter() - started


def bare_predict_rate(result, images) -> float:
    """Images per second of ``model.predict`` on the run's own backbone (after a warm-up)."""
    from resnet_transfer.model.assembly import feature_extractor

    extractor = feature_extractor(result.model)
    extractor.predict(images[:512].astype("float32"), batch_size=256, verbose=0)
    started = time.perf_counter()
    extractor.predict(images.astype("float32"), batch_size=256, verbose=0)
    return len(images) / (time.perf_counter() - started)


def main():
    arguments = parse_arguments()
    import keras
    import numpy as np

    from resnet_transfer.config import RunConfig
    from resnet_transfer.config import DataConfig
    from resnet_transfer.data.dataset import load_dataset

    workspace = tempfile.mkdtemp(prefix="seed-recipe-bench-")

    def config(name, feature_cache):
        return RunConfig.from_dict(
            {
                "data": {"limit": arguments.train_images, "val_size": arguments.val_size, "test_limit": arguments.test_images},
                "model": {"backbone": arguments.backbone, "weights": arguments.weights},
                "train": {
                    "epochs": arguments.epochs,
                    "feature_cache": feature_cache,
                    "cache_dir": os.path.join(workspace, "cache"),
                    "steps_per_execution": arguments.steps_per_execution,
                },
                "run_dir": os.path.join(workspace, name),
            }
        )

    cached, cached_seconds = timed_train(config("cached", "auto"))
    backbone_images = cached.metrics["n_train"] + cached.metrics["n_val"] + cached.metrics["n_test"]
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "keras_backend": keras.backend.backend(),
        "backbone": arguments.backbone,
        "weights": arguments.weights,
        "train_images": cached.metrics["n_train"],
        "val_images": cached.metrics["n_val"],
        "test_images": cached.metrics["n_test"],
        "epochs": arguments.epochs,
        "extract_runtime": cached.metrics["extract_runtime"],
        "conversion_seconds": cached.metrics["conversion_seconds"],
        "backbone_seconds": cached.metrics["backbone_seconds"],
        "cached_backbone_images_per_second": backbone_images / cached.metrics["backbone_seconds"],
        "cached_train_seconds": cached.metrics["train_seconds"],
        "cached_seconds_per_epoch": cached.metrics["seconds_per_epoch"],
        "cached_total_seconds": cached_seconds,
        "cached_final_val_accuracy": cached.history["val_accuracy"][-1],
    }
    if not arguments.skip_bare_predict:
        dataset = load_dataset(DataConfig(limit=arguments.train_images, val_size=arguments.val_size,
                                          test_limit=arguments.test_images))
        report["bare_predict_images_per_second"] = bare_predict_rate(cached, np.concatenate([dataset.x_train, dataset.x_val]))
        report["backbone_pass_vs_bare_predict"] = report["cached_backbone_images_per_second"] / report["bare_predict_images_per_second"]
    if not arguments.skip_end_to_end:
        end_to_end, end_to_end_seconds = timed_train(config("end_to_end", "off"))
        val_loss = np.array(end_to_end.history["val_loss"])
        report.update(
            {
                "end_to_end_seconds_per_epoch": end_to_end.metrics["seconds_per_epoch"],
                "end_to_end_total_seconds": end_to_end_seconds,
                "end_to_end_final_val_accuracy": end_to_end.history["val_accuracy"][-1],
                "speedup_total": end_to_end_seconds / cached_seconds,
                "max_relative_val_loss_difference": float(np.max(np.abs(np.array(cached.history["val_loss"]) - val_loss) / val_loss)),
                "val_accuracy_difference_points": 100 * abs(cached.history["val_accuracy"][-1] - end_to_end.history["val_accuracy"][-1]),
            }
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
