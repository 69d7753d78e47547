"""The cached seed recipe against the least that plain Keras does for the same work, side by side.

Plain Keras: load the images, one ``predict`` of the frozen ResNet (behind the same
rescaling, flattened) over every image, ``fit`` of the same head (Dense(1000, relu) ->
Dense(10, softmax), Adam 1e-3, batch 64) on the in-memory features with XLA and
``steps_per_execution=8``, ``evaluate`` on the test features. resnet-transfer: ``train``
with its defaults but the sizes below, into an empty feature cache, which also writes the
cache, the model, the history, the curves and the report. Each side runs in a fresh process
of its own (plain Keras first), timed from its first line to its last; prints both totals,
their stages and the ratio.

    python benchmarks/plain_keras_minimum.py --train-images 20000 --epochs 10
    python benchmarks/plain_keras_minimum.py --train-images 58000 --test-images 10000 --epochs 40
    python benchmarks/plain_keras_minimum.py --backbone resnet50 --image-size 224 --train-images 2000 --val-size 500 \
        --test-images 500 --epochs 10

Random backbone weights (``--weights none``): the speed of a ResNet does not depend on them.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-images", type=int, default=20000)
    parser.add_argument("--val-size", type=int, default=2000)
    parser.add_argument("--test-images", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--backbone", default="resnet152")
    parser.add_argument("--image-size", type=int, help="resize the digits to this side (default: 32, padded)")
    parser.add_argument("--side", choices=["keras", "ours"], help="run one side in this process (internal)")
    return parser.parse_args()


def plain_keras(arguments) -> dict:
    started = time.perf_counter()
    import keras
    import numpy as np

    from resnet_transfer.config import DataConfig
    from resnet_transfer.data.dataset import load_dataset
    from resnet_transfer.registry import get_backbone_spec

    keras.utils.set_random_seed(0)
    data = load_dataset(DataConfig(limit=arguments.train_images, val_size=arguments.val_size,
                                   test_limit=arguments.test_images, image_size=arguments.image_size))
    loaded = time.perf_counter()
    application = getattr(keras.applications, get_backbone_spec(arguments.backbone).builder)
    backbone = application(include_top=False, weights=None, input_shape=data.image_shape)
    backbone.trainable = False
    inputs = keras.Input(data.image_shape)
    feature_map = backbone(keras.layers.Rescaling(1 / 255)(inputs), training=False)
    # The tool's pooling "auto": flatten a 1x1 map (the seed recipe), else average it.
    pooling = keras.layers.Flatten() if feature_map.shape[1] == 1 else keras.layers.GlobalAveragePooling2D()
    features = pooling(feature_map)
    extractor = keras.Model(inputs, features)
    every = np.concatenate([data.x_train, data.x_val, data.x_test])
    stored = extractor.predict(every, batch_size=256, verbose=0)
    extracted = time.perf_counter()
    x_train, x_val = stored[: len(data.x_train)], stored[len(data.x_train) : len(data.x_train) + len(data.x_val)]
    x_test = stored[len(data.x_train) + len(data.x_val) :]
    head = keras.Sequential([keras.Input(stored.shape[1:]), keras.layers.Dense(1000, activation="relu"),
                             keras.layers.Dense(data.num_classes, activation="softmax")])
    head.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                 jit_compile=True, steps_per_execution=8)
    history = head.fit(x_train, data.y_train, batch_size=64, epochs=arguments.epochs, validation_data=(x_val, data.y_val),
                       verbose=0)
    fitted = time.perf_counter()
    loss, accuracy = head.evaluate(x_test, data.y_test, verbose=0)
    ended = time.perf_counter()
    return {"total_seconds": ended - started, "load_seconds": loaded - started, "backbone_seconds": extracted - loaded,
            "head_seconds": fitted - extracted, "evaluate_seconds": ended - fitted, "test_loss": loss,
            "test_accuracy": accuracy, "final_val_accuracy": history.history["val_accuracy"][-1]}


def ours(arguments) -> dict:
    started = time.perf_counter()
    from resnet_transfer.config import RunConfig
    from resnet_transfer.training.train import train

    workspace = tempfile.mkdtemp(prefix="plain-keras-bench-")
    config = RunConfig.from_dict({
        "data": {"limit": arguments.train_images, "val_size": arguments.val_size, "test_limit": arguments.test_images,
                 "image_size": arguments.image_size},
        "model": {"backbone": arguments.backbone, "weights": "none"},
        "train": {"epochs": arguments.epochs, "cache_dir": os.path.join(workspace, "cache")},
        "run_dir": os.path.join(workspace, "run"),
    })
    result = train(config)
    metrics = result.metrics
    return {"total_seconds": time.perf_counter() - started, "backbone_seconds": metrics["backbone_seconds"],
            "conversion_seconds": metrics["conversion_seconds"], "extract_runtime": metrics["extract_runtime"],
            "head_seconds": metrics["train_seconds"], "test_loss": metrics["test_loss"],
            "test_accuracy": metrics["test_accuracy"], "final_val_accuracy": result.history["val_accuracy"][-1]}


def main() -> None:
    arguments = parse_arguments()
    if arguments.side:
        figures = plain_keras(arguments) if arguments.side == "keras" else ours(arguments)
        print("FIGURES " + json.dumps(figures), flush=True)
        return
    sides = {}
    for side in ("keras", "ours"):
        command = [sys.executable, __file__, "--side", side, "--train-images", str(arguments.train_images), "--val-size",
                   str(arguments.val_size), "--test-images", str(arguments.test_images), "--epochs", str(arguments.epochs),
                   "--backbone", arguments.backbone] + (["--image-size", str(arguments.image_size)]
                                                        if arguments.image_size else [])
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        sides[side] = json.loads(next(line for line in output.splitlines() if line.startswith("FIGURES "))[8:])
        print(side, json.dumps({name: round(value, 4) if isinstance(value, float) else value
                                for name, value in sides[side].items()}), flush=True)
    print(f"resnet-transfer / plain Keras: {sides['ours']['total_seconds'] / sides['keras']['total_seconds']:.2f}x "
          f"({sides['ours']['total_seconds']:.1f} s vs {sides['keras']['total_seconds']:.1f} s); "
          f"{arguments.train_images} training images, {arguments.epochs} epochs, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
