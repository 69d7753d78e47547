"""Features: run a frozen backbone once and keep its outputs on disk.

With the backbone frozen, every epoch of the article's recipe recomputes the same
backbone outputs. ``cached_features`` computes them once per image set, stores
them in a cache entry keyed by everything that changes them, and hands back a
read-only memory map, so a data set's features never have to fit in memory.

A cache entry is a folder ``<cache>/<key>/`` holding ``features.npy`` and
``entry.json`` (the key's parts, shape, dtype and the file's SHA-256). It is
written under a temporary name and renamed when complete, so an interrupted
extraction never leaves an entry that a later run would take as complete; an
entry whose checksum does not match is discarded with a warning and recomputed.
Reading an entry marks it used; ``cache_admin`` lists, verifies and prunes entries.

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
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Optional

import keras
import numpy as np

from resnet_transfer.errors import ConfigError
from resnet_transfer.training.distribution import local_predict, predicts_locally
from resnet_transfer.training.cache_admin import default_cache_dir, remove_folder, writer_tag
from resnet_transfer.files import atomic_path, hash_file, make_temporary_folder, reserve_space, write_json_atomic
from resnet_transfer.verbosity import shows_progress

__all__ = [
    "FeatureKey",
    "FeatureCache",
    "fingerprint_images",
    "extract_features",
    "cached_features",
    "ChunkedExtraction",
    "default_cache_dir",
]

logger = logging.getLogger(__name__)

# 2: preprocessing made of Keras layers; 3: features pooled as the head pools them; 4: the cut is in the key;
# 5: the runtime that computed them, and the precision it computed in, are in the key
CACHE_FORMAT = 5
_FINGERPRINT_CHUNK = 4096


def fingerprint_images(images: np.ndarray) -> str:
    """SHA-256 over the images' shape, dtype and pixels, read chunk by chunk."""
    digest = hashlib.sha256(f"{images.shape}|{images.dtype}".encode())
    for start in range(0, len(images), _FINGERPRINT_CHUNK):
        digest.update(np.ascontiguousarray(images[start : start + _FINGERPRINT_CHUNK]).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class FeatureKey:
    """Everything that changes a backbone's outputs for a set of images.

    Attributes:
        backbone: registry name.
        weights: the weights' identity (``backbones.weights_identity``).
        preprocess: preprocessing mode.
        pooling: the head's pooling applied to the feature map ("flatten", "avg", "max").
        input_shape: (height, width, channels) the backbone sees.
        images: ``fingerprint_images`` of the images.
        dtype: stored dtype.
        keras_backend: the backend that computed them (numerics differ slightly).
        feature_layer: the stage whose end the features come from ("conv2" to "conv5").
        runtime: what ran the backbone: "keras", or a converted backbone's runtime,
            "openvino", "tflite" or "onnx" (``runtimes``; within 1e-5 of Keras's features).
        precision: the dtype the backbone computed in ("float32"; "bfloat16" or "float16"
            under ``--mixed-precision``).
    """

    backbone: str
    weights: str
    preprocess: str
    pooling: str
    input_shape: tuple
    images: str
    dtype: str
    keras_backend: str
    feature_layer: str = "conv5"
    runtime: str = "keras"
    precision: str = "float32"
    format: int = CACHE_FORMAT

    @classmethod
    def create(cls, *, backbone: str, weights: str, preprocess: str, pooling: str, images: np.ndarray,
               dtype: str, feature_layer: str = "conv5", runtime: str = "keras",
               precision: str = "float32") -> "FeatureKey":
        return cls(
            backbone=backbone,
            weights=weights,
            preprocess=preprocess,
            pooling=pooling,
            input_shape=tuple(int(size) for size in images.shape[1:]),
            images=fingerprint_images(images),
            dtype=dtype,
            keras_backend=keras.backend.backend(),
            feature_layer=feature_layer,
            runtime=runtime,
            precision=precision,
        )

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:32]


