"""Features: run a frozen backbone once and keep its outputs on disk. With the backbone
frozen, every epoch of the article's recipe recomputes the same backbone outputs.
``cached_features`` computes them once per image set, chunk by chunk (``ChunkedExtraction``,
so a killed extraction goes on where it stopped), stores them in a cache entry keyed by
everything that changes them (``keys.FeatureKey``, ``store.FeatureCache``), and hands back a
read-only memory map, so a data set's features never have to fit in memory.

Example:
    >>> key = FeatureKey.create(backbone="resnet50", weights="random:seed=0", preprocess="seed", pooling="flatten",
    ...                         images=x_train, dtype="float32")
    >>> features, status, seconds = cached_features(extractor, x_train, key=key, cache=FeatureCache())
"""

import errno
import hashlib
import io
import json
import logging
import os
import shutil
import time
from typing import Optional

import keras
import numpy as np

from resnet_transfer.cache.keys import FeatureKey
from resnet_transfer.cache.store import FeatureCache
from resnet_transfer.files import atomic_path, hash_file, reserve_space, write_json_atomic
from resnet_transfer.inference import local_predict, predicts_locally
from resnet_transfer.verbosity import shows_progress

__all__ = ["extract_features", "predict_in_batches", "ChunkedExtraction", "cached_features"]

logger = logging.getLogger(__name__)


def extract_features(
    extractor: keras.Model, images: np.ndarray, path: str, *, batch_size: int = 256, chunk_size: int = 4096, dtype: str = "float32"
) -> None:
    """Runs ``extractor`` in inference mode over ``images`` and writes a ``.npy`` at ``path``.

    Images are read and features written ``chunk_size`` at a time into a memory-mapped
    file, so memory stays bounded by the chunk, not by the data set.
    """
    count = len(images)
    output_shape = tuple(int(size) for size in extractor.output_shape[1:])
    features = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(count, *output_shape))
    reserve_space(path)
    progress = keras.utils.Progbar(count, unit_name="image", verbose=1 if shows_progress() else 0)
    for start in range(0, count, chunk_size):
        chunk = images[start : start + chunk_size]
        features[start : start + len(chunk)] = predict_in_batches(extractor, chunk, batch_size)
        progress.add(len(chunk))
    features.flush()
    del features


def predict_in_batches(extractor, chunk: np.ndarray, batch_size: int) -> np.ndarray:
    """``extractor``'s outputs for ``chunk``: a Keras model's in inference mode, ``batch_size``
    images a call, or a converted backbone's (``runtimes.choose_runtime``)."""
    if not isinstance(extractor, keras.Model):
        return extractor.predict_chunk(chunk)
    if predicts_locally():  # on a CPU, and on a cluster's worker, which extracts its own chunks
        return local_predict(extractor, chunk, batch_size=batch_size)  # traced once for any number of rows
    # A last, smaller batch would make Keras compile the backbone again for its shape
    # (seconds for a ResNet152); padding it to a full batch costs less than that.
    chunk = np.asarray(chunk, dtype="float32")
    padding = -len(chunk) % batch_size
    padded = np.concatenate([chunk, np.zeros((padding, *chunk.shape[1:]), chunk.dtype)]) if padding else chunk
    return extractor.predict(padded, batch_size=batch_size, verbose=0)[: len(chunk)]


