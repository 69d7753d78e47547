"""The whole classifier: raw pixels -> preprocessing -> frozen backbone -> head.

The backbone is called with ``training=False`` (the Keras transfer-learning guide's
advice); Keras 3 overrides that during ``fit`` (keras-team/keras#20285), so the
fine-tune phase also keeps every BatchNormalization layer frozen (``training.phases``),
and a run checks that no frozen weight moved (``training.frozen``). Build the model inside a
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
from resnet_transfer.model.layer_decay import LayerwiseAdam, LayerwiseAdamW
from resnet_transfer.model.preprocessing import build_preprocessing
from resnet_transfer.registry import BACKBONES

__all__ = ["build_model", "compile_model", "make_optimizer", "feature_extractor", "head_of", "backbone_of"]


def build_model(
    config: ModelConfig, *, image_shape: tuple, num_classes: int, weights_path: Optional[str] = None,
    frozen_backbone: bool = True,
) -> keras.Model:
    """Builds the full model of a run; only the head is trainable.

    Args:
        config: backbone, weights, preprocessing and head width.
        image_shape: (height, width, 3) of the raw images.
        num_classes: classes of the head.
        weights_path: for ImageNet weights, the file already fetched into Keras's cache.
        frozen_backbone: False for pretraining: the whole backbone trains, BatchNormalization
            layers in training mode (the backbone is called without ``training=False``).

    Returns:
        A functional model from uint8-valued images to class probabilities, with the
        layers "preprocessing", the backbone (named after it) and "head", made only of
        Keras's own layers, so ``keras.saving.load_model`` loads it anywhere.
    """
    inputs = keras.Input(shape=tuple(image_shape), name="image")
    pixels = build_preprocessing(config.backbone, config.preprocess, name="preprocessing")(inputs)
    backbone = create_backbone(
        config.backbone, weights=config.weights, input_shape=tuple(image_shape), weights_path=weights_path,
        feature_layer=config.feature_layer,
        bn_recalibrate=config.bn_recalibrate or not frozen_backbone,  # (pretrain recomputes them at its end)
    )
    if frozen_backbone:
        features = backbone(pixels, training=False)
    else:
        backbone.trainable = True
        features = backbone(pixels)
    head = build_head(backbone.output_shape[1:], head=config.head, pooling=config.pooling, units=config.head_units,
                      dropout=config.dropout, num_classes=num_classes)
    return keras.Model(inputs, head(features), name=f"{config.backbone}_transfer")


def make_optimizer(*, learning_rate: float, weight_decay: float = 0.0, ema_momentum: Optional[float] = None,
                   rate_factors: Optional[dict] = None) -> keras.optimizers.Optimizer:
    """Adam (the seed recipe's), or AdamW when ``weight_decay`` > 0; with ``ema_momentum``,
    keeping an exponential moving average of the weights it trains (Keras's ``use_ema``:
    ``fit`` ends by setting the weights to the average); with ``rate_factors`` ({variable
    path: factor}), each variable's steps at that factor of the rate (``layer_decay``)."""
    ema = {"use_ema": True, "ema_momentum": ema_momentum} if ema_momentum is not None else {}
    if rate_factors:
        ema["rate_factors"] = rate_factors
    decayed = weight_decay > 0
    if rate_factors:
        kind = LayerwiseAdamW if decayed else LayerwiseAdam
    else:
        kind = keras.optimizers.AdamW if decayed else keras.optimizers.Adam
    return kind(learning_rate=learning_rate, **({"weight_decay": weight_decay} if decayed else {}), **ema)


def compile_model(
    model: keras.Model,
    *,
    learning_rate: float,
    steps_per_execution: int = 1,
    optimizer: Optional[keras.optimizers.Optimizer] = None,
    weight_decay: float = 0.0,
    label_smoothing: float = 0.0,
    one_hot: bool = False,
    jit_compile="auto",
    run_eagerly: bool = False,
) -> keras.Model:
    """Compiles with the seed recipe's optimizer (Adam), loss and metric; returns the model.

    Pass ``optimizer`` to keep an existing optimizer and its state (for example the
    head's, when the full model is compiled after the head was fit on features).
    With ``label_smoothing`` > 0 or ``one_hot`` (mixed labels: MixUp, CutMix) the loss is
    ``CategoricalCrossentropy`` (Keras's sparse loss has no smoothing), so the labels must
    then be one-hot rows.
    ``jit_compile`` is Keras's XLA switch ("auto" lets Keras decide); ``run_eagerly`` Keras's
    switch for running without a traced graph.
    """
    loss = (keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing) if label_smoothing > 0 or one_hot
            else "sparse_categorical_crossentropy")
    model.compile(
        optimizer=optimizer or make_optimizer(learning_rate=learning_rate, weight_decay=weight_decay),
        loss=loss,
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
        jit_compile=False if run_eagerly else jit_compile,
        run_eagerly=run_eagerly,
    )
    return model


def head_of(model: keras.Model) -> keras.Model:
    """The trainable head inside a model built by ``build_model``."""
    return model.get_layer("head")


def backbone_of(model: keras.Model) -> keras.Model:
    """The backbone inside a model built by ``build_model``: its one layer named after a
    backbone of the registry (as Keras names its ResNets, "resnet50" and so on).

    Raises:
        ValueError: ``model`` has no such layer, or several.
    """
    found = [layer for layer in model.layers if layer.name in BACKBONES]
    if len(found) != 1:
        raise ValueError(f"a model built by build_model has one backbone layer named after one of: "
                         f"{', '.join(BACKBONES)}. Received: a model with layers {[layer.name for layer in model.layers]}")
    return found[0]


def feature_extractor(model: keras.Model) -> keras.Model:
    """A model from images to pooled backbone features (the head's pooling layer applied)
    that shares the layers of ``model``; ``classifier_on_features(head_of(model))`` takes it on."""
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    pixels = model.get_layer("preprocessing")(inputs)
    features = backbone_of(model)(pixels, training=False)
    return keras.Model(inputs, head_of(model).get_layer("pooling")(features), name="feature_extractor")
