"""BatchNormalization statistics recomputed over a sample of images (PreciseBN, AdaBN).

A BatchNormalization layer normalises with the batch's own mean and variance in training
mode, and with its moving mean and variance in inference mode. The moving statistics
are an exponential average (momentum 0.99) taken while the weights were still moving,
so after a short training they describe neither the final weights nor the data: the
network then scores far lower in inference mode than in training mode. Our fine-tuning
and feature extraction always run BatchNormalization in inference mode.

``recalibrate`` sets every BatchNormalization layer's moving mean and variance to the
population statistics of that layer's inputs over a sample of images, with the weights
as they are now (the network run in training mode, as BatchNormalization layers see it
while training):

- at the end of ``pretrain``, over its own training images: *precise BatchNorm*
  (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm"; detectron2's and timm's
  PreciseBN);
- before ``train``'s head phase with ``--bn-recalibrate``, over the target's training
  images: *AdaBN* (Li et al. 2016), for a backbone from another domain.

Nothing else changes: every other weight keeps its bytes. The population variance of a
layer's input over the sample is the mean of each image's variance plus the variance of
the images' means, each taken over the image's positions.

Example:
    >>> sample = recalibrate(backbone, pixels)
    >>> sample.layers
    53
"""

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Optional

import keras
import numpy as np

__all__ = [
    "RECALIBRATION_BATCH_SIZE",
    "Recalibration",
    "batch_norm_layers",
    "recalibrate",
    "sample_indices",
    "statistics_kept",
    "training_mode_probabilities",
]

# Images per training-mode pass: the batch statistics that normalise the layers below the
# one measured come from this many images (PreciseBN uses large batches for the same reason).
RECALIBRATION_BATCH_SIZE = 128


@dataclass(frozen=True)
class Recalibration:
    """What ``recalibrate`` did: how many BatchNormalization layers, over how many images,
    in batches of how many."""

    layers: int
    images: int
    batch_size: int

    def to_dict(self) -> dict:
        return {"layers": self.layers, "images": self.images, "batch_size": self.batch_size}


def batch_norm_layers(model: keras.Model) -> list:
    """Every ``BatchNormalization`` layer of ``model``, nested models included, in layer order."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(batch_norm_layers(layer))
    return found


def sample_indices(count: int, size: int, *, seed: int) -> np.ndarray:
    """``size`` of ``range(count)`` drawn without replacement with ``seed``, in order (all of
    them when ``size >= count``)."""
    if size >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=size, replace=False))


@contextlib.contextmanager
def _in_training_mode(layers: list):
    """Every layer of ``layers`` trainable (Keras 3 runs a BatchNormalization layer with
    ``trainable=False`` in inference mode whatever ``training`` says); its own and its
    variables' trainable flags are put back afterwards."""
    flags = [(layer, layer.trainable, [variable.trainable for variable in layer.weights]) for layer in layers]
    try:
        for layer in layers:
            layer.trainable = True
        yield
    finally:
        for layer, trainable, variable_flags in flags:
            layer.trainable = trainable
            for variable, flag in zip(layer.weights, variable_flags):
                variable.trainable = flag


@contextlib.contextmanager
def statistics_kept(layers: list):
    """Puts the moving mean and variance of ``layers`` back as they were on leaving: a
    BatchNormalization layer called in training mode also updates them."""
    saved = [(keras.ops.convert_to_numpy(layer.moving_mean), keras.ops.convert_to_numpy(layer.moving_variance))
             for layer in layers]
    try:
        yield
    finally:
        for layer, (mean, variance) in zip(layers, saved):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)


def _batches(count: int, batch_size: int) -> list:
    """``range(count)`` shuffled (with a fixed seed), in near-equal batches of at most
    ``batch_size`` (no small last batch, whose statistics would be noisy). Shuffled because
    a split keeps its source's order, which for a folder of class folders is class by class:
    a batch of one class would normalise the layers below the one measured by that class's
    statistics alone."""
    order = np.random.default_rng(0).permutation(count)
    return np.array_split(order, max(1, math.ceil(count / batch_size)))


