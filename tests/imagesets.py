"""Small image data sets that the tests make themselves: synthetic shapes as PNG/JPEG files."""

import csv
import os

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")


def draw_shape(shape: str, rng: np.random.Generator, size: tuple = (40, 30), mode: str = "RGB") -> Image.Image:
    """One shape in a random colour at a random place, on a random background."""
    background = tuple(int(v) for v in rng.integers(0, 80, 3))
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    width, height = size
    x, y = int(rng.integers(2, width // 3)), int(rng.integers(2, height // 3))
    side = int(min(width, height) * 0.55)
    colour = tuple(int(v) for v in rng.integers(150, 256, 3))
    if shape == "circle":
        draw.ellipse([x, y, x + side, y + side], fill=colour)
    elif shape == "square":
        draw.rectangle([x, y, x + side, y + side], fill=colour)
    else:
        draw.polygon([(x, y + side), (x + side, y + side), (x + side // 2, y)], fill=colour)
    return image.convert(mode)


def write_class_folders(root, per_class=(30, 20, 12), seed=0) -> list:
    """Writes ``root/<shape>/<n>.png|jpg`` in several modes and sizes; returns the paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for shape, count in zip(SHAPES, per_class):
        os.makedirs(os.path.join(root, shape), exist_ok=True)
        for index in range(count):
            mode = ("RGB", "L", "RGBA")[index % 3]
            size = ((40, 30), (24, 24), (50, 64))[index % 3]
            extension = "jpg" if mode != "RGBA" and index % 4 == 0 else "png"
            path = os.path.join(root, shape, f"{index:03d}.{extension}")
            draw_shape(shape, rng, size, mode).save(path)
            paths.append(path)
    return paths


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
