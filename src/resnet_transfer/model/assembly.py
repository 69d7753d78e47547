"""The whole classifier: raw pixels -> preprocessing -> frozen backbone -> head.

The backbone is called with ``training=False``, so its BatchNormalization layers
stay in inference mode even when a later fine-tuning stage unfreezes it (the
Keras transfer-learning guide's advice). Build the model inside a
``tf.distribute`` strategy's ``scope()`` to place its variables there.

Example:
    >>> model = build_model(ModelConfig(weights="none"), image_shape=(32, 32, 3), num_classes=10)
    >>> model.get_layer("head").count_params()
    2059010
"""

from typing import Optional

import keras

from resnet_transfer.config import ModelConfig
from resnet_transfer.model.backbone import create_backbone
from resnet_transfer.model.heads import build_head
from resnet_transfer.model.preprocessing import build_preprocessing

__all__ = ["build_model", "compile_model", "feature_extractor", "head_of", "backbone_of"]


def build_model(
    config: ModelConfig, *, image_shape: tuple, num_classes: int, weights_path: Optional[str] = None
) -> keras.Model:
    """Builds the full model of a run; only the head is trainable.

    Args:
        config: backbone, weights, preprocessing and head width.
        image_shape: (height, width, 3) of the raw images.
        num_classes: classes of the head.
        weights_path: for ImageNet weights, the file already fetched into Keras's cache.

    Returns:
        A functional model from uint8-valued images to class probabilities, with the
        layers "preprocessing", the backbone (named after it) and "head", made only of
        Keras's own layers, so ``keras.saving.load_model`` loads it anywhere.
    """
    inputs = keras.Input(shape=tuple(image_shape), name="image")
    pixels = build_preprocessing(config.backbone, config.preprocess, name="preprocessing")(inputs)
    backbone = create_backbone(
        config.backbone, weights=config.weights, input_shape=tuple(image_shape), weights_path=weights_path
    )
    features = backbone(pixels, training=False)
    head = build_head(backbone.output_shape[1:], units=config.head_units, num_classes=num_classes)
    return keras.Model(inputs, head(features), name=f"{config.backbone}_transfer")


def compile_model(
    model: keras.Model,
    *,
    learning_rate: float,
    steps_per_execution: int = 1,
    optimizer: Optional[keras.optimizers.Optimizer] = None,
    jit_compile="auto",
) -> keras.Model:
    """Compiles with the seed recipe's optimizer (Adam), loss and metric; returns the model.

    Pass ``optimizer`` to keep an existing optimizer and its state (for example the
    head's, when the full model is compiled after the head was fit on features).
    ``jit_compile`` is Keras's XLA switch ("auto" lets Keras decide).
    """
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
        jit_compile=jit_compile,
    )
    return model


def head_of(model: keras.Model) -> keras.Model:
    """The trainable head inside a model built by ``build_model``."""
    return model.get_layer("head")


def backbone_of(model: keras.Model) -> keras.Model:
    """The backbone inside a model built by ``build_model`` (the layer between preprocessing and head)."""
    return model.layers[2]


def feature_extractor(model: keras.Model) -> keras.Model:
    """A model from images to backbone features that shares the layers of ``model``."""
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    pixels = model.get_layer("preprocessing")(inputs)
    return keras.Model(inputs, backbone_of(model)(pixels, training=False), name="feature_extractor")