def _moments_model(backbone: keras.Model, layers: list) -> keras.Model:
    """From the backbone's input to, per BatchNormalization layer, each image's mean and
    variance of that layer's input over every axis but the batch and the channels."""
    outputs = []
    for layer in layers:
        inputs = keras.ops.cast(layer.input, "float32")
        channel_axis = layer.axis % len(inputs.shape)
        axes = tuple(axis for axis in range(1, len(inputs.shape)) if axis != channel_axis)
        if axes:
            outputs += [keras.ops.mean(inputs, axis=axes), keras.ops.var(inputs, axis=axes)]
        else:
            outputs += [inputs, keras.ops.zeros_like(inputs)]
    return keras.Model(backbone.input, outputs, name=f"{backbone.name}_batch_norm_moments")


def recalibrate(backbone: keras.Model, images: np.ndarray, *, preprocess: Optional[Callable] = None,
                batch_size: int = RECALIBRATION_BATCH_SIZE) -> Recalibration:
    """Sets every BatchNormalization layer's moving mean and variance in ``backbone`` to the
    population statistics of its inputs over ``images``.

    Args:
        backbone: a functional Keras model whose BatchNormalization layers are its own layers
            (a ResNet, whole or cut, not a model around one); its trainable flags are left as
            they are.
        images: the sample, as the model takes it (``preprocess`` is applied first).
        preprocess: what turns ``images`` into the backbone's input (the run's
            preprocessing layer); None: ``images`` are the backbone's input.
        batch_size: images per training-mode pass.

    Returns:
        A ``Recalibration``.

    Raises:
        ValueError: no images, or a backbone without BatchNormalization layers.
    """
    if len(images) == 0:
        raise ValueError("recalibrate needs at least one image. Received: 0 images")
    layers = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        raise ValueError(f"{backbone.name} has no BatchNormalization layer of its own to recalibrate")
    moments = _moments_model(backbone, layers)
    channels = [int(layer.moving_mean.shape[0]) for layer in layers]
    sum_of_means = [np.zeros(count) for count in channels]
    sum_of_squared_means = [np.zeros(count) for count in channels]
    sum_of_variances = [np.zeros(count) for count in channels]
    batches = _batches(len(images), batch_size)
    with statistics_kept(layers), _in_training_mode(layers):  # (the passes' own updates are discarded)
        for batch in batches:
            pixels = images[batch] if preprocess is None else preprocess(images[batch])
            values = [keras.ops.convert_to_numpy(value).astype(np.float64)
                      for value in moments(pixels, training=True)]
            for index in range(len(layers)):
                means, variances = values[2 * index], values[2 * index + 1]
                sum_of_means[index] += means.sum(axis=0)
                sum_of_squared_means[index] += (means ** 2).sum(axis=0)
                sum_of_variances[index] += variances.sum(axis=0)
    count = len(images)
    for index, layer in enumerate(layers):
        mean = sum_of_means[index] / count
        variance = sum_of_variances[index] / count + np.maximum(sum_of_squared_means[index] / count - mean ** 2, 0.0)
        layer.moving_mean.assign(mean.astype(layer.moving_mean.dtype))
        layer.moving_variance.assign(variance.astype(layer.moving_variance.dtype))
    return Recalibration(layers=len(layers), images=count, batch_size=len(batches[0]))


def training_mode_probabilities(backbone: keras.Model, images: np.ndarray, *, preprocess: Optional[Callable] = None,
                                head: Optional[Callable] = None,
                                batch_size: int = RECALIBRATION_BATCH_SIZE) -> np.ndarray:
    """``head(backbone(preprocess(images)))`` with the backbone's BatchNormalization layers in
    training mode (each batch normalised with its own statistics; the batches are shuffled
    as ``recalibrate``'s are) and the head in inference mode (no dropout), in the images'
    order; the moving statistics are left as they were."""
    layers = batch_norm_layers(backbone)
    outputs, order = [], []
    with statistics_kept(layers), _in_training_mode(layers):
        for batch in _batches(len(images), batch_size):
            pixels = images[batch] if preprocess is None else preprocess(images[batch])
            features = backbone(pixels, training=True)
            outputs.append(keras.ops.convert_to_numpy(features if head is None else head(features, training=False)))
            order.append(batch)
    probabilities = np.empty_like(np.concatenate(outputs))
    probabilities[np.concatenate(order)] = np.concatenate(outputs)
    return probabilities
