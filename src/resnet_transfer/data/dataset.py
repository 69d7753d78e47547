"""``load_dataset``: any source to checked, split, limited and fitted arrays, in one pass.

The pipeline, in order, for every kind of source:

1. read: a reader (``readers.read_source``) lists the samples and the splits the
   source defines, and fingerprints what it read;
2. select: with ``classes``, only the chosen classes are kept, in every split;
   split: labels of val/test that are not training labels are skipped; a missing test
   split is held out from train (stratified, seeded), then a missing val split
   (stratified and seeded; MNIST holds out its LAST ``val_size`` images, as the seed
   recipe does);
3. limit: the first ``limit`` training and ``test_limit`` test images;
4. fit: the input size and resize mode are decided once (``resolve_geometry``), and
   arrays are fitted, files decoded into memory-mapped stores;
5. check: classes are decided after decoding, so a class with no readable training
   image is dropped and listed; fewer than two classes or an empty split stop here.

Images stay uint8 in [0, 255]; scaling belongs to the model.

Example:
    >>> dataset = load_dataset(DataConfig(limit=512, val_size=128, test_limit=256))
    >>> dataset.x_train.shape
    (512, 32, 32, 3)
"""

import dataclasses
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from sklearn.model_selection import train_test_split

from resnet_transfer.config import DataConfig
from resnet_transfer.data.images import decode_to_store, fit_images, image_size_of
from resnet_transfer.data.exclusion import exclude_samples, read_sample_list
from resnet_transfer.data.readers import SPLITS, RawData, Samples, read_source
from resnet_transfer.data.stores import image_store_dir
from resnet_transfer.errors import DataError

__all__ = [
    "Dataset", "load_dataset", "select_classes", "resolve_geometry", "resolve_size", "DEFAULT_IMAGE_SIZE",
    "SEED_IMAGE_SIZE",
]

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = 224  # every ResNet's ImageNet size
SEED_INPUT, SEED_IMAGE_SIZE = (28, 28), 32  # MNIST's digits, padded to 32 by the seed recipe


