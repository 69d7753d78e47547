"""Broken files and CSVs for the data-source tests; the shapes come from ``resnet_transfer.samples``."""

import csv
import os

import numpy as np

from resnet_transfer.samples import SHAPES, draw_shape, write_class_folders  # noqa: F401  re-exported for the tests


def add_broken_files(folder) -> dict:
    """Adds a zero-byte file, a truncated PNG and a text file to ``folder``."""
    empty = os.path.join(folder, "empty.png")
    open(empty, "wb").close()
    truncated = os.path.join(folder, "truncated.png")
    draw_shape("circle", np.random.default_rng(9), (40, 40)).save(truncated)
    with open(truncated, "r+b") as handle:
        handle.truncate(os.path.getsize(truncated) // 2)
    text = os.path.join(folder, "notes.txt")
    with open(text, "w") as handle:
        handle.write("not an image")
    return {"empty": empty, "truncated": truncated, "text": text}


def write_csv(root, rows) -> str:
    path = os.path.join(root, "labels.csv")
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "kind"])
        writer.writerows(rows)
    return path
