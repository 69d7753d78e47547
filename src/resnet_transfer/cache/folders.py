"""The cache folder itself, as both the cache's writers (``store``, ``converted``) and its
housekeeping (``admin``) see it: where it is by default, how a writer names itself in the
partial entries it leaves, and how a folder is removed without any run ever reading it half
removed, and the one check of a stored feature entry (``read_feature_entry``). Nothing
here imports Keras, so ``resnet-transfer cache`` starts fast.

Example:
    >>> directory = default_cache_dir()
    >>> remove_folder(os.path.join(directory, digest))
"""

import json
import os
import re
import shutil
import socket
import time
from typing import Optional

import numpy as np

from resnet_transfer.files import hash_file

__all__ = ["default_cache_dir", "read_feature_entry", "remove_folder", "writer_tag"]


def default_cache_dir() -> str:
    """``$RESNET_TRANSFER_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/resnet-transfer/features``
    (``~/.cache/resnet-transfer/features`` without XDG_CACHE_HOME)."""
    if os.environ.get("RESNET_TRANSFER_CACHE_DIR"):
        return os.environ["RESNET_TRANSFER_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "resnet-transfer", "features")


def writer_tag() -> str:
    """This process as partial entries name their writer: its id and its host (letters and digits)."""
    return f"{os.getpid()}@{re.sub(r'[^A-Za-z0-9]', '', socket.gethostname())[:40]}"


def remove_folder(folder: str) -> None:
    """Removes a cache folder, renamed first (atomic), so that no run ever reads a
    half-removed entry; one that another process moved away already is left to it."""
    trash = f"{folder}.discarded-{os.getpid()}-{time.monotonic_ns()}"
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def read_feature_entry(folder: str, key: Optional[dict] = None) -> tuple:
    """(features as a read-only memory map, None), or (None, what is wrong) for the feature
    entry in ``folder``: its entry.json must be a JSON object that records ``key`` (when
    given, as JSON has it), the SHA-256 of features.npy and its shape."""
    try:
        with open(os.path.join(folder, "entry.json"), encoding="utf-8") as handle:
            entry = json.load(handle)
        if not isinstance(entry, dict):
            return None, "its entry.json is not a JSON object"
        if key is not None and entry.get("key") != key:
            return None, "its key does not match"
        path = os.path.join(folder, "features.npy")
        if hash_file(path) != entry.get("sha256"):
            return None, "its features do not match their recorded SHA-256"
        features = np.load(path, mmap_mode="r")
        if list(features.shape) != entry.get("shape"):
            return None, "its shape does not match"
        return features, None
    except (OSError, ValueError, UnicodeDecodeError) as error:
        return None, f"it cannot be read ({error})"
