"""Seconds per epoch of the head's training on stored features, by Keras's per-step knobs.

Trains the seed recipe's head (Flatten -> Dense(1000) -> Dense(10), Adam, batch 64) for
one warm-up epoch (its seconds, tracing and compiling included, printed apart) and one or
more timed epochs on N synthetic 1x1x2048 feature vectors, with several values of
``steps_per_execution``, with and without XLA (``jit_compile``), read
through ``ArrayBatches`` from a memory map or an in-memory array (one or two
batch-preparing worker threads), or served by tf.data from tensors (``TensorBatches``,
what a cached run uses when the features fit in memory).

    python benchmarks/head_training.py --features 58000
    python benchmarks/head_training.py --features 58000 --steps-per-execution 8 --storage tensors memory-map \
        --xla on --timed-epochs 3 --keras-fit

Not a test: it prints figures for benchmarks/README.md.
"""

import argparse
import itertools
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def epoch_seconds(head, data, epochs: int, *, labels=None, callbacks=()) -> list:
    """Each epoch's seconds of ``head.fit`` (``labels``: Keras's own shuffled fit(x, y), batch 64)."""
    import keras

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.started)

    seconds = []
    keywords = {"batch_size": 64} if labels is not None else {"shuffle": False}
    head.fit(data, labels, epochs=epochs, verbose=0, callbacks=[*callbacks, Timer()], **keywords)
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=58000)
    parser.add_argument("--steps-per-execution", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--storage", nargs="+", default=["memory-map"], choices=["memory-map", "memory", "tensors"],
                        help="where the batches come from: ArrayBatches over the memory map or an in-memory array, "
                             "or TensorBatches (a run's choice when the features fit, see batches.fits_in_memory)")
    parser.add_argument("--xla", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument("--train-function", nargs="+", default=["local", "keras"], choices=["local", "keras"],
                        help="whose train function runs the steps with --storage tensors: "
                             "TensorBatches.train_function (a run's choice for the head on a CPU) or Keras's own")
    parser.add_argument("--timed-epochs", type=int, default=1)
    parser.add_argument("--keras-fit", action="store_true",
                        help="also time Keras's own fit(x, y) on the in-memory array (XLA, the largest "
                             "steps_per_execution), the floor the issue compares with")
    arguments = parser.parse_args()
    import keras
    import numpy as np

    from resnet_transfer.model.heads import build_head
    from resnet_transfer.training.batches import ArrayBatches, EpochOrder, TensorBatches

    path = os.path.join(tempfile.mkdtemp(prefix="head-bench-"), "features.npy")
    stored = np.lib.format.open_memmap(path, mode="w+", dtype="float32", shape=(arguments.features, 1, 1, 2048))
    stored[:] = np.random.default_rng(0).random((arguments.features, 1, 1, 2048), dtype=np.float32)
    stored.flush()
    features = np.load(path, mmap_mode="r")
    labels = np.random.default_rng(1).integers(0, 10, arguments.features)
    in_memory = np.array(features)
    xla = [setting == "on" for setting in arguments.xla]
    for storage, jit_compile, steps, workers, function in itertools.product(
            arguments.storage, xla, arguments.steps_per_execution, (1, 2), arguments.train_function):
        if storage == "tensors" and workers == 2 or storage != "tensors" and function == "local":
            continue  # tf.data has no batch workers to set; ArrayBatches are read by Keras's train function
        keras.utils.set_random_seed(0)
        head = build_head((1, 1, 2048), units=1000, num_classes=10)
        head.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                     steps_per_execution=steps, jit_compile=jit_compile)
        if storage == "tensors":
            batches = TensorBatches(features, labels, batch_size=64, shuffle=True)
            data = batches.dataset
            if function == "local":
                head.train_function, data = batches.train_function(head), batches.step_counter
        else:
            batches = ArrayBatches(in_memory if storage == "memory" else features, labels, batch_size=64, shuffle=True,
                                   workers=workers)
            data = batches
        first, *seconds = epoch_seconds(head, data, 1 + arguments.timed_epochs, callbacks=[EpochOrder(batches)])
        print(json.dumps({"backend": keras.backend.backend(), "storage": storage, "jit_compile": jit_compile,
                          "steps_per_execution": steps, "workers": None if storage == "tensors" else workers,
                          "train_function": function if storage == "tensors" else "keras",
                          "first_epoch_seconds": round(first, 2),
                          "seconds_per_epoch": [round(value, 2) for value in seconds],
                          "steps_per_second": round(len(batches) / min(seconds))}), flush=True)
    if arguments.keras_fit:
        keras.utils.set_random_seed(0)
        head = build_head((1, 1, 2048), units=1000, num_classes=10)
        head.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                     steps_per_execution=max(arguments.steps_per_execution), jit_compile=True)
        first, *seconds = epoch_seconds(head, in_memory, 1 + arguments.timed_epochs, labels=labels)
        print(json.dumps({"backend": keras.backend.backend(), "keras_fit_x_y": True, "jit_compile": True,
                          "steps_per_execution": max(arguments.steps_per_execution),
                          "first_epoch_seconds": round(first, 2),
                          "seconds_per_epoch": [round(value, 2) for value in seconds]}), flush=True)
    os.remove(path)


if __name__ == "__main__":
    main()
