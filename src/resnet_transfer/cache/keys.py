"""What a cache entry is named by: a ``FeatureKey`` holds everything that changes a
backbone's outputs for a set of images (the images themselves by ``fingerprint_images``),
and its ``digest`` names the features' entry; ``conversion_key`` is what a backbone converted
for another runtime depends on, and ``conversion_digest`` names that entry. A change to
what keys hold bumps ``CACHE_FORMAT``, so older entries are never taken for newer ones.

Example:
    >>> key = FeatureKey.create(backbone="resnet50", weights="random:seed=0", preprocess="seed", pooling="flatten",
    ...                         images=x_train, dtype="float32")
    >>> key.digest  # 32 hex digits: the entry's folder name
"""

import hashlib
import json
from dataclasses import asdict, dataclass

import keras
import numpy as np

__all__ = ["CACHE_FORMAT", "FeatureKey", "fingerprint_images", "conversion_key", "conversion_digest"]

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
        return entry_digest(asdict(self))


def conversion_key(key: FeatureKey, runtime: str) -> dict:
    """What a converted extractor depends on: the features' key but the images, the stored
    dtype and the runtime that computes them; and the runtime it is converted for."""
    values = asdict(key)
    for name in ("images", "dtype", "runtime"):
        values.pop(name, None)
    return {**values, "converted_for": runtime}


def conversion_digest(conversion: dict) -> str:
    """The name of the cache entry of a backbone converted under ``conversion`` (``conversion_key``)."""
    return entry_digest(conversion)


def entry_digest(key: dict) -> str:
    """A cache entry's folder name: the first 32 hex digits of the SHA-256 of its key as sorted JSON."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
