"""Temporary image stores: where decoded images live while a process uses them.

Decoded folders and CSVs are memory-mapped files, not arrays in memory. They live
in one folder per process, ``<tmp>/resnet-transfer-images-<pid>-<random>``, removed
when the process exits. A process that was killed cannot remove its folder, so
every new store first removes the folders of processes that no longer exist.

Example:
    >>> folder = image_store_dir()
"""

import atexit
import logging
import os
import shutil
import tempfile

__all__ = ["image_store_dir", "remove_stale_stores"]

logger = logging.getLogger(__name__)

_PREFIX = "resnet-transfer-images-"
_own_store = None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def remove_stale_stores(root: str = None) -> list:
    """Removes image stores of processes that no longer run; returns the removed folders."""
    root = root or tempfile.gettempdir()
    removed = []
    for name in os.listdir(root):
        if not name.startswith(_PREFIX):
            continue
        pid_text = name[len(_PREFIX):].split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _process_alive(int(pid_text)):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            removed.append(os.path.join(root, name))
    if removed:
        logger.info("removed %d image store(s) left by killed runs", len(removed))
    return removed


def image_store_dir() -> str:
    """This process's image store folder (created on first use, removed at exit)."""
    global _own_store
    if _own_store is None or not os.path.isdir(_own_store):
        remove_stale_stores()
        _own_store = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-")
        # The memory maps stay readable after the files are gone on POSIX systems.
        atexit.register(shutil.rmtree, _own_store, ignore_errors=True)
    return _own_store