class ChunkedExtraction:
    """An extraction in progress, chunk by chunk: ``<cache>/.<digest>.chunks/`` holds
    ``chunk-<start>-<stop>.npy`` with ``chunk-<start>-<stop>.json`` (its rows and SHA-256,
    written after it). A killed extraction keeps its finished chunks, and the next one
    computes only the others; several processes (``--shard i/n``) may fill one folder.

    Args:
        folder: the chunks' folder.
        count: rows (images) in all.
        chunk_size: rows per chunk.
    """

    def __init__(self, folder: str, *, count: int, chunk_size: int, feature_shape: tuple, dtype: str):
        self.folder, self.count, self.chunk_size = folder, count, chunk_size
        self.feature_shape, self.dtype = tuple(feature_shape), np.dtype(dtype)
        self.bounds = [(start, min(start + chunk_size, count)) for start in range(0, count, chunk_size)]

    def path(self, start: int, stop: int) -> str:
        return os.path.join(self.folder, f"chunk-{start:09d}-{stop:09d}.npy")

    def finished(self, start: int, stop: int) -> bool:
        """Whether the chunk is there, matches its recorded SHA-256, and has the rows,
        feature shape and dtype this extraction writes."""
        path = self.path(start, stop)
        try:
            with open(path[: -len(".npy")] + ".json", encoding="utf-8") as handle:
                record = json.load(handle)
            if not isinstance(record, dict) or record.get("sha256") != hash_file(path):
                return False
            stored = np.load(path, mmap_mode="r")
            return stored.shape == (stop - start, *self.feature_shape) and stored.dtype == self.dtype
        except (OSError, ValueError, UnicodeDecodeError):
            return False

    def write(self, start: int, stop: int, features: np.ndarray) -> None:
        """Stores one chunk: the array, then (atomically) its record; hashed from memory."""
        os.makedirs(self.folder, exist_ok=True)
        path = self.path(start, stop)
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(features, dtype=self.dtype))
        try:
            with atomic_path(path) as temporary:
                with open(temporary, "wb") as handle:
                    handle.write(buffer.getbuffer())
        except OSError as error:  # a full disk: name the folder
            raise OSError(error.errno or errno.ENOSPC, error.strerror or str(error), self.folder) from error
        write_json_atomic(path[: -len(".npy")] + ".json",
                          {"rows": stop - start, "sha256": hashlib.sha256(buffer.getbuffer()).hexdigest()})

    def assemble(self, path: str) -> None:
        """Writes every chunk, in order, into one ``.npy`` at ``path``."""
        features = np.lib.format.open_memmap(path, mode="w+", dtype=self.dtype, shape=(self.count, *self.feature_shape))
        reserve_space(path)
        for start, stop in self.bounds:
            features[start:stop] = np.load(self.path(start, stop), mmap_mode="r")
        features.flush()
        del features

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def cached_features(
    extractor: keras.Model,
    images: np.ndarray,
    *,
    key: FeatureKey,
    cache: FeatureCache,
    batch_size: int = 256,
    chunk_size: int = 4096,
    shard: Optional[tuple] = None,
    assemble: bool = True,
) -> tuple:
    """The backbone features of ``images``, from the cache or computed and stored.

    The backbone runs chunk by chunk (``ChunkedExtraction``): a killed extraction goes
    on from its first unfinished chunk, and never computes a finished one again. With
    ``shard`` (i, n) only the chunks i, i + n, i + 2n, ... are computed here; the entry
    is assembled by whichever shard finds every chunk finished (``assemble=False``: never
    by this one; the chief of a cluster assembles).

    Returns:
        ``(features, status, backbone_seconds)``: a read-only memory map, "hit" or
        "miss", and the seconds spent running the backbone (0 on a hit); with a shard
        whose fellow shards have not finished yet, ``(None, "partial", seconds)``.
    """
    features = cache.load(key)
    if features is not None:
        return features, "hit", 0.0
    chunks = ChunkedExtraction(cache.chunks_path(key), count=len(images), chunk_size=chunk_size, dtype=key.dtype,
                               feature_shape=tuple(int(size) for size in extractor.output_shape[1:]))
    mine = chunks.bounds if shard is None else chunks.bounds[shard[0] :: shard[1]]
    todo = [bounds for bounds in mine if not chunks.finished(*bounds)]
    damaged = [bounds for bounds in todo if os.path.exists(chunks.path(*bounds))]
    if damaged:
        logger.warning("features: %d chunk(s) in %s do not match their recorded SHA-256 and are computed again",
                       len(damaged), chunks.folder)
    if len(todo) < len(mine):
        logger.info("features: %d of %d chunks were finished by an earlier extraction; %d to compute",
                    len(mine) - len(todo), len(mine), len(todo))
    progress = keras.utils.Progbar(sum(stop - start for start, stop in todo), unit_name="image",
                                    verbose=1 if shows_progress() else 0)
    started = time.perf_counter()
    for start, stop in todo:
        chunks.write(start, stop, predict_in_batches(extractor, images[start:stop], batch_size))
        progress.add(stop - start)
    seconds = time.perf_counter() - started
    missing = [bounds for bounds in chunks.bounds if bounds not in mine and not chunks.finished(*bounds)]
    features = cache.load(key)  # a fellow shard may have assembled the entry meanwhile
    if features is None and (missing or not assemble):
        return None, "partial", seconds
    if features is None:
        try:
            features = cache.store(key, chunks.assemble)
        except FileNotFoundError:  # a fellow shard assembled it and removed the chunks while this one read them
            features = cache.load(key)
            if features is None:
                raise
    chunks.remove()
    return features, "miss", seconds
