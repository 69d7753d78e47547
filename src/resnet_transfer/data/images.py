"""Images: decode files as a viewer shows them and fit them to the backbone's square input.

Every image becomes uint8 RGB of ``size`` x ``size``. Decoding follows what an image
viewer shows: the EXIF orientation is applied, 16-bit and 32-bit images are scaled
to 8 bits (not clipped), grey is repeated to 3 channels and alpha is dropped. Files
over Pillow's decompression-bomb limit are refused with that reason. The aspect
ratio is handled by ``resize``:

- ``pad``: keep the aspect ratio, shrink to fit if larger (never enlarge), centre on
  black. A 28x28 digit into 32x32 is exactly the seed recipe's 2-pixel zero padding.
- ``stretch``: resize to the square, ignoring the aspect ratio (Keras's default).
- ``crop``: scale the shorter side to ``size`` and cut the centre (``ImageOps.fit``).

Example:
    >>> pixels = read_image("cat.jpg", size=224, resize="crop")
"""

import collections
import io
import os
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Optional

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from resnet_transfer.config.choices import RESIZE_MODES
from resnet_transfer.files import reserve_space

__all__ = ["RESIZE_MODES", "ImageReadError", "fit_image", "fit_images", "read_image", "decode_image", "image_size_of",
           "decode_to_store"]

# Pillow modes of more than 8 bits per channel and their largest value.
_WIDE_MODES = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": None, "F": None}


class ImageReadError(Exception):
    """A file that is not a readable image; ``reason`` says why, for skipped.csv."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def _to_8_bits(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit grey images scaled to 0..255, as viewers show them."""
    if image.mode not in _WIDE_MODES:
        return image
    values = np.asarray(image, dtype=np.float64)
    top = _WIDE_MODES[image.mode] or (65535.0 if values.max(initial=0) > 255 else 255.0)
    return Image.fromarray(np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8), mode="L")


