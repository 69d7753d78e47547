"""The backbone registry: each Keras ResNet with the defaults it carries.

Like timm's pretrained configs and fastai's ``model_meta``, each entry of
``BACKBONES`` carries what a user should never have to remember: the
``keras.applications`` builder, the ImageNet preprocessing its weights were
trained with, its default and minimum input size, the channels of its feature
map, the default feature pooling, and the identity of its no-top ImageNet weights
(Keras's file name and the MD5 Keras publishes, copied from
``keras/src/applications/resnet.py`` and ``resnet_v2.py``).

This module is plain data: it imports no Keras, so the configuration and the
command line can check names and sizes without paying for TensorFlow.

Example:
    >>> get_backbone_spec("resnet50").min_input_size
    32
"""

import difflib
import re
from dataclasses import dataclass
from typing import Optional

from resnet_transfer.errors import ConfigError

__all__ = ["BackboneSpec", "BACKBONES", "PREPROCESS_STYLES", "get_backbone_spec", "stage_of_layer", "WEIGHTS_BASE_URL"]

# Keras's download folder for application weights (keras/src/applications/resnet.py).
WEIGHTS_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
# "caffe": RGB -> BGR, minus the ImageNet mean pixel (ResNet v1); "tf": scaled to [-1, 1] (v2).
PREPROCESS_STYLES = ("caffe", "tf")


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone.

    Attributes:
        name: registry name (``--backbone``).
        builder: name of the ``keras.applications`` constructor.
        imagenet_preprocessing: "caffe" or "tf", the style of the ``preprocess_input`` that
            the ImageNet weights expect.
        default_input_size: the side the ImageNet weights were trained at.
        min_input_size: the smallest side Keras accepts without the top.
        feature_channels: channels of the last feature map.
        weights_md5: the MD5 Keras publishes for the no-top ImageNet weights file.
        stage_blocks: residual blocks in each stage, conv2 to conv5 (timm's ``feature_info``,
            fastai's ``model_meta``): stage K ends at the layer Keras names
            ``convK_block<blocks>_out`` (``stage_end_layer``).
    """

    name: str
    builder: str
    imagenet_preprocessing: str
    weights_md5: str
    default_input_size: int = 224
    min_input_size: int = 32
    feature_channels: int = 2048
    stage_blocks: tuple = (3, 4, 6, 3)

    def stage_end_layer(self, stage: str) -> str:
        """The name of the layer that ends ``stage`` ("conv2" to "conv5") in Keras's model."""
        return f"{stage}_block{self.stage_blocks[int(stage.removeprefix('conv')) - 2]}_out"

    @property
    def weights_file(self) -> str:
        """Keras's file name of the no-top ImageNet weights."""
        return f"{self.name}_weights_tf_dim_ordering_tf_kernels_notop.h5"

    @property
    def weights_url(self) -> str:
        return WEIGHTS_BASE_URL + self.weights_file


BACKBONES = {
    spec.name: spec
    for spec in (
        BackboneSpec("resnet50", "ResNet50", "caffe", "4d473c1dd8becc155b73f8504c6f6626"),
        BackboneSpec("resnet101", "ResNet101", "caffe", "88cf7a10940856eca736dc7b7e228a21", stage_blocks=(3, 4, 23, 3)),
        BackboneSpec("resnet152", "ResNet152", "caffe", "ee4c566cf9a93f14d82f913c2dc6dd0c", stage_blocks=(3, 8, 36, 3)),
        BackboneSpec("resnet50v2", "ResNet50V2", "tf", "fac2f116257151a9d068a22e544a4917"),
        BackboneSpec("resnet101v2", "ResNet101V2", "tf", "c0ed64b8031c3730f411d2eb4eea35b5", stage_blocks=(3, 4, 23, 3)),
        BackboneSpec("resnet152v2", "ResNet152V2", "tf", "ed17cf2e0169df9d443503ef94b23b33", stage_blocks=(3, 8, 36, 3)),
    )
}


def stage_of_layer(name: str) -> Optional[int]:
    """The stage (1 for the stem, 2 to 5) a layer of Keras's ResNets belongs to, by Keras's
    names (``convK_...``; a V2 model's ``post_bn`` and ``post_relu`` close stage 5); None for
    a layer of no stage (the input's padding)."""
    if name.startswith("post_"):
        return 5
    match = re.match(r"conv(\d)_", name)
    return int(match[1]) if match else None


def get_backbone_spec(name: str) -> BackboneSpec:
    """Returns the registry entry for ``name``; an unknown name lists the known ones.

    Raises:
        ConfigError: ``name`` is not in ``BACKBONES``.
    """
    if name not in BACKBONES:
        close = difflib.get_close_matches(str(name).lower(), list(BACKBONES), n=1, cutoff=0.85)
        hint = f"; did you mean {close[0]}?" if close else "."
        raise ConfigError(f"unknown backbone {name!r}{hint} Known backbones: {', '.join(BACKBONES)}")
    return BACKBONES[name]
