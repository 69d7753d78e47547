"""Training images per second of a ResNet with and without XLA, frozen and unfrozen.

    python benchmarks/fine_tune_speed.py --backbone resnet50 --image-size 32 --images 512

For each trainable set (the head only, conv5 and up, every layer) and each XLA setting,
builds the run's model (random weights), compiles it as the fine-tune phase does
(Adam, ``steps_per_execution=8``), warms it up on one batch (compilation excluded)
and times one epoch over ``--images`` random images in batches of 64. Prints one JSON
object per line. This is what ``--jit-compile auto`` was chosen from. Not a test.
"""

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=512)
    arguments = parser.parse_args()

    import numpy as np

    from resnet_transfer.config import ModelConfig
    from resnet_transfer.model.assembly import backbone_of, build_model, compile_model
    from resnet_transfer.training.phases import trainable_count, unfreeze

    rng = np.random.default_rng(0)
    side = arguments.image_size
    images = rng.integers(0, 256, (arguments.images, side, side, 3)).astype("float32")
    labels = rng.integers(0, 10, arguments.images)
    for trainable in ("head", "conv5", "all"):
        for jit_compile in (False, True):
            model = build_model(ModelConfig(backbone=arguments.backbone, weights="none"), image_shape=(side, side, 3),
                                num_classes=10)
            if trainable != "head":
                unfreeze(backbone_of(model), trainable)
            compile_model(model, learning_rate=1e-5, steps_per_execution=8, jit_compile=jit_compile)
            model.fit(images[:64], labels[:64], batch_size=64, epochs=1, verbose=0)
            started = time.perf_counter()
            model.fit(images, labels, batch_size=64, epochs=1, verbose=0)
            seconds = time.perf_counter() - started
            print(json.dumps({
                "backbone": arguments.backbone, "image_size": side, "trainable": trainable,
                "trainable_parameters": trainable_count(model), "jit_compile": jit_compile,
                "images_per_second": round(arguments.images / seconds, 1),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            }), flush=True)


if __name__ == "__main__":
    main()
