"""Inference on arrays in this process: a model's outputs for every row, in order.

On a CPU, and on a cluster's worker, the model is called batch by batch from the caller's
thread (``local_predict``; why: ``predicts_locally``); elsewhere (GPUs, a strategy with
several replicas) through Keras's ``predict``.

Example:
    >>> probabilities = predict_probabilities(model, features)
"""

import weakref

import keras
import numpy as np

from resnet_transfer.model.precision import visible_gpus
from resnet_transfer.training.batches import INFERENCE_BATCH_SIZE, ArrayBatches
from resnet_transfer.training.distribution import replicas_in_scope, worker_role

__all__ = ["TTA_SHIFT", "local_predict", "predict_probabilities", "predict_with_tta", "predicts_locally", "tta_views"]

TTA_SHIFT = 2  # pixels: test-time augmentation's shifts

# model -> its traced inference call (``local_predict``), dropped with the model.
_LOCAL_CALLS = weakref.WeakKeyDictionary()


def predicts_locally() -> bool:
    """Whether inference should call the model batch by batch (``local_predict``) rather than
    through Keras's ``predict``: on a cluster's worker (``predict`` would share the rows among
    the workers), and with TensorFlow on a CPU outside a strategy with several replicas.

    Why not ``predict`` on a CPU (the cause as read in TensorFlow's source, not traced): it
    reads its batches through an iterator inside its tf.function, and TensorFlow then at
    times runs the step's ops on a thread of its own intra-op pool, where oneDNN
    (TensorFlow's ``MklDnnThreadPool::get_in_parallel``) sees a nested parallel region and
    runs every convolution on that one thread: half the speed on 2 cores, in 5 of 8
    ``predict`` calls of one process measured here (benchmarks/README.md). Called with a
    tensor from the caller's thread, the ops used every core in 8 of 8.
    """
    if worker_role() is not None:
        return True
    return keras.backend.backend() == "tensorflow" and not visible_gpus() and replicas_in_scope() <= 1


def local_predict(model: keras.Model, inputs, *, batch_size: int) -> np.ndarray:
    """``model``'s outputs for ``inputs`` in inference mode, computed by this process alone,
    ``batch_size`` rows a call from the caller's thread (``predicts_locally`` says when and
    why; under a multi-worker strategy, ``predict`` would split the rows among the workers
    and wait for all of them). Traced once per model, for any number of rows."""
    import tensorflow as tf

    if model not in _LOCAL_CALLS:  # the extraction calls it once per chunk
        reference = weakref.ref(model)  # the call does not keep the model alive; the model keeps its call
        _LOCAL_CALLS[model] = tf.function(lambda batch: reference()(batch, training=False), input_signature=[
            tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)])
    call = _LOCAL_CALLS[model]
    outputs = [keras.ops.convert_to_numpy(call(np.asarray(inputs[start : start + batch_size], dtype="float32")))
               for start in range(0, len(inputs), batch_size)]
    return np.concatenate(outputs) if outputs else np.zeros((0, *model.output_shape[1:]), "float32")


def predict_probabilities(model: keras.Model, inputs, *, batch_size: int = INFERENCE_BATCH_SIZE) -> np.ndarray:
    """The model's outputs for every row of ``inputs`` (images or features), in order: the
    one way inference runs (on a CPU, and on a cluster's worker, which computes them all:
    ``local_predict``, why: ``predicts_locally``; elsewhere Keras's ``predict``)."""
    if predicts_locally():
        return local_predict(model, inputs, batch_size=batch_size)
    return model.predict(ArrayBatches(inputs, np.zeros(len(inputs), np.int64), batch_size=batch_size), verbose=0)


def tta_views(images: np.ndarray, *, flip: bool, shift: int = TTA_SHIFT):
    """The views that test-time augmentation averages over, one at a time: the images as they
    are, shifted by ``shift`` pixels right, left, down and up (the edge pixels repeated into
    the gap), and with ``flip`` mirrored left to right (only for images whose classes a mirror
    keeps: the run's ``--flip``)."""
    images = np.asarray(images)
    yield images
    if shift:
        height, width = images.shape[1:3]
        padded = np.pad(images, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="edge")
        for top, left in ((shift, 0), (shift, 2 * shift), (0, shift), (2 * shift, shift)):
            yield padded[:, top : top + height, left : left + width]
    if flip:
        yield images[:, :, ::-1]


def predict_with_tta(model: keras.Model, inputs, *, flip: bool, shift: int = TTA_SHIFT,
                     batch_size: int = INFERENCE_BATCH_SIZE) -> tuple:
    """(the mean of the model's outputs over ``tta_views`` of ``inputs``, the number of views)."""
    total, count = None, 0
    for view in tta_views(inputs, flip=flip, shift=shift):
        outputs = predict_probabilities(model, view, batch_size=batch_size)
        total, count = outputs if total is None else total + outputs, count + 1
    return total / count, count

