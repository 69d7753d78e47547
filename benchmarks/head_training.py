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
    for jit_compile, steps, workers in itertools.product((False, True), arguments.steps_per_execution, (1, 2)):
        keras.utils.set_random_seed(0)
        head = build_head((1, 1, 2048), units=1000, num_classes=10)
        head.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                     steps_per_execution=steps, jit_compile=jit_compile)
        batches = ArrayBatches(features, labels, batch_size=64, shuffle=True, workers=workers)
        head.fit(batches, epochs=1, verbose=0)
        started = time.perf_counter()
        head.fit(batches, epochs=1, verbose=0)
        seconds = time.perf_counter() - started
        print(json.dumps({"backend": keras.backend.backend(), "jit_compile": jit_compile, "steps_per_execution": steps, "workers": workers,
                          "seconds_per_epoch": round(seconds, 2), "steps_per_second": round(len(batches) / seconds)}), flush=True)
    os.remove(path)


if __name__ == "__main__":
    main()
