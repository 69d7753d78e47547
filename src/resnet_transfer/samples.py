"""Small synthetic image data sets to try the tool on (like scikit-learn's ``make_*``).

``write_shapes(folder)`` draws circles, squares and triangles in random colours, sizes
and image modes (RGB, grey, RGBA; PNG and JPEG), and writes the same images in the
three layouts ``train --data`` accepts:

    FOLDER/images/<class>/<n>.png|jpg   class folders
    FOLDER/labels.csv                   path,label (paths relative to FOLDER)
    FOLDER/shapes.npz                   x_train, y_train (32x32 RGB uint8), x_test, y_test

Command line: ``python -m resnet_transfer.samples FOLDER [--per-class 40 30 20]``.
"""

import argparse
import csv
import os

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["SHAPES", "draw_shape", "write_class_folders", "write_shapes"]

SHAPES = ("circle", "square", "triangle")
_MODES = ("RGB", "L", "RGBA")
_SIZES = ((40, 30), (24, 24), (50, 64))


def draw_shape(shape: str, rng: np.random.Generator, size: tuple = (40, 30), mode: str = "RGB") -> Image.Image:
    """One shape in a random bright colour at a random place, on a random dark background."""
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of: {', '.join(SHAPES)}. Received: shape={shape!r}")
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 80, 3)))
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


def write_class_folders(root: str, per_class=(30, 20, 12), seed: int = 0) -> list:
    """Writes ``root/<shape>/<n>.png|jpg`` (one folder per shape, in ``SHAPES`` order); returns the paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for shape, count in zip(SHAPES, per_class):
        os.makedirs(os.path.join(root, shape), exist_ok=True)
        for index in range(count):
            mode, size = _MODES[index % 3], _SIZES[index % 3]
            extension = "jpg" if mode != "RGBA" and index % 4 == 0 else "png"
            path = os.path.join(root, shape, f"{index:03d}.{extension}")
            draw_shape(shape, rng, size, mode).save(path)
            paths.append(path)
    return paths


def write_shapes(folder: str, per_class=(40, 30, 20), seed: int = 0) -> dict:
    """Writes the class folders, a CSV and an .npz of the same shapes into ``folder``.

    Returns:
        The paths written: {"images": ..., "csv": ..., "npz": ...}.
    """
    paths = write_class_folders(os.path.join(folder, "images"), per_class=per_class, seed=seed)
    labels = [os.path.basename(os.path.dirname(path)) for path in paths]
    csv_path = os.path.join(folder, "labels.csv")
    with open(csv_path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows((os.path.relpath(path, folder), label) for path, label in zip(paths, labels))
    pixels = np.stack([np.asarray(Image.open(path).convert("RGB").resize((32, 32))) for path in paths])
    classes = np.array([SHAPES.index(label) for label in labels])
    test = np.arange(len(paths)) % 5 == 0
    npz_path = os.path.join(folder, "shapes.npz")
    np.savez(npz_path, x_train=pixels[~test], y_train=classes[~test], x_test=pixels[test], y_test=classes[test])
    return {"images": os.path.join(folder, "images"), "csv": csv_path, "npz": npz_path}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m resnet_transfer.samples", description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--per-class", type=int, nargs=3, default=[40, 30, 20], metavar=("CIRCLES", "SQUARES", "TRIANGLES"))
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args(argv)
    for kind, path in write_shapes(arguments.folder, per_class=tuple(arguments.per_class), seed=arguments.seed).items():
        print(f"{kind}: {path}")


if __name__ == "__main__":
    main()
