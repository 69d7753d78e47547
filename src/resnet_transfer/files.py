"""Small file helpers: hashing and atomic writes.

Every artifact is written under a temporary name in its final folder and then
renamed, so that a killed process never leaves a half-written file under the
final name.
"""

import contextlib
import hashlib
import json
import math
import os
import tempfile
from typing import Iterator

__all__ = ["hash_file", "atomic_path", "write_text_atomic", "write_json_atomic", "json_safe", "first_line", "reserve_space",
           "make_temporary_folder"]

_CHUNK_BYTES = 1 << 22


def hash_file(path: str, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks (``algorithm`` is any hashlib name)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary path beside ``path``; on success renames it to ``path``.

    The temporary name keeps ``path``'s extension, because some writers (Keras's
    ``model.save``, matplotlib) choose the format from it. On an exception the
    temporary file is removed and ``path`` is left as it was.
    """
    folder, name = os.path.split(os.path.abspath(path))
    stem, extension = os.path.splitext(name)
    if name.endswith(".weights.h5"):  # Keras's save_weights accepts no other ending
        stem, extension = name[: -len(".weights.h5")], ".weights.h5"
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=f".partial{extension}")
    os.close(handle)
    os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts get the usual mode
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (``os.umask`` can only
    read it by setting it, and for that moment other threads would create files with mask 0)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)  # elsewhere: the briefest change, to the most private mask
    os.umask(mask)
    return mask


def make_temporary_folder(parent: str, prefix: str) -> str:
    """``tempfile.mkdtemp`` in ``parent``, with the mode the umask gives a new folder (mkdtemp
    makes it 0700, which would keep a shared cache's entries or an export from other users)."""
    folder = tempfile.mkdtemp(dir=parent, prefix=prefix)
    os.chmod(folder, 0o777 & ~_umask())
    return folder


def write_text_atomic(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` atomically."""
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)


def json_safe(value):
    """``value`` with every non-finite float (NaN, infinity) replaced by None: strict JSON has none."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def write_json_atomic(path: str, values: dict) -> None:
    """Writes ``values`` as indented, strict JSON (non-finite numbers as null) to ``path`` atomically."""
    write_text_atomic(path, json.dumps(json_safe(values), indent=2, allow_nan=False) + "\n")


def reserve_space(path: str) -> None:
    """Allocates the disk blocks of ``path`` at its current size (a new memory map's file is sparse).

    Writing into a memory-mapped file on a full disk kills the process with SIGBUS, with no
    message; reserving the space first turns that into an ``OSError`` (ENOSPC) that names the file.
    """
    with open(path, "r+b") as handle:
        size = os.fstat(handle.fileno()).st_size
        try:
            if size:
                os.posix_fallocate(handle.fileno(), 0, size)
        except OSError as error:
            raise OSError(error.errno, error.strerror, path) from error


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (or its type), for one-line error messages; a
    first line that ends in a colon takes the next non-empty line with it (Keras's "Example
    error message for object <...>:" would otherwise end on nothing)."""
    text = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not text:
        return type(error).__name__
    return f"{text[0]} {text[1]}" if text[0].endswith(":") and len(text) > 1 else text[0]
