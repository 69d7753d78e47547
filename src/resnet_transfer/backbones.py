"""The backbone registry: Keras ResNets, their preprocessing and their weights.

Each entry of ``BACKBONES`` is a frozen ``BackboneSpec`` that names the Keras
builder, the ``preprocess_input`` the ImageNet weights were trained with, and the
identity of those weights (file name and the MD5 that Keras publishes). Weights
are fetched with Keras's own ``get_file`` into Keras's cache (``$KERAS_HOME/models``),
so a file put there by ``import_weights`` is exactly what ``weights="imagenet"`` loads.

Example:
    >>> backbone = create_backbone("resnet50", weights="none", input_shape=(32, 32, 3))
    >>> backbone.output_shape
    (None, 1, 1, 2048)
"""

import logging
import os
import shutil
from dataclasses import dataclass
from typing import Callable, Optional

import keras
from keras.src.applications.resnet import BASE_WEIGHTS_PATH, WEIGHTS_HASHES
from keras.src.backend.config import keras_home

from resnet_transfer.errors import ConfigError, WeightsError
from resnet_transfer.files import atomic_path, hash_file

__all__ = [
    "BackboneSpec",
    "BACKBONES",
    "get_backbone_spec",
    "create_backbone",
    "ImagePreprocessing",
    "weights_cache_path",
    "fetch_weights",
    "import_weights",
    "cached_weights",
    "file_md5",
    "weights_identity",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone family member.

    Attributes:
        name: registry name (``--backbone``).
        builder: the ``keras.applications`` constructor.
        preprocess_input: the function the ImageNet weights expect, on pixels in [0, 255].
        feature_channels: channels of the backbone's last feature map.
        weights_file: Keras's file name of the no-top ImageNet weights.
        weights_md5: the MD5 Keras publishes for that file.
    """

    name: str
    builder: Callable
    preprocess_input: Callable
    feature_channels: int
    weights_file: str
    weights_md5: str

    @property
    def weights_url(self) -> str:
        return BASE_WEIGHTS_PATH + self.weights_file


def _spec(name: str, builder: Callable, preprocess_input: Callable) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        builder=builder,
        preprocess_input=preprocess_input,
        feature_channels=2048,
        weights_file=f"{name}_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_md5=WEIGHTS_HASHES[name][1],
    )


_v1 = keras.applications.resnet.preprocess_input
_v2 = keras.applications.resnet_v2.preprocess_input
BACKBONES = {
    spec.name: spec
    for spec in (
        _spec("resnet50", keras.applications.ResNet50, _v1),
        _spec("resnet101", keras.applications.ResNet101, _v1),
        _spec("resnet152", keras.applications.ResNet152, _v1),
        _spec("resnet50v2", keras.applications.ResNet50V2, _v2),
        _spec("resnet101v2", keras.applications.ResNet101V2, _v2),
        _spec("resnet152v2", keras.applications.ResNet152V2, _v2),
    )
}


def get_backbone_spec(name: str) -> BackboneSpec:
    """Returns the registry entry for ``name``; an unknown name lists the known ones."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}. Known backbones: {', '.join(BACKBONES)}")
    return BACKBONES[name]


@keras.saving.register_keras_serializable(package="resnet_transfer")
class ImagePreprocessing(keras.layers.Layer):
    """Turns raw pixels in [0, 255] into what the backbone expects, inside the model.

    Keeping this in the model means a saved or exported model takes raw images and
    nobody has to remember the preprocessing at prediction time.

    Args:
        backbone: registry name, which selects the ``preprocess_input``.
        mode: "seed" scales to [0, 1] (the article's recipe); "imagenet" applies the
            backbone's own ``preprocess_input``.
    """

    def __init__(self, backbone: str, mode: str, **kwargs):
        super().__init__(**kwargs)
        get_backbone_spec(backbone)
        if mode not in ("seed", "imagenet"):
            raise ConfigError(f"preprocess must be one of: seed, imagenet. Received: preprocess={mode!r}")
        self.backbone = backbone
        self.mode = mode

    def call(self, images):
        images = keras.ops.cast(images, self.compute_dtype)
        if self.mode == "seed":
            return images / 255.0
        return BACKBONES[self.backbone].preprocess_input(images)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "backbone": self.backbone, "mode": self.mode}


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
        return keras.utils.get_file(
            spec.weights_file, spec.weights_url, cache_subdir="models", file_hash=spec.weights_md5
        )
    except Exception as error:  # Keras raises a bare Exception for URL failures
        raise WeightsError(
            f"could not fetch the ImageNet weights of {name} ({spec.weights_url}): {_first_line(error)}. "
            f"Keras caches them at {weights_cache_path(name)}. On a machine without network, "
            f"carry the file in and run 'resnet-transfer weights import FILE --backbone {name}', "
            "or pass '--weights PATH' (a weights file) or '--weights none' (random initialisation)."
        ) from None


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


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
    found = file_md5(path)
    if found != spec.weights_md5:
        raise WeightsError(
            f"weights file {path!r} is not Keras's {spec.weights_file}: expected MD5 {spec.weights_md5}, "
            f"found {found}. Use the no-top file of {backbone} from {spec.weights_url}."
        )
    target = weights_cache_path(backbone)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with atomic_path(target) as temporary:
        shutil.copyfile(path, temporary)
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


def create_backbone(
    name: str, *, weights: str, input_shape: tuple, weights_path: Optional[str] = None
) -> keras.Model:
    """Builds a frozen, headless backbone.

    Args:
        name: registry name.
        weights: "imagenet", "none" or the path of a weights file.
        input_shape: (height, width, 3).
        weights_path: for "imagenet", the already fetched file (skips a second lookup).

    Returns:
        The Keras model with every layer frozen.

    Raises:
        WeightsError: ImageNet weights cannot be fetched, or a weights file does not load.
    """
    spec = get_backbone_spec(name)
    if weights == "imagenet":
        source = weights_path or fetch_weights(name)
        logger.info("ImageNet weights of %s from %s", name, source)
        backbone = spec.builder(include_top=False, weights="imagenet", input_shape=input_shape)
    elif weights == "none":
        logger.info("%s with random weights (--weights none)", name)
        backbone = spec.builder(include_top=False, weights=None, input_shape=input_shape)
    else:
        logger.info("weights of %s from %s", name, weights)
        backbone = spec.builder(include_top=False, weights=None, input_shape=input_shape)
        try:
            backbone.load_weights(weights)
        except Exception as error:  # h5py/keras raise many kinds for a bad file
            raise WeightsError(
                f"weights file {weights!r} could not be loaded into {name} (no top): {_first_line(error)}"
            ) from None
    backbone.trainable = False
    return backbone
