"""The feature cache's housekeeping: ``resnet-transfer cache list|verify|prune``.

A cache folder (``store.FeatureCache``) holds complete entries ``<digest>/``
(``features.npy`` and ``entry.json``; or, for a backbone converted for another runtime
(``runtimes``), ``backbone.tflite``, ``backbone.onnx`` or OpenVINO's ``backbone.xml`` and
``backbone.bin``, and ``entry.json``), the finished
chunks of extractions under way or killed (``.<digest>.chunks/``, which the next extraction
goes on from), and may hold what killed runs left: partial entries
``.<digest>.partial-<pid>@<host>-*`` being assembled, and ``*.discarded-*`` folders whose
removal was cut short. A run that reads an entry
marks it used (the folder's modification time), so ``prune`` can evict the least
recently used entries first. Folders whose names are not the cache's are never touched.
Nothing here imports Keras, so ``resnet-transfer cache`` starts fast.

Example:
    >>> entries = list_entries("~/.cache/resnet-transfer/features")
    >>> removed = prune(directory, max_bytes=20 * 1024**3)
"""

import json
import os
import re
import time
from dataclasses import dataclass
from typing import Optional


from resnet_transfer.cache.converted import CONVERTED_FILES, converted_digest
from resnet_transfer.cache.folders import read_feature_entry, remove_folder, writer_tag
from resnet_transfer.errors import ConfigError

__all__ = ["CacheEntry", "list_entries", "verify_entry", "prune", "discard"]

# Only these names are the cache's: anything else in the folder is left alone.
_ENTRY = re.compile(r"^[0-9a-f]{32}$")
_PARTIAL = re.compile(r"^\.[0-9a-f]{32}\.partial-(?:(\d+)(?:@([A-Za-z0-9]+))?-)?")
_CHUNKS = re.compile(r"^\.[0-9a-f]{32}\.chunks$")
_DISCARDED = re.compile(r"^\.?[0-9a-f]{32}.*\.discarded-\d+-\d+$")
# What a complete entry holds: features, or a converted backbone.
_CONTENTS = ({"entry.json", "features.npy"}, *({"entry.json", *files} for files in CONVERTED_FILES.values()))


@dataclass
class CacheEntry:
    """One folder of the cache.

    Attributes:
        path: the folder.
        state: "complete", "partial" (an entry being assembled), "chunks" (an extraction's
            finished chunks), "discarded" (a removal cut short) or "damaged" (no readable
            entry.json).
        size: bytes on disk.
        last_used: when a run last read or wrote it (seconds since the epoch).
        key: the entry's key fields (complete entries).
        shape: the features' shape (complete entries).
        writer: the process that was writing a partial entry (None: not recorded).
        host: the machine of that process (None: not recorded).
    """

    path: str
    state: str
    size: int
    last_used: float
    key: Optional[dict] = None
    shape: Optional[list] = None
    writer: Optional[int] = None
    host: Optional[str] = None


def _names(folder: str) -> list:
    try:
        return os.listdir(folder)
    except OSError:
        return ["?"]  # unreadable: not touched


def _size(folder: str) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def _check_directory(directory: str) -> None:
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ConfigError(f"cache_dir {directory!r} is a file, not a cache folder; give the folder of the feature "
                          "cache (--cache-dir)")


