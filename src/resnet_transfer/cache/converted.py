"""Converted-backbone entries: a backbone converted for another runtime (``runtimes``) is
kept in the feature cache as an entry of its own, ``<cache>/<conversion_digest>/``, holding
the file its runtime opens (``RUNTIME_FILES``; OpenVINO's weights lie beside it,
``CONVERTED_FILES``) and ``entry.json``: its ``conversion_key``, the files' SHA-256
(``converted_digest``) and the check of its outputs against Keras's. ``read_conversion``
hands back a stored one's record, checked against its key and files, and moves a damaged one
out of the way. Nothing here imports Keras, so ``resnet-transfer cache`` starts fast.

Example:
    >>> conversion = conversion_key(key, "openvino")
    >>> record = read_conversion(os.path.join(cache.directory, conversion_digest(conversion)), conversion, "openvino")
"""

import json
import logging
import os
from typing import Optional

from resnet_transfer.cache.folders import remove_folder
from resnet_transfer.files import hash_file

__all__ = ["CONVERTED_FILES", "RUNTIME_FILES", "converted_digest", "past_checks", "read_conversion"]

logger = logging.getLogger(__name__)

# A converted backbone's files, by the name of the one a runtime opens (entry.json's "file").
CONVERTED_FILES = {"backbone.tflite": ("backbone.tflite",), "backbone.onnx": ("backbone.onnx",),
                   "backbone.xml": ("backbone.xml", "backbone.bin")}
# The file each runtime opens (CONVERTED_FILES: OpenVINO's weights lie beside it).
RUNTIME_FILES = {"openvino": "backbone.xml", "tflite": "backbone.tflite", "onnx": "backbone.onnx",
                 "openvino-int8": "backbone.xml"}


def converted_digest(folder: str, file: str) -> str:
    """The SHA-256 of a converted backbone whose runtime opens ``file``: its one file's, or
    its files' joined by "+" (OpenVINO's model and weights)."""
    return "+".join(hash_file(os.path.join(folder, name)) for name in CONVERTED_FILES[file])


def past_checks(directory: str, runtime: str, *, cores: int) -> list:
    """The checks of the backbones converted for ``runtime`` in the cache ``directory`` on a
    machine with ``cores`` cores (each entry.json's "check": both speeds, and the seconds its
    converting and checking took), the newest first. Unreadable entries are passed over
    (``cache verify`` names them)."""
    checks = []
    for name in os.listdir(directory) if os.path.isdir(directory) else ():
        try:
            with open(os.path.join(directory, name, "entry.json"), encoding="utf-8") as handle:
                record = json.load(handle)
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if not isinstance(record, dict):
            continue
        check = record.get("check")
        converted_for = (record.get("key") or {}).get("converted_for") if isinstance(record.get("key"), dict) else None
        if record.get("file") == RUNTIME_FILES[runtime] and isinstance(check, dict) and check.get("cores") == cores \
                and check.get("passed") is True and converted_for in (None, runtime):  # (no INT8 one for OpenVINO)
            created = record.get("created")
            checks.append((created if isinstance(created, (int, float)) else 0, check))
    return [check for _, check in sorted(checks, key=lambda pair: -pair[0])]


def read_conversion(folder: str, key: dict, runtime: str) -> Optional[dict]:
    """A stored conversion's entry.json, or None (absent, or damaged: then moved out of the way)."""
    if not os.path.isdir(folder):
        return None
    try:
        with open(os.path.join(folder, "entry.json"), encoding="utf-8") as handle:
            record = json.load(handle)
        if (isinstance(record, dict) and record.get("key") == json.loads(json.dumps(key)) and isinstance(record.get("check"), dict)
                and converted_digest(folder, RUNTIME_FILES[runtime]) == record.get("sha256")):
            try:
                os.utime(folder)  # its last use, for `resnet-transfer cache prune`
            except OSError:
                pass
            return record
        problem = "its record or its file does not match"
    except (OSError, ValueError, UnicodeDecodeError) as error:
        problem = f"it cannot be read ({error})"
    logger.warning("converted backbone %s is discarded and converted again: %s", folder, problem)
    try:
        remove_folder(folder)
    except OSError:
        pass
    return None
