"""Images: decode files with Pillow and fit them to the backbone's square input.

Every image becomes uint8 RGB of ``size`` x ``size``: grey is repeated to 3
channels, alpha is dropped, and the aspect ratio is handled by ``resize``:

- ``pad``: keep the aspect ratio, shrink to fit if larger (never enlarge), centre on
  black. A 28x28 digit into 32x32 is exactly the seed recipe's 2-pixel zero padding.
- ``stretch``: resize to the square, ignoring the aspect ratio (Keras's default).
- ``crop``: scale the shorter side to ``size`` and cut the centre (``ImageOps.fit``).

Decoded images are written chunk by chunk to a memory-mapped ``.npy`` file
(``decode_to_store``), so a large folder never has to fit in memory.

Example:
    >>> pixels = fit_image(Image.open("cat.jpg"), size=224, resize="crop")
"""

import atexit
import os
import shutil
import tempfile
from typing import Iterable, Optional

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["RESIZE_MODES", "fit_image", "fit_array", "read_image", "decode_to_store", "ImageReadError"]

RESIZE_MODES = ("pad", "stretch", "crop")


class ImageReadError(Exception):
    """A file that is not a readable image; ``reason`` says why, for skipped.csv."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def fit_image(image: Image.Image, *, size: int, resize: str) -> np.ndarray:
    """Returns ``image`` as a uint8 array of shape (size, size, 3)."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of: {', '.join(RESIZE_MODES)}. Received: resize={resize!r}")
    image = image.convert("RGB")  # grey -> 3 equal channels, palette -> RGB, alpha dropped
    if resize == "stretch":
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    elif resize == "crop":
        image = ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR)
    else:
        if image.width > size or image.height > size:
            image = ImageOps.contain(image, (size, size), Image.Resampling.BILINEAR)
        canvas = Image.new("RGB", (size, size))
        canvas.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
        image = canvas
    return np.asarray(image, dtype=np.uint8)


def fit_array(array: np.ndarray, *, size: int, resize: str) -> np.ndarray:
    """Like ``fit_image`` for one array image: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), uint8 or float."""
    if array.dtype != np.uint8:
        scale = 255.0 if float(np.max(array, initial=0)) <= 1.0 else 1.0
        array = np.clip(np.rint(array.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[:2] == (size, size) and array.shape[-1] == 3:
        return array
    return fit_image(Image.fromarray(array), size=size, resize=resize)


def read_image(path: str, *, size: int, resize: str) -> np.ndarray:
    """Decodes one file and fits it; raises ``ImageReadError`` with a reason for skipped.csv."""
    try:
        if os.path.getsize(path) == 0:
            raise ImageReadError(path, "empty file")
        with Image.open(path) as image:
            image.load()
            return fit_image(image, size=size, resize=resize)
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as error:  # truncated or corrupt data
        raise ImageReadError(path, f"unreadable or truncated image ({error})") from None


def image_size_of(path: str) -> Optional[tuple]:
    """(width, height) of an image file without decoding its pixels, or None if unreadable."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, SyntaxError, ValueError):
        return None


def decode_to_store(paths: Iterable[str], count: int, *, size: int, resize: str, folder: Optional[str] = None) -> tuple:
    """Decodes ``count`` files into a memory-mapped uint8 array, skipping unreadable ones.

    Returns:
        ``(images, kept, skipped)``: a read-only memory map of the readable images, the
        indices (into ``paths``) that were kept, and ``(path, reason)`` for the rest.
    """
    if folder is None:
        folder = tempfile.mkdtemp(prefix="resnet-transfer-images-")
        # The store lives as long as this process: the memory map stays readable after
        # the file is gone on POSIX systems, and nothing is left behind in the temp folder.
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = os.path.join(folder, f"images-{size}-{resize}.npy")
    store = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(max(count, 1), size, size, 3))
    kept, skipped = [], []
    for index, file_path in enumerate(paths):
        try:
            store[len(kept)] = read_image(file_path, size=size, resize=resize)
            kept.append(index)
        except ImageReadError as error:
            skipped.append((error.path, error.reason))
    store.flush()
    del store
    images = np.load(path, mmap_mode="r")[: len(kept)]
    return images, kept, skipped
