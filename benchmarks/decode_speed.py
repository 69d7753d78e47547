"""Decoding a folder of JPEG photos to the backbone's 224-px input: images per second with one
decoding thread and with one per core (``data.images.decode_to_store``). Prints the figures.

    python benchmarks/decode_speed.py [--images 600] [--width 1024 --height 768] [--workers 1 2]

The photos are made here (smooth random colour fields with noise, saved as JPEG quality 90),
written once to a temporary folder and read back from the page cache: decoding and resizing are
measured, not the disk.
"""

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
from PIL import Image

from resnet_transfer.data.images import decode_to_store


def make_photos(folder: str, count: int, width: int, height: int) -> list:
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        coarse = rng.integers(0, 256, (height // 64 + 1, width // 64 + 1, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
        pixels = np.clip(field + rng.integers(-12, 13, field.shape), 0, 255).astype(np.uint8)
        path = os.path.join(folder, f"photo-{index:05d}.jpg")
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    arguments = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="decode-bench-")
    try:
        paths = make_photos(folder, arguments.images, arguments.width, arguments.height)
        decode_to_store(paths[:20], 20, size=224, resize="crop", folder=folder, workers=1)  # warm the page cache
        print(f"{arguments.images} JPEGs of {arguments.width}x{arguments.height} to 224x224 (crop); {os.cpu_count()} cores")
        rates = {}
        for workers in arguments.workers:
            started = time.perf_counter()
            images, kept, _ = decode_to_store(paths, len(paths), size=224, resize="crop", folder=folder, workers=workers)
            seconds = time.perf_counter() - started
            rates[workers] = len(kept) / seconds
            print(f"workers {workers}: {seconds:.2f} s, {rates[workers]:.0f} images/s")
        first = arguments.workers[0]
        for workers in arguments.workers[1:]:
            print(f"workers {workers} vs {first}: {rates[workers] / rates[first]:.2f}x")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
