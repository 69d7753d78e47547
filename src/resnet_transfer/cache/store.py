"""The feature cache's entries: a ``FeatureCache`` is a folder of them, one per
``FeatureKey.digest``. An entry is a folder ``<cache>/<key>/`` holding ``features.npy`` and
``entry.json`` (the key's parts, shape, dtype and the file's SHA-256). It is written under a
temporary name and renamed when complete, so an interrupted extraction never leaves an entry
that a later run would take as complete; an entry whose checksum does not match is
discarded with a warning and recomputed. Reading an entry marks it used; ``admin`` lists,
verifies and prunes entries.

Example:
    >>> cache = FeatureCache()
    >>> features = cache.load(key)  # None on a miss
    >>> features = cache.store(key, lambda path: np.save(path, computed))
"""

import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict
from typing import Optional

import numpy as np

from resnet_transfer.cache.folders import default_cache_dir, read_feature_entry, remove_folder, writer_tag
from resnet_transfer.cache.keys import FeatureKey
from resnet_transfer.errors import ConfigError
from resnet_transfer.files import hash_file, make_temporary_folder, write_json_atomic

__all__ = ["FeatureCache"]

logger = logging.getLogger(__name__)

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

    def load(self, key: FeatureKey) -> Optional[np.ndarray]:
        """Returns the stored features as a read-only memory map, or None on a miss.

        A malformed entry (unreadable, not an object, wrong checksum, shape or key) is
        treated as absent, with a warning, and moved out of the way so it can be stored again.
        """
        folder = self.entry_path(key)
        if not os.path.isdir(folder):
            return None
        features, problem = read_feature_entry(folder, json.loads(json.dumps(asdict(key))))
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
