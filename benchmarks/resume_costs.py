"""What resuming costs a run that is never stopped: the checkpoint after every epoch, and the
chunked feature extraction (chunks written and hashed, then assembled), each against the way
without it. Prints the figures.

    python benchmarks/resume_costs.py [--images 58000] [--train-images 8192]
"""

import argparse
import csv
import os
import shutil
import tempfile
import time

import numpy as np

from resnet_transfer.config import RunConfig
from resnet_transfer.files import hash_file
from resnet_transfer.training import checkpoints
from resnet_transfer.cache.extraction import ChunkedExtraction
from resnet_transfer.training.train import train


def chunked_extraction(folder: str, count: int, width: int = 2048, chunk_size: int = 4096) -> None:
    """The storage side of extraction (the backbone's pass is the same either way)."""
    features = np.random.default_rng(0).random((chunk_size, width), dtype=np.float32)
    chunks = ChunkedExtraction(os.path.join(folder, ".entry.chunks"), count=count, chunk_size=chunk_size,
                               feature_shape=(width,), dtype="float32")
    started = time.perf_counter()
    for start, stop in chunks.bounds:
        chunks.write(start, stop, features[: stop - start])
    written = time.perf_counter()
    chunks.assemble(os.path.join(folder, "features.npy"))
    hash_file(os.path.join(folder, "features.npy"))
    assembled = time.perf_counter()
    single = np.lib.format.open_memmap(os.path.join(folder, "single.npy"), mode="w+", dtype="float32",
                                       shape=(count, width))
    for start, stop in chunks.bounds:
        single[start:stop] = features[: stop - start]
    single.flush()
    del single
    hash_file(os.path.join(folder, "single.npy"))
    former = time.perf_counter()
    print(f"storing {count:,} x {width} float32 features ({count * width * 4 / 1e6:,.0f} MB): chunks written and hashed "
          f"{written - started:.2f} s + assembled and hashed {assembled - written:.2f} s = "
          f"{assembled - started:.2f} s; one memory map written and hashed (before chunks): {former - assembled:.2f} s")


def checkpoint_seconds(folder: str, train_images: int, epochs: int = 5) -> None:
    """The seed recipe's model (ResNet152, Flatten -> Dense(1000) -> Dense(10)) on cached features."""
    config = RunConfig.from_dict({"data": {"limit": train_images, "val_size": 1000, "test_limit": 1000},
                                  "model": {"weights": "none"}, "train": {"epochs": epochs,
                                                                          "cache_dir": os.path.join(folder, "cache")},
                                  "run_dir": os.path.join(folder, "warm")})
    train(config)  # the features, once
    seconds = []
    write = checkpoints.EpochCheckpoint.on_epoch_end

    def timed(self, epoch, logs=None):
        started = time.perf_counter()
        write(self, epoch, logs)
        seconds.append(time.perf_counter() - started)

    checkpoints.EpochCheckpoint.on_epoch_end = timed
    result = train(config.updated({"run_dir": os.path.join(folder, "timed")}))
    with open(os.path.join(result.run_dir, "history.csv")) as handle:
        epoch_seconds = [float(row["seconds"]) for row in csv.DictReader(handle)]
    print(f"checkpoint of the seed recipe's head phase: {np.median(seconds):.3f} s per epoch (median of {epochs}; "
          f"{[round(value, 3) for value in seconds]}), against {np.median(epoch_seconds):.2f} s per epoch of "
          f"{train_images:,} training images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=58000, help="features stored (default: the seed recipe's 58,000)")
    parser.add_argument("--train-images", type=int, default=8192, help="training images for the checkpoint timing")
    arguments = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="resume-costs-")
    try:
        chunked_extraction(folder, arguments.images)
        checkpoint_seconds(folder, arguments.train_images)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
