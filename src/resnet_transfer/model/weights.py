"""Backbone weights: ImageNet files in Keras's cache, weights files, and their identity.

ImageNet weights are fetched with Keras's own ``keras.utils.get_file`` (Keras's URL
and MD5) into Keras's cache (``$KERAS_HOME/models``), so a file put there by
``import_weights`` is exactly what ``keras.applications`` loads with
``weights="imagenet"``.

Example:
    >>> weights_identity("resnet50", "none", seed=0)
    'random:seed=0'
"""

import json
import logging
import os
import shutil
import tempfile

import keras

from resnet_transfer.errors import WeightsError
from resnet_transfer.files import atomic_path, first_line, hash_file
from resnet_transfer.registry import BACKBONES, get_backbone_spec

__all__ = [
    "keras_home",
    "weights_cache_path",
    "fetch_weights",
    "import_weights",
    "cached_weights",
    "file_md5",
    "weights_identity",
    "sidecar_path",
    "read_sidecar",
    "SIDECAR_FORMAT",
]

logger = logging.getLogger(__name__)


def keras_home() -> str:
    """Keras's own folder, by Keras's rule: ``$KERAS_HOME``, else ``~/.keras`` (``/tmp/.keras``
    when the home folder is not writable). Keras's accessor for it is private."""
    if os.environ.get("KERAS_HOME"):
        return os.environ["KERAS_HOME"]
    base = os.path.expanduser("~")
    if not os.access(base, os.W_OK):
        base = tempfile.gettempdir()
    return os.path.join(base, ".keras")


def weights_cache_path(name: str) -> str:
    """Where Keras's ``get_file`` keeps (and looks for) this backbone's ImageNet weights."""
    return os.path.join(keras_home(), "models", get_backbone_spec(name).weights_file)


def file_md5(path: str) -> str:
    """MD5 of a file, the hash Keras publishes for its application weights."""
    return hash_file(path, "md5")


def fetch_weights(name: str) -> str:
    """Makes sure the ImageNet weights of ``name`` are in Keras's cache; returns their path.

    Uses Keras's ``get_file`` with Keras's URL and hash, so a cached file is verified
    and a missing one is downloaded exactly as ``keras.applications`` would.

    Raises:
        WeightsError: the download failed (for example on a machine with no network).
    """
    spec = get_backbone_spec(name)
    try:
        return keras.utils.get_file(spec.weights_file, spec.weights_url, cache_subdir="models", file_hash=spec.weights_md5)
    except Exception as error:  # Keras raises a bare Exception for URL failures
        raise WeightsError(
            f"could not fetch the ImageNet weights of {name} ({spec.weights_url}): {first_line(error)}. "
            f"Keras caches them at {weights_cache_path(name)}. On a machine without network, "
            f"carry the file in and run 'resnet-transfer weights import FILE --backbone {name}', "
            "or pass '--weights PATH' (a weights file) or '--weights none' (random initialisation)."
        ) from error


def import_weights(path: str, backbone: str) -> str:
    """Verifies a carried-in weights file against Keras's hash and puts it in Keras's cache.

    Afterwards ``weights="imagenet"`` loads it with no network.

    Returns:
        The path inside the cache.

    Raises:
        WeightsError: the file is unreadable or its MD5 is not the one Keras publishes.
    """
    spec = get_backbone_spec(backbone)
    if not os.path.isfile(path):
        raise WeightsError(f"weights file {path!r} does not exist or is not a file")
    try:
        found = file_md5(path)
    except OSError as error:
        raise WeightsError(f"weights file {path!r} cannot be read ({error.strerror}); check its permissions") from error
    if found != spec.weights_md5:
        raise WeightsError(
            f"weights file {path!r} is not Keras's {spec.weights_file}: expected MD5 {spec.weights_md5}, "
            f"found {found}. Use the no-top file of {backbone} from {spec.weights_url}."
        )
    target = weights_cache_path(backbone)
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with atomic_path(target) as temporary:
            shutil.copyfile(path, temporary)
    except OSError as error:
        raise WeightsError(
            f"cannot write the weights into Keras's cache {os.path.dirname(target)!r} ({error.strerror}); "
            "set KERAS_HOME to a writable folder"
        ) from error
    return target


