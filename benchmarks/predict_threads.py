"""Keras's ``predict`` against calling the model batch by batch, round by round, in one process.

Why: on this machine Keras's ``predict`` ran some calls at half speed with one core idle.
Each round times one ``predict`` over N images and one pass of the same images through
a tf.function called batch by batch from this thread (``inference.local_predict``, what
the feature cache and ``predict`` use on a CPU), and prints both rates with the cores
the process kept busy (its CPU seconds over the wall-clock seconds).

    python benchmarks/predict_threads.py --backbone resnet50 --image-size 224 --images 64 --rounds 8

Random weights and pixels: the speed of a ResNet does not depend on them. Not a test.
"""

import argparse
import json
import os
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def busy_cores(run) -> tuple:
    """(wall-clock seconds of ``run()``, the cores this process kept busy meanwhile)."""
    def cpu_seconds():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    wall, cpu = time.perf_counter(), cpu_seconds()
    run()
    wall = time.perf_counter() - wall
    return wall, (cpu_seconds() - cpu) / wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=8)
    arguments = parser.parse_args()
    import keras
    import numpy as np

    from resnet_transfer.registry import get_backbone_spec
    from resnet_transfer.inference import local_predict

    application = getattr(keras.applications, get_backbone_spec(arguments.backbone).builder)
    side = arguments.image_size
    model = application(include_top=False, weights=None, input_shape=(side, side, 3), pooling="avg")
    images = np.random.default_rng(0).random((arguments.images, side, side, 3), dtype=np.float32)
    ways = {
        "keras_predict": lambda: model.predict(images, batch_size=arguments.batch_size, verbose=0),
        "batch_by_batch": lambda: local_predict(model, images, batch_size=arguments.batch_size),
    }
    for run in ways.values():  # traced before timing
        run()
    for round_number in range(arguments.rounds):
        figures = {"round": round_number}
        for name, run in ways.items():
            seconds, cores = busy_cores(run)
            figures[name] = {"images_per_second": round(arguments.images / seconds, 1), "busy_cores": round(cores, 2)}
        print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
