"""Backbones: a frozen, headless Keras ResNet from the registry, with its weights, cut
where the features are taken.

The cut (fastai's word) is the end of a residual stage: Keras names the last layer of
stage K ``convK_blockN_out``. A backbone cut at conv3 is a Keras functional model from
the image to that layer's output, named like the backbone, so saved models still load
with plain Keras. Weights always load into the whole backbone first.

Example:
    >>> backbone = create_backbone("resnet50", weights="none", input_shape=(32, 32, 3))
    >>> backbone.output_shape
    (None, 1, 1, 2048)
    >>> create_backbone("resnet50", weights="none", input_shape=(32, 32, 3), feature_layer="conv3").output_shape
    (None, 4, 4, 512)
"""

import logging
import warnings
from typing import Optional

import keras

from resnet_transfer.config import FEATURE_LAYERS
from resnet_transfer.errors import ConfigError, WeightsError
from resnet_transfer.files import first_line, hash_file
from resnet_transfer.registry import get_backbone_spec
from resnet_transfer.model.weights import fetch_weights, read_sidecar

__all__ = ["create_backbone", "check_input_size", "check_weights_file", "check_pretrained_fit", "batch_norm_warning",
           "MAX_MODE_GAP",
           "stage_end", "cut_backbone"]

logger = logging.getLogger(__name__)


def check_input_size(name: str, size: int) -> None:
    """Raises ``ConfigError`` when ``size`` is below the smallest side ``name`` accepts."""
    spec = get_backbone_spec(name)
    if size < spec.min_input_size:
        raise ConfigError(
            f"image_size must be at least {spec.min_input_size} for {name} (Keras's minimum without the top). "
            f"Received: image_size={size}"
        )


def stage_end(backbone: keras.Model, stage: str) -> str:
    """The name of the layer that ends ``stage`` ("conv2" to "conv5") in ``backbone``, a
    model of the registry (named as Keras names it, e.g. "resnet50"), as the registry
    records it (``BackboneSpec.stage_blocks``).

    Raises:
        ConfigError: ``stage`` is not one of ``FEATURE_LAYERS``, or ``backbone`` has no such layer.
    """
    if stage not in FEATURE_LAYERS:
        raise ConfigError(f"feature_layer must be one of: {', '.join(FEATURE_LAYERS)}. Received: feature_layer={stage!r}")
    name = get_backbone_spec(backbone.name).stage_end_layer(stage)
    if name not in {layer.name for layer in backbone.layers}:
        raise ConfigError(f"{backbone.name} has no layer {name!r} to end {stage} at (the registry's stage_blocks do "
                          "not fit this Keras version's model)")
    return name


def cut_backbone(backbone: keras.Model, stage: str) -> keras.Model:
    """``backbone`` up to the end of ``stage``, sharing its layers; conv5 is the whole backbone
    (with ResNetV2's final normalisation)."""
    if stage == FEATURE_LAYERS[-1]:
        return backbone
    return keras.Model(backbone.input, backbone.get_layer(stage_end(backbone, stage)).output, name=backbone.name)


def create_backbone(name: str, *, weights: str, input_shape: tuple, weights_path: Optional[str] = None,
                    feature_layer: str = "conv5", bn_recalibrate: bool = False) -> keras.Model:
    """Builds a frozen, headless backbone, cut at the end of ``feature_layer``.

    Args:
        name: registry name.
        weights: "imagenet", "none" or the path of a weights file (for example one
            written by ``resnet-transfer pretrain``; its sidecar, if any, must name ``name``).
        input_shape: (height, width, 3).
        weights_path: for "imagenet", the already fetched file (skips a second lookup).
        feature_layer: "conv2", "conv3", "conv4" or "conv5" (the whole backbone).
        bn_recalibrate: the caller recomputes the BatchNormalization statistics (AdaBN), so
            a weights file whose own may be stale needs no warning.

    Returns:
        The Keras model with every layer frozen.

    Raises:
        ConfigError: an unknown backbone or cut, or an input smaller than it accepts.
        WeightsError: ImageNet weights cannot be fetched, or a weights file does not load.
    """
    spec = get_backbone_spec(name)
    check_input_size(name, min(input_shape[:2]))
    builder = getattr(keras.applications, spec.builder)
    if weights == "imagenet":
        logger.info("ImageNet weights of %s from %s", name, weights_path or fetch_weights(name))
        backbone = builder(include_top=False, weights="imagenet", input_shape=input_shape)
    elif weights == "none":
        logger.info("%s with random weights (--weights none)", name)
        backbone = builder(include_top=False, weights=None, input_shape=input_shape)
    else:
        logger.info("weights of %s from %s", name, weights)
        check_weights_file(name, weights, bn_recalibrate=bn_recalibrate)
        backbone = builder(include_top=False, weights=None, input_shape=input_shape)
        _load_weights_file(backbone, name, weights)
    backbone = cut_backbone(backbone, feature_layer)
    backbone.trainable = False
    return backbone