def cached_weights() -> dict:
    """Maps each backbone name to its cached ImageNet weights path, or None if not cached."""
    return {name: (path if os.path.isfile(path) else None) for name in BACKBONES for path in [weights_cache_path(name)]}


def weights_identity(backbone: str, weights: str, seed: int) -> str:
    """A string that changes whenever the weights change (part of the feature-cache key).

    ImageNet weights are identified by the MD5 Keras verifies them against, a file
    by its SHA-256, random weights by the seed that drew them.
    """
    if weights == "none":
        return f"random:seed={seed}"
    if weights == "imagenet":
        return f"imagenet:md5={get_backbone_spec(backbone).weights_md5}"
    return f"file:sha256={hash_file(weights)}"


SIDECAR_FORMAT = 1
_SIDECAR_TYPES = {"backbone": (str,), "weights_sha256": (str,), "epochs": (int,), "classes": (list,),
                  "source": (dict,), "test_accuracy": (float, int, type(None)), "image_size": (int, type(None)),
                  "preprocess": (str, type(None))}


def sidecar_path(weights_file: str) -> str:
    """The JSON that ``pretrain`` writes beside a weights file: ``x.weights.h5`` -> ``x.weights.json``."""
    stem = weights_file[: -len(".h5")] if weights_file.endswith(".h5") else weights_file
    return stem + ".json"


def read_sidecar(weights_file: str):
    """The sidecar of ``weights_file`` as a dict (backbone, source data, classes, epochs,
    accuracy), or None when there is none: a weights file from elsewhere, or a JSON file
    beside it that ``pretrain`` did not write (it has no ``format`` field).

    Raises:
        WeightsError: the sidecar cannot be read, is from a newer version, or a field
            has the wrong type.
    """
    path = sidecar_path(weights_file)
    if not weights_file.endswith(".weights.h5") or not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            sidecar = json.load(handle)
    except (OSError, ValueError) as error:
        raise WeightsError(f"the sidecar {path!r} of weights file {weights_file!r} cannot be read ({first_line(error)}); "
                           "restore it from where the weights came from, or remove it") from error
    if not isinstance(sidecar, dict) or "format" not in sidecar:
        logger.info("%s is not a resnet-transfer sidecar (no format field); %s loads as a plain weights file",
                    path, weights_file)
        return None
    if isinstance(sidecar["format"], bool) or sidecar["format"] != SIDECAR_FORMAT:
        raise WeightsError(f"the sidecar {path!r} has format {sidecar['format']!r}; this version reads format "
                           f"{SIDECAR_FORMAT}. Upgrade resnet-transfer, or remove the sidecar to load the file as plain weights")
    record = sidecar.get("bn_recalibration", {})
    modes = [record.get(when, {}) for when in ("before", "after")] if isinstance(record, dict) else []
    if not isinstance(record, dict) or not all(
            isinstance(mode, dict) and all(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                                             and 0 <= value <= 1) for value in mode.values())
            for mode in modes):
        raise WeightsError(f"the sidecar {path!r} of weights file {weights_file!r} has bn_recalibration="
                           f"{record!r}, not an object with accuracies (fractions from 0 to 1) before and after; restore it from where the "
                           "weights came from, or remove it")
    for name, kinds in _SIDECAR_TYPES.items():
        value = sidecar.get(name)
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise WeightsError(f"the sidecar {path!r} of weights file {weights_file!r} has {name}={value!r}, not of type "
                               f"{' or '.join(kind.__name__ for kind in kinds)}; restore it from where the weights came "
                               "from, or remove it")
    return sidecar
