"""Seconds per epoch of the head's training on stored features, by Keras's per-step knobs.

Trains the seed recipe's head (Flatten -> Dense(1000) -> Dense(10), Adam, batch 64) for
one warm-up and one timed epoch on N synthetic 1x1x2048 feature vectors read through
``ArrayBatches`` from a memory map, as a cached run does, with several values of
``steps_per_execution``, with and without XLA (``jit_compile``), and with one or two
batch-preparing worker threads.

    python benchmarks/head_training.py --features 58000

Not a test: it prints figures for benchmarks/README.md.
"""

import argparse
import itertools
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=58000)
    parser.add_argument("--steps-per-execution", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--storage", nargs="+", default=["memory-map"], choices=["memory-map", "memory"],
                        help="where ArrayBatches reads the features from (a run reads them into memory when they "
                             "fit, see features.in_memory)")
    parser.add_argument("--keras-fit", action="store_true",
                        help="also time Keras's own fit(x, y) on the in-memory array (XLA, the largest "
                             "steps_per_execution), the floor the issue compares with")
    arguments = parser.parse_args()
    import keras
    import numpy as np

    from resnet_transfer.model.heads import build_head
    from resnet_transfer.training.batches import ArrayBatches

    path = os.path.join(tempfile.mkdtemp(prefix="head-bench-"), "features.npy")
    stored = np.lib.format.open_memmap(path, mode="w+", dtype="float32", shape=(arguments.features, 1, 1, 2048))
    stored[:] = np.random.default_rng(0).random((arguments.features, 1, 1, 2048), dtype=np.float32)
    stored.flush()
    features = np.load(path, mmap_mode="r")
    labels = np.random.default_rng(1).integers(0, 10, arguments.features)
    in_memory = np.array(features)
    for storage, jit_compile, steps, workers in itertools.product(arguments.storage, (False, True),
                                                                  arguments.steps_per_execution, (1, 2)):
        keras.utils.set_random_seed(0)
        head = build_head((1, 1, 2048), units=1000, num_classes=10)
        head.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                     steps_per_execution=steps, jit_compile=jit_compile)
        batches = ArrayBatches(in_memory if storage == "memory" else features, labels, batch_size=64, shuffle=True,
                               workers=workers)
        head.fit(batches, epochs=1, verbose=0, shuffle=False)
        started = time.perf_counter()
        head.fit(batches, epochs=1, verbose=0, shuffle=False)
        seconds = time.perf_counter() - started
        print(json.dumps({"backend": keras.backend.backend(), "storage": storage, "jit_compile": jit_compile,
                          "steps_per_execution": steps, "workers": workers, "seconds_per_epoch": round(seconds, 2),
                          "steps_per_second": round(len(batches) / seconds)}), flush=True)
    if arguments.keras_fit:
        keras.utils.set_random_seed(0)
        head = build_head((1, 1, 2048), units=1000, num_classes=10)
        head.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                     steps_per_execution=max(arguments.steps_per_execution), jit_compile=True)
        head.fit(in_memory, labels, batch_size=64, epochs=1, verbose=0)
        started = time.perf_counter()
        head.fit(in_memory, labels, batch_size=64, epochs=1, verbose=0)
        seconds = time.perf_counter() - started
        print(json.dumps({"backend": keras.backend.backend(), "keras_fit_x_y": True, "jit_compile": True,
                          "steps_per_execution": max(arguments.steps_per_execution),
                          "seconds_per_epoch": round(seconds, 2)}), flush=True)
    os.remove(path)


if __name__ == "__main__":
    main()