@dataclass
class Dataset:
    """Images (uint8, N x H x W x 3) and integer labels for each split.

    Attributes:
        class_names: names in the order of the model's outputs.
        source: the source's description, ``fingerprint``, ``image_size`` and ``resize``.
        skipped: ``(path, reason)`` of every input left out.
        ids: for each decoded split, what names each image for a user, row by row: its file's
            path, or its place in the source's arrays ("x_train[12]"); what ``--exclude`` takes.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple
    source: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)
    ids: dict = field(default_factory=dict)

    @property
    def image_shape(self) -> tuple:
        return tuple(self.x_test.shape[1:]) if self.x_train is None else tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def resolve_size(value, total: int, name: str) -> int:
    """A count (int >= 1) or a fraction (0 < float < 1) of ``total``, as a count leaving both sides non-empty."""
    count = int(round(value * total)) if isinstance(value, float) else value
    if not 0 < count < total:
        raise DataError(
            f"{name} must leave at least one image on each side of the split of {total} images "
            f"(a count from 1 to {total - 1}, or a fraction between 0 and 1). Received: {name}={value}"
        )
    return count


def _stratified_split(samples: Samples, size, seed: int, name: str) -> tuple:
    count = resolve_size(size, len(samples), name)
    try:
        kept, held = train_test_split(
            np.arange(len(samples)), test_size=count, stratify=samples.labels, random_state=seed, shuffle=True
        )
    except ValueError as error:
        raise DataError(
            f"cannot hold out {name}={size} stratified from {len(samples)} images ({error}); "
            "use a larger count or fraction, or more images per class"
        ) from error
    return samples.take(np.sort(kept)), samples.take(np.sort(held))


def _known_only(samples: Optional[Samples], classes: list, split: str, skipped: list) -> Optional[Samples]:
    if samples is None:
        return None
    known = set(classes)
    keep = [i for i, label in enumerate(samples.labels) if label in known]
    for i in sorted(set(range(len(samples))) - set(keep)):
        where = samples.names[i]
        skipped.append((where, f"label {samples.labels[i]!r} of the {split} split is not a training class"))
    return samples.take(keep)


def select_classes(class_order: list, wanted: tuple) -> list:
    """The classes ``wanted`` names (class names, or indices into ``class_order``), in ``class_order``'s order.

    A name wins over an index: for MNIST, whose classes are "0" to "9", both mean the same.

    Raises:
        DataError: an entry that is neither a class name nor an index, two entries for one
            class, or fewer than 2 classes.
    """
    chosen = {}
    for entry in wanted:
        if entry in class_order:
            name = entry
        elif entry.isdecimal() and int(entry) < len(class_order):
            name = class_order[int(entry)]
        else:
            shown = ", ".join(map(str, class_order[:20])) + (", ..." if len(class_order) > 20 else "")
            raise DataError(
                f"classes: {entry!r} is not a class of this data. Known classes: {shown} (or their indices 0 to "
                f"{len(class_order) - 1}). Received: classes={','.join(wanted)}"
            )
        if name in chosen:
            raise DataError(f"classes: {entry!r} and {chosen[name]!r} are the same class {name!r}; name it once. "
                            f"Received: classes={','.join(wanted)}")
        chosen[name] = entry
    if len(chosen) < 2:
        raise DataError(f"classes must keep at least 2 classes for training. Received: classes={','.join(wanted)}")
    return [name for name in class_order if name in chosen]


def _only(raw: RawData, classes: list) -> RawData:
    """``raw`` with the samples of ``classes`` only (what the user left out is not "skipped")."""
    keep = set(classes)
    splits = {name: None if samples is None else samples.take(i for i, label in enumerate(samples.labels) if label in keep)
              for name, samples in raw.splits.items()}
    return dataclasses.replace(raw, splits=splits, class_order=list(classes))


def _limited(samples: Samples, limit: Optional[int], name: str, detail: str = "") -> Samples:
    if limit is None:
        return samples
    if limit > len(samples):
        raise DataError(f"{name} must be at most {len(samples)}{detail}. Received: {name}={limit}")
    return samples.take(range(limit))


def _sampled(samples: Samples, limit: Optional[int], seed: int) -> Samples:
    """At most ``limit`` samples drawn with ``seed``, as balanced across classes as the data
    allows (a class-ordered folder's first ``limit`` images could all be one class)."""
    if limit is None or limit >= len(samples):
        return samples
    order = np.random.default_rng(seed).permutation(len(samples))
    seen = Counter()
    rank = np.empty(len(order), dtype=np.int64)
    for position, index in enumerate(order):
        rank[position] = seen[samples.labels[index]]
        seen[samples.labels[index]] += 1
    chosen = order[np.lexsort((np.arange(len(order)), rank))[:limit]]
    return samples.take(np.sort(chosen))


def _split(raw: RawData, classes: list, config: DataConfig, seed: int, skipped: list, limit_at_most: bool) -> dict:
    train = raw.splits["train"]
    val = _known_only(raw.splits.get("val"), classes, "val", skipped)
    test = _known_only(raw.splits.get("test"), classes, "test", skipped)
    if test is None:
        train, test = _stratified_split(train, config.test_size, seed, "test_size")
    val_size = raw.default_val_size if config.val_size is None else config.val_size
    if val is None and raw.validation == "last":
        count = resolve_size(val_size, len(train), "val_size")
        train, val = train.take(range(len(train) - count)), train.take(range(len(train) - count, len(train)))
    elif val is None:
        train, val = _stratified_split(train, val_size, seed, "val_size")
    detail = " (training images left after holding out the validation and test images)"
    return {
        "train": _sampled(train, config.limit, seed) if limit_at_most else _limited(train, config.limit, "limit", detail),
        "val": val,
        "test": _limited(test, config.test_limit, "test_limit"),
    }


def resolve_geometry(first_size: Optional[tuple], config: DataConfig, default_image_size: int = DEFAULT_IMAGE_SIZE) -> tuple:
    """The input side and resize mode, decided once: 28x28 images get the seed recipe's
    32 px with padding; everything else ``default_image_size`` stretched, unless set."""
    seed_like = first_size is not None and tuple(first_size[:2]) == SEED_INPUT
    size = config.image_size or (SEED_IMAGE_SIZE if seed_like else default_image_size)
    return size, config.resize or ("pad" if seed_like and size == SEED_IMAGE_SIZE else "stretch")


def _first_size(samples: Samples) -> Optional[tuple]:
    if samples.images is not None:
        return tuple(samples.images.shape[1:3])
    for path in samples.paths:
        size = image_size_of(path)
        if size is not None:
            return size[1], size[0]
    return None


def _decode(samples: Samples, size: int, resize: str, skipped: list) -> tuple:
    """(images, label names, sample names) of the readable samples."""
    if samples.images is not None:
        return fit_images(samples.images, size=size, resize=resize), samples.labels, samples.names
    images, kept, unreadable = decode_to_store(samples.paths, len(samples), size=size, resize=resize, folder=image_store_dir())
    skipped += unreadable
    return images, [samples.labels[i] for i in kept], [os.path.abspath(samples.paths[i]) for i in kept]


def _drop_unreadable_classes(decoded: dict, classes: list, skipped: list) -> list:
    counts = Counter(decoded["train"][1])
    readable = [name for name in classes if counts[name] > 0]
    for name in sorted(set(classes) - set(readable)):
        skipped.append((name, f"class {name!r} dropped: none of its training images is readable"))
    return readable


def _indexed(images, labels: list, names: list, classes: list, split: str, skipped: list) -> tuple:
    """(images, class indices, sample names) of the samples whose class is kept."""
    index = {name: i for i, name in enumerate(classes)}
    keep = np.array([label in index for label in labels], dtype=bool)
    if not keep.all():
        for label in sorted(set(np.asarray(labels, dtype=object)[~keep])):
            skipped.append((label, f"{int(np.sum(np.asarray(labels, dtype=object) == label))} {split} image(s) of dropped class {label!r}"))
        images = images[keep]
    return (images, np.array([index[label] for label, kept in zip(labels, keep) if kept], dtype=np.int64),
            [name for name, kept in zip(names, keep) if kept])


def _check_strict(config: DataConfig, skipped: list) -> None:
    if config.strict and skipped:
        path, reason = skipped[0]
        raise DataError(
            f"--strict: {len(skipped)} input(s) would be skipped, first {path}: {reason}. "
            "Fix or remove them, or run without --strict to skip and list them in skipped.csv"
        )


def load_dataset(
    config: DataConfig,
    *,
    seed: int = 0,
    default_image_size: int = DEFAULT_IMAGE_SIZE,
    class_names: Optional[tuple] = None,
    splits: tuple = SPLITS,
    limit_at_most: bool = False,
) -> Dataset:
    """Loads, splits, limits, fits and checks the data set that ``config`` names.

    Args:
        config: the data settings.
        seed: the seed of the stratified splits.
        default_image_size: the input side when neither the config nor 28x28 images decide it.
        class_names: the classes of an existing run (evaluate, export); None decides them
            from the readable training images.
        splits: the splits to decode (the others are None in the result); the split
            itself is always computed from all samples, so a test split is the run's.
        limit_at_most: take ``limit`` as "at most": a seeded sample, balanced across
            classes, for ``probe`` (a larger limit keeps every image), instead of the first
            ``limit`` training images and refusing a limit larger than the data.

    Raises:
        DataError: the data is missing or unreadable, fewer than 2 classes, an empty split,
            a limit larger than the data, or (with ``strict``) any input that would be skipped.
    """
    skipped: list = []
    raw = read_source(config, skipped=skipped)
    _check_strict(config, skipped)
    if config.exclude is not None:
        raw = exclude_samples(raw, read_sample_list(config.exclude), source=config.exclude)
    if config.classes is not None:
        raw = _only(raw, select_classes(list(raw.class_order), config.classes))
        logger.info("classes: %s (--classes)", ", ".join(map(str, raw.class_order)))
    classes = list(class_names) if class_names is not None else list(raw.class_order)
    if len(classes) < 2:
        raise DataError(f"training needs at least 2 classes; {config.source!r} has {len(classes)}: {classes}")
    parts = _split(raw, classes, config, seed, skipped, limit_at_most)
    size, resize = resolve_geometry(_first_size(parts["train"]), config, default_image_size)
    logger.info("preparing %s images at %dx%d (%s)", " + ".join(str(len(parts[name])) for name in splits), size, size, resize)
    decoded = {name: _decode(parts[name], size, resize, skipped) for name in splits}
    if class_names is None:
        classes = _drop_unreadable_classes(decoded, classes, skipped)
        if len(classes) < 2:
            raise DataError(
                f"training needs at least 2 classes with readable images; {config.source!r} has {len(classes)}: "
                f"{classes} (see the skipped inputs: {skipped[:3]})"
            )
    arrays = {name: _indexed(*decoded[name], classes, name, skipped) for name in splits}
    _check_strict(config, skipped)
    for name in splits:
        if len(arrays[name][1]) == 0:
            raise DataError(f"the {name} split of {config.source!r} has no readable images; first skipped: {skipped[:3]}")
    if skipped:
        logger.warning("%d input(s) skipped (listed in skipped.csv of the run directory)", len(skipped))
    empty = (None, None)
    return Dataset(
        *arrays.get("train", empty)[:2], *arrays.get("val", empty)[:2], *arrays.get("test", empty)[:2],
        class_names=tuple(classes),
        source={**raw.description, "fingerprint": raw.fingerprint, "image_size": size, "resize": resize},
        skipped=skipped,
        ids={name: arrays[name][2] for name in splits},
    )