def check_weights_file(name: str, path: str, *, bn_recalibrate: bool = False) -> None:
    """Raises ``WeightsError`` when the sidecar of ``path`` (``pretrain``'s) says it holds
    another backbone's weights, or describes another file (a plain weights file passes).
    Warns when the sidecar says its BatchNormalization statistics may not fit its weights
    (``batch_norm_warning``), unless ``bn_recalibrate`` is to recompute them."""
    sidecar = read_sidecar(path)
    if sidecar is not None and sidecar.get("backbone") != name:
        raise WeightsError(
            f"weights file {path!r} holds the weights of {sidecar.get('backbone')!r} (its sidecar says so), not "
            f"of {name}: pass --backbone {sidecar.get('backbone')}, or a weights file of {name}"
        )
    if sidecar is not None and sidecar.get("weights_sha256") not in (None, hash_file(path)):
        raise WeightsError(
            f"weights file {path!r} is not the file its sidecar describes (their SHA-256 differ): the file was replaced "
            "or damaged. Use the file pretrain wrote, or remove the sidecar to load it as a plain weights file"
        )
    if sidecar is not None:
        accuracy = sidecar.get("test_accuracy")
        logger.info("pretrained by resnet-transfer on %s (classes %s, %d epoch%s); its test accuracy there: %s",
                    sidecar["source"].get("name"), ",".join(map(str, sidecar["classes"])), sidecar["epochs"],
                    "" if sidecar["epochs"] == 1 else "s", "unknown" if accuracy is None else f"{accuracy:.4f}")
        problem = batch_norm_warning(sidecar)
        if problem and bn_recalibrate:
            logger.info("%s: %s; --bn-recalibrate recomputes them on these training images", path, problem)
        elif problem:
            logger.warning("weights file %s: %s. Pass --bn-recalibrate to recompute them on these training images, or "
                           "pretrain again with this version (it recomputes them at the end)", path, problem)


def check_pretrained_fit(path: str, *, preprocess: str, image_size: int, strict: bool = False) -> None:
    """Warns (raises ``WeightsError`` when ``strict``) when the sidecar of weights file ``path``
    says the backbone was pretrained with another preprocessing or image size than this run
    uses: its features would be computed from pixels it never saw."""
    sidecar = read_sidecar(path)
    if sidecar is None:
        return
    recorded = {"preprocess": sidecar.get("preprocess"), "image_size": sidecar.get("image_size")}
    given = {"preprocess": preprocess, "image_size": image_size}
    differ = [name for name in recorded if recorded[name] is not None and recorded[name] != given[name]]
    if not differ:
        return
    flags = " and ".join(f"--{name.replace('_', '-')} {recorded[name]}" for name in differ)
    message = (f"weights file {path!r} was pretrained with {', '.join(f'{n}={recorded[n]!r}' for n in differ)} and this "
               f"run uses {', '.join(f'{n}={given[n]!r}' for n in differ)}: give {flags} to match it, or pretrain again "
               "with this run's settings")
    if strict:
        raise WeightsError(message + " (--strict refuses the mismatch)")
    logger.warning("%s", message)


# Points of validation accuracy by which a pretrained backbone may score lower in inference mode than in training
# mode (its sidecar's record) before its BatchNormalization statistics are called stale.
MAX_MODE_GAP = 5.0


def batch_norm_warning(sidecar: dict) -> Optional[str]:
    """Why the BatchNormalization statistics of a pretrained weights file may not fit its
    weights (so that the backbone works in training mode but not in inference mode), from
    its sidecar; None when its record says they do."""
    record = sidecar.get("bn_recalibration")
    if not record or not record.get("after"):
        return ("its sidecar has no record of recomputed BatchNormalization statistics (pretrained by an earlier "
                "version of resnet-transfer), so after a short pretraining they are stale")
    after = record.get("after") or {}
    training, inference = after.get("training_mode"), after.get("inference_mode")
    if isinstance(training, (int, float)) and isinstance(inference, (int, float)) and \
            100 * (training - inference) > MAX_MODE_GAP:
        return (f"its sidecar records a validation accuracy of {training:.1%} in training mode but {inference:.1%} in "
                "inference mode after its BatchNormalization statistics were recomputed")
    return None


def _load_weights_file(backbone: keras.Model, name: str, path: str) -> None:
    try:
        with warnings.catch_warnings():  # Keras warns once per layer before raising for a mismatched file
            warnings.simplefilter("ignore")
            backbone.load_weights(path)
    except Exception as error:  # h5py and Keras raise many kinds for a bad file
        raise WeightsError(
            f"weights file {path!r} could not be loaded into {name} (no top): {first_line(error)}. "
            f"Give the weights file of a {name} without its top (.weights.h5 or Keras's .h5)."
        ) from error