def list_entries(directory: str) -> list:
    """Every folder of the cache at ``directory``, complete entries first, each by last use
    (oldest first); [] when there is no cache there.

    Raises:
        ConfigError: ``directory`` is a file.
    """
    _check_directory(directory)
    if not os.path.isdir(directory):
        return []
    entries = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if not os.path.isdir(path):
            continue  # e.g. a write check's temporary file
        try:
            used = os.path.getmtime(path)
        except OSError:
            continue  # removed meanwhile
        partial, discarded = _PARTIAL.match(name), _DISCARDED.match(name)
        if not (partial or discarded or _CHUNKS.match(name) or _ENTRY.match(name)):
            continue  # not the cache's: never listed, never removed
        if _ENTRY.match(name) and not any(set(_names(path)) <= contents for contents in _CONTENTS):
            continue  # named like an entry, but holds other files: not the cache's either
        if partial:
            entries.append(CacheEntry(path, "partial", _size(path), used, writer=int(partial[1]) if partial[1] else None,
                                      host=partial[2]))
        elif _CHUNKS.match(name):
            entries.append(CacheEntry(path, "chunks", _size(path), used))
        elif discarded:
            entries.append(CacheEntry(path, "discarded", _size(path), used))
        else:
            try:
                with open(os.path.join(path, "entry.json"), encoding="utf-8") as handle:
                    record = json.load(handle)
                key = record["key"]
                shape = None if "file" in record else record["shape"]  # a converted backbone has no shape
                if not isinstance(key, dict):
                    raise TypeError("key is not an object")
                entries.append(CacheEntry(path, "complete", _size(path), used, key=key, shape=shape))
            except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
                entries.append(CacheEntry(path, "damaged", _size(path), used))
    order = {"complete": 0, "damaged": 1, "chunks": 2, "partial": 3, "discarded": 4}
    return sorted(entries, key=lambda entry: (order[entry.state], entry.last_used))


def verify_entry(entry: CacheEntry) -> Optional[str]:
    """Re-checks a complete entry's features (or converted backbone) against their recorded
    SHA-256 and shape; returns what is wrong (None: nothing). A run that met such an entry
    would discard and recompute it; ``discard`` does the first half now."""
    try:
        with open(os.path.join(entry.path, "entry.json"), encoding="utf-8") as handle:
            record = json.load(handle)
        if isinstance(record, dict) and isinstance(record.get("file"), str) and record["file"] in CONVERTED_FILES:
            if converted_digest(entry.path, record["file"]) != record.get("sha256"):
                return "its converted backbone does not match its recorded SHA-256"
            return None
    except (OSError, ValueError, UnicodeDecodeError) as error:
        return f"it cannot be read ({error})"
    return read_feature_entry(entry.path)[1]


def _writer_gone(entry: CacheEntry, now: float) -> bool:
    """Whether a partial entry's extraction has ended (its process, on this machine, is
    gone; one of unknown writer, or of another machine, counts as abandoned after a day)."""
    if entry.writer is None or entry.host != writer_tag().partition("@")[2]:
        return now - entry.last_used > 86400
    try:
        os.kill(entry.writer, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # another user's live process
    return False


def prune(directory: str, *, older_than_days: Optional[float] = None, max_bytes: Optional[int] = None,
          now: Optional[float] = None) -> list:
    """Removes what killed runs left (partial entries whose process is gone, cut-short
    removals, damaged entries, and the chunks of extractions that no process has added to
    for a day: one that is running adds a chunk every few minutes), then complete entries
    unused for ``older_than_days``, then the least recently used entries until the cache
    holds at most ``max_bytes``.

    Returns:
        The removed ``CacheEntry``s.
    """
    now = time.time() if now is None else now
    entries = list_entries(directory)
    removed = [entry for entry in entries if entry.state in ("discarded", "damaged")
               or (entry.state == "partial" and _writer_gone(entry, now))
               or (entry.state == "chunks" and now - entry.last_used > 86400)]
    complete = [entry for entry in entries if entry.state == "complete"]  # least recently used first
    if older_than_days is not None:  # complete entries unused for that long (chunks: never under a day, see above)
        removed += [entry for entry in complete if now - entry.last_used > older_than_days * 86400]
    if max_bytes is not None:
        kept = [entry for entry in complete if entry not in removed]
        total = sum(entry.size for entry in entries if entry not in removed)
        for entry in kept:
            if total <= max_bytes:
                break
            removed.append(entry)
            total -= entry.size
    for entry in removed:
        discard(entry)
    return removed


def discard(entry: CacheEntry) -> None:
    """Removes an entry's folder (``remove_folder``)."""
    remove_folder(entry.path)
