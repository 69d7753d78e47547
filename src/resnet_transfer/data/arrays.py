"""Image arrays from users (.npz files, Keras data sets): checked before any use.

``check_images`` and ``check_labels`` accept what users have and refuse, with one
line that says what to do, what would train on something other than they think:

- images: (N, H, W) grey or (N, H, W, C) with C = 1, 3 or 4; numeric, finite. Float
  images are scaled by one rule for the whole array: [0, 1] -> x255, [0, 255] kept;
  integer images must lie in [0, 255] (16-bit ones, up to 65535, are scaled to 8 bits).
  The result is uint8 (N, H, W, 3): grey repeated to 3 channels, alpha dropped.
- labels: N integers (an (N, 1) column is flattened); one-hot rows are converted to
  class indices; lengths must match the images.

Example:
    >>> images = check_images(np.zeros((4, 28, 28), "float32"), name="x_train")
    >>> images.shape
    (4, 28, 28, 3)
"""

import logging

import numpy as np

from resnet_transfer.errors import DataError

__all__ = ["check_images", "check_labels"]

logger = logging.getLogger(__name__)


def _numeric(array: np.ndarray, name: str) -> None:
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise DataError(f"{name} must hold numbers (uint8, int or float). Received dtype {array.dtype}")


def _to_uint8(images: np.ndarray, name: str) -> np.ndarray:
    if images.dtype == np.uint8:
        return images
    if np.issubdtype(images.dtype, np.floating):
        finite = np.isfinite(images)
        if not finite.all():
            bad = np.argwhere(~finite)[0]
            raise DataError(
                f"{name} has a non-finite value (NaN or infinity) at index {tuple(int(i) for i in bad)}; "
                "replace or drop those images"
            )
    low, high = float(images.min(initial=0)), float(images.max(initial=0))
    if low < 0:
        raise DataError(f"{name} has negative pixel values (min {low:g}); images must be in [0, 1] or [0, 255]")
    if np.issubdtype(images.dtype, np.floating):
        scale = 255.0 if high <= 1.0 else 1.0
        if high > 255:
            raise DataError(f"{name} has float pixel values up to {high:g}; float images must be in [0, 1] or [0, 255]")
    elif high > 255:
        if high > 65535:
            raise DataError(f"{name} has integer pixel values up to {high:g}; images must be 8-bit or 16-bit")
        scale = 255.0 / 65535.0
    else:
        scale = 1.0
    return np.clip(np.rint(images.astype(np.float64) * scale), 0, 255).astype(np.uint8)


def check_images(images, *, name: str) -> np.ndarray:
    """Checks an image array and returns it as uint8 (N, H, W, 3); see the module's rules.

    Raises:
        DataError: a shape, dtype or value that is not an image array.
    """
    images = np.asarray(images)
    _numeric(images, name)
    if images.ndim == 4 and images.shape[-1] not in (1, 3, 4):
        raise DataError(
            f"{name} must have 1, 3 or 4 channels in its last axis (N, H, W, C). Received shape {images.shape}"
            + ("; channels-first arrays need np.moveaxis(x, 1, -1)" if images.shape[1] in (1, 3, 4) else "")
        )
    if images.ndim not in (3, 4):
        hint = ""
        if images.ndim == 2:
            side = int(round((images.shape[1] / 3) ** 0.5))
            hint = f"; flat rows need reshaping, for example x.reshape(-1, {side}, {side}, 3)" if side * side * 3 == images.shape[1] else "; flat rows need reshaping to (N, H, W, C)"
        raise DataError(f"{name} must be (N, H, W) grey or (N, H, W, C) images. Received shape {images.shape}{hint}")
    if min(images.shape[1:3]) < 1:
        raise DataError(f"{name} has images with no pixels. Received shape {images.shape}")
    images = _to_uint8(images, name)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.shape[-1] == 4:
        images = images[..., :3]
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return images


def check_labels(labels, *, name: str, count: int) -> np.ndarray:
    """Checks labels for ``count`` images and returns them as int64 (N,).

    Raises:
        DataError: a length that differs from the images, non-integer or negative labels.
    """
    labels = np.asarray(labels)
    _numeric(labels, name)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    elif labels.ndim == 2:
        is_one_hot = np.isin(labels, (0, 1)).all() and (labels.sum(axis=1) == 1).all()
        if not is_one_hot:
            raise DataError(
                f"{name} must be integer class labels (N,) or one-hot rows (N, C). Received shape {labels.shape} "
                "whose rows are not one-hot"
            )
        logger.info("%s is one-hot (%d classes): converted to class indices", name, labels.shape[1])
        labels = np.argmax(labels, axis=1)
    if labels.ndim != 1:
        raise DataError(f"{name} must be integer class labels of shape (N,). Received shape {labels.shape}")
    if len(labels) != count:
        raise DataError(
            f"{name} has {len(labels)} labels for {count} images; every image needs exactly one label"
        )
    if np.issubdtype(labels.dtype, np.floating):
        if not np.isfinite(labels).all() or not np.array_equal(labels, np.round(labels)):
            raise DataError(f"{name} must be whole-number class labels. Received non-integer values such as {labels[~np.isfinite(labels) | (labels != np.round(labels))][0]!r}")
    if len(labels) and labels.min() < 0:
        raise DataError(f"{name} must be class labels >= 0. Received {labels.min()}")
    return labels.astype(np.int64)