def fit_image(image: Image.Image, *, size: int, resize: str) -> np.ndarray:
    """Returns a decoded ``image`` as a uint8 array of shape (size, size, 3)."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of: {', '.join(RESIZE_MODES)}. Received: resize={resize!r}")
    image = _to_8_bits(image).convert("RGB")  # grey -> 3 equal channels, palette -> RGB, alpha dropped
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


def fit_images(images: np.ndarray, *, size: int, resize: str) -> np.ndarray:
    """Fits checked uint8 images, (N, H, W, 3), to (N, size, size, 3).

    Images that already have the size are kept; padding images no larger than ``size``
    is done on the whole array at once (the same centring as ``fit_image``); anything
    else goes through Pillow image by image.
    """
    count, height, width = images.shape[:3]
    if (height, width) == (size, size):
        return images
    if resize == "pad" and height <= size and width <= size:
        top, left = (size - height) // 2, (size - width) // 2
        return np.pad(images, ((0, 0), (top, size - height - top), (left, size - width - left), (0, 0)))
    fitted = np.empty((count, size, size, 3), dtype=np.uint8)
    for index, image in enumerate(images):
        fitted[index] = fit_image(Image.fromarray(np.ascontiguousarray(image)), size=size, resize=resize)
    return fitted


def _open(source, name: str) -> Image.Image:
    """Opens ``source`` (a path, or a binary file object) with Pillow, refusing an empty file and
    an image over Pillow's pixel limit by name."""
    if (os.path.getsize(source) if isinstance(source, (str, os.PathLike)) else len(source.getbuffer())) == 0:
        raise ImageReadError(name, "empty file")
    # Pillow only warns between its limit and twice the limit; over the limit is refused here, by the size
    # itself: a warnings filter is the process's, and images are decoded in threads that would undo each other's.
    limit = Image.MAX_IMAGE_PIXELS
    # (no flag raises it: the limit is Pillow's, for the whole process; from Python, set it before the call)
    message = (f"over Pillow's safety limit of {limit} pixels, a guard against decompression bombs: downscale the "
               "image if you trust it (from Python: raise PIL.Image.MAX_IMAGE_PIXELS)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(source)
        except Image.DecompressionBombError as error:
            raise ImageReadError(name, message) from error
    if limit and image.width * image.height > limit:
        image.close()
        raise ImageReadError(name, message)
    return image


def _decode_one(source, name: str, *, size: int, resize: str) -> np.ndarray:
    """``source`` (a path or a binary file object) decoded as a viewer shows it, and fitted."""
    try:
        with _open(source, name) as image:
            image.load()
            return fit_image(ImageOps.exif_transpose(image), size=size, resize=resize)
    except FileNotFoundError:
        raise ImageReadError(name, "file not found") from None
    except IsADirectoryError:
        raise ImageReadError(name, "a folder, not an image file") from None
    except PermissionError:
        raise ImageReadError(name, "no permission to read it") from None
    except Image.DecompressionBombError as error:  # a few formats check the size only as they load
        raise ImageReadError(name, f"over Pillow's safety limit of {Image.MAX_IMAGE_PIXELS} pixels ({error})") from None
    except UnidentifiedImageError:
        raise ImageReadError(name, "not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, TypeError) as error:  # truncated or corrupt data
        raise ImageReadError(name, f"unreadable or truncated image ({error})") from None


def read_image(path: str, *, size: int, resize: str) -> np.ndarray:
    """Decodes one file as a viewer shows it and fits it; raises ``ImageReadError`` with a reason."""
    return _decode_one(path, path, size=size, resize=resize)


def decode_image(data: bytes, *, size: int, resize: str, name: str = "<bytes>") -> np.ndarray:
    """Decodes one image from the bytes of its file (an upload) exactly as ``read_image`` does
    from the file: the same checks, EXIF orientation, 8-bit scaling and fit.

    Args:
        data: the encoded image (PNG, JPEG, ... : what the file holds).
        size, resize: as for ``read_image``.
        name: what the image is called in an ``ImageReadError`` (a file name, an index).

    Returns:
        uint8 pixels of shape (size, size, 3), equal to ``read_image``'s for the same file.

    Raises:
        ImageReadError: empty, not an image, truncated, or over Pillow's pixel limit.

    Example:
        >>> pixels = decode_image(request_body, size=32, resize="pad", name="upload.png")
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be the bytes of an image file. Received: data of type {type(data).__name__}")
    return _decode_one(io.BytesIO(data), name, size=size, resize=resize)


def image_size_of(path: str) -> Optional[tuple]:
    """(width, height) of an image file as shown (EXIF rotation applied), or None if unreadable."""
    try:
        with _open(path, path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
            return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    except (ImageReadError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def decode_to_store(paths: Iterable[str], count: int, *, size: int, resize: str, folder: str,
                    workers: Optional[int] = None) -> tuple:
    """Decodes ``count`` files into a memory-mapped uint8 array in ``folder``, skipping unreadable ones.

    ``workers`` threads decode (None: one per CPU core, at most 8): Pillow lets go of
    Python's lock while it decodes and resizes, so threads run on every core without the
    cost of processes, and the images come out in the order of ``paths`` whatever the
    number of threads.

    Returns:
        ``(images, kept, skipped)``: a read-only memory map of the readable images, the
        indices (into ``paths``) that were kept, and ``(path, reason)`` for the rest.
    """
    handle, path = tempfile.mkstemp(dir=folder, prefix=f"images-{size}-{resize}-", suffix=".npy")
    os.close(handle)
    store = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(max(count, 1), size, size, 3))
    reserve_space(path)
    kept, skipped = [], []
    for index, decoded in enumerate(_decoded(paths, size=size, resize=resize, workers=workers or min(os.cpu_count() or 1, 8))):
        if isinstance(decoded, ImageReadError):
            skipped.append((decoded.path, decoded.reason))
        else:
            store[len(kept)] = decoded
            kept.append(index)
    store.flush()
    del store
    images = np.load(path, mmap_mode="r")[: len(kept)]
    return images, kept, skipped


def _read_or_reason(path: str, size: int, resize: str):
    try:
        return read_image(path, size=size, resize=resize)
    except ImageReadError as error:
        return error


def _decoded(paths: Iterable[str], *, size: int, resize: str, workers: int):
    """Every file's pixels (or its ``ImageReadError``), in order, decoded by ``workers``
    threads at most ``4 * workers`` files ahead (so memory holds a few images, not all)."""
    if workers <= 1:
        yield from (_read_or_reason(path, size, resize) for path in paths)
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="decode")
    pending = collections.deque()
    try:
        for path in paths:
            pending.append(pool.submit(_read_or_reason, path, size, resize))
            if len(pending) >= 4 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # Ctrl-C: the images being decoded finish, no others start