class FeatureCache:
    """A folder of feature entries keyed by ``FeatureKey.digest``.

    Args:
        directory: the cache folder (None: ``default_cache_dir()``).
    """

    def __init__(self, directory: Optional[str] = None):
        self.directory = directory or default_cache_dir()

    def entry_path(self, key: FeatureKey) -> str:
        return os.path.join(self.directory, key.digest)

    def chunks_path(self, key: FeatureKey) -> str:
        """Where the entry's extraction keeps its finished chunks until it is complete."""
        return os.path.join(self.directory, f".{key.digest}.chunks")

    def check_writable(self, *, no_cache_hint: bool = True) -> None:
        """Raises ``ConfigError`` when entries cannot be stored here (a file, or a read-only place)."""
        try:
            os.makedirs(self.directory, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".write-check-"):
                pass
        except OSError as error:
            raise ConfigError(
                f"cache_dir {self.directory!r} cannot hold feature files ({error.strerror}); choose a writable "
                "--cache-dir" + (", or pass --no-cache to run the backbone in every epoch" if no_cache_hint else "")
            ) from error

    def _read_entry(self, key: FeatureKey, folder: str):
        """The entry's features, or the reason it is not usable."""
        try:
            with open(os.path.join(folder, "entry.json"), encoding="utf-8") as handle:
                entry = json.load(handle)
            if not isinstance(entry, dict):
                return None, "its entry.json is not a JSON object"
            path = os.path.join(folder, "features.npy")
            if entry.get("key") != json.loads(json.dumps(asdict(key))):
                return None, "its key does not match"
            if hash_file(path) != entry.get("sha256"):
                return None, "its features do not match their recorded SHA-256"
            features = np.load(path, mmap_mode="r")
            if list(features.shape) != entry.get("shape"):
                return None, "its shape does not match"
            return features, None
        except (OSError, ValueError, UnicodeDecodeError) as error:
            return None, f"it cannot be read ({error})"

    def load(self, key: FeatureKey) -> Optional[np.ndarray]:
        """Returns the stored features as a read-only memory map, or None on a miss.

        A malformed entry (unreadable, not an object, wrong checksum, shape or key) is
        treated as absent, with a warning, and moved out of the way so it can be stored again.
        """
        folder = self.entry_path(key)
        if not os.path.isdir(folder):
            return None
        features, problem = self._read_entry(key, folder)
        if problem is None:
            try:
                os.utime(folder)  # its last use, for `resnet-transfer cache prune`
            except OSError:
                pass  # a read-only cache
            return features
        warnings.warn(f"feature cache entry {folder} is discarded and will be recomputed: {problem}", stacklevel=2)
        self._discard(folder)
        return None

    def _discard(self, folder: str) -> None:
        try:
            remove_folder(folder)
        except OSError:
            pass  # a read-only cache, or another process's doing: left as it is

    def store_folder(self, digest: str, fill) -> str:
        """Creates the folder ``<cache>/<digest>/`` atomically: ``fill(partial)`` writes its
        files into a temporary folder, which is renamed into place only if no folder is there;
        when another process won the race, its complete folder is kept and this copy is
        discarded. Returns the folder's path."""
        os.makedirs(self.directory, exist_ok=True)
        # The writer's process id in the name: `cache prune` removes only partial entries whose writer is gone.
        partial = make_temporary_folder(self.directory, prefix=f".{digest}.partial-{writer_tag()}-")
        final = os.path.join(self.directory, digest)
        try:
            fill(partial)
            try:
                os.rename(partial, final)  # fails if another writer's entry (a non-empty folder) is there
            except OSError:
                if not os.path.isdir(final):
                    raise
                logger.debug("cache entry %s was stored by another run meanwhile; using it", final)
        finally:
            if os.path.isdir(partial):
                shutil.rmtree(partial, ignore_errors=True)
        return final

    def store(self, key: FeatureKey, write_features) -> np.ndarray:
        """Creates an entry atomically; ``write_features(path)`` must write ``features.npy``.

        Safe with concurrent writers: the entry is renamed into place only if no entry
        is there; when another process won the race, its complete entry is kept and
        this copy is discarded.

        Returns:
            The stored features as a read-only memory map.
        """
        def fill(partial: str) -> None:
            path = os.path.join(partial, "features.npy")
            write_features(path)
            shape = list(np.load(path, mmap_mode="r").shape)
            write_json_atomic(
                os.path.join(partial, "entry.json"),
                {"key": asdict(key), "shape": shape, "sha256": hash_file(path), "created": time.time()},
            )

        final = self.store_folder(key.digest, fill)
        features = self.load(key)
        if features is None:
            raise OSError(f"feature cache entry {final} could not be read back after storing it")
        return features


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
