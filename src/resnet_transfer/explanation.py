"""Explanations: where in an image the model looked for the class it chose (Grad-CAM).

Grad-CAM (Selvaraju et al., 2017; the keras-io example "Grad-CAM class activation
visualization") weighs each channel of a convolutional feature map by the spatial mean
of the gradient of a class's score (its logit, before the softmax) with respect to that
channel, sums the weighted channels, and keeps the positive part: the regions whose
features raise the class's score. The map is as coarse as the feature map it is taken
from, so the stage matters:

- ``grad_cam_maps``: the method, for any pair of functions images -> feature maps ->
  logits;
- ``grad_cam`` and ``choose_layer``: for a model built by ``build_model``, at the end of
  one stage of its backbone ("conv2" to "conv5"), by default the last stage whose map is
  at least 4x4 (the backbone's output at 224 px; conv3 at MNIST's 32 px, where conv5 is 1x1);
- ``overlay`` and ``write_explanations``: the heat map in "jet" colours over the image,
  one PNG per image.

The two functions for a model share its layers (no weights are copied): the backbone is
split at the stage's end into two Keras models (Keras builds a model from an inner
tensor of a functional graph), and the head's last Dense layer is applied without its
softmax.

Example:
    >>> model = build_model(ModelConfig(backbone="resnet50", weights="none"), image_shape=(32, 32, 3),
    ...                     num_classes=10)
    >>> choose_layer(model)
    'conv3'
    >>> heatmaps, classes, probabilities = grad_cam(model, images)
    >>> heatmaps.shape
    (len(images), 4, 4)
"""

import os
from typing import Callable, Optional, Sequence

import keras
import matplotlib
import numpy as np
import tensorflow as tf
from PIL import Image

from resnet_transfer.config import FEATURE_LAYERS
from resnet_transfer.data.images import ImageReadError, read_image
from resnet_transfer.errors import ConfigError, DataError
from resnet_transfer.files import atomic_path
from resnet_transfer.model.assembly import backbone_of, head_of
from resnet_transfer.prediction import expand_inputs
from resnet_transfer.registry import get_backbone_spec
from resnet_transfer.runs import Run

__all__ = ["grad_cam_maps", "grad_cam", "choose_layer", "overlay", "write_explanations", "explain_run", "check_backend",
           "MIN_MAP_SIDE", "EXPLANATION_SIDE", "EXPLANATION_SUFFIX"]

# The smallest map (pixels on each side) that the automatic choice of stage accepts: a 2x2 or 1x1 map says
# at most which quadrant, or nothing.
MIN_MAP_SIDE = 4
# The shortest side, in pixels, of an explanation's PNG (small images are enlarged to it, pixel for pixel).
EXPLANATION_SIDE = 224
EXPLANATION_SUFFIX = "-gradcam.png"
_BATCH_SIZE = 32


def grad_cam_maps(to_maps: Callable, maps_to_logits: Callable, images, class_indices=None, *,
                  batch_size: int = _BATCH_SIZE) -> tuple:
    """Grad-CAM heat maps of ``images`` for any model split into two functions.

    Each image's map is ``relu(sum_k weight_k * maps[..., k])``, where ``weight_k`` is the
    spatial mean of the gradient of the class's logit with respect to channel ``k``, then
    divided by its maximum, so that it spans [0, 1]. A map with no positive value (no
    region raises the class's score) stays all zeros.

    Args:
        to_maps: images (a batch) -> feature maps (N, h, w, channels), as a tensor.
        maps_to_logits: feature maps -> class scores before the softmax (N, classes). It
            must treat each image on its own (no statistics of the batch: BatchNormalization
            in inference mode), and be differentiable with TensorFlow.
        images: an array (or tensor) whose first axis counts the images.
        class_indices: the class to explain for each image: None for the predicted one
            (highest logit), one int for all images, or one int per image.
        batch_size: images per gradient pass (bounds the memory).

    Returns:
        (heatmaps, class_indices, probabilities) as NumPy arrays: heat maps (N, h, w)
        float32 in [0, 1], the explained classes (N,) int64, and the softmax of the logits
        (N, classes) float32.

    Raises:
        ValueError: no images, a bad ``batch_size`` or class index, maps that are not 4-D
            or logits that are not 2-D, or logits that do not depend on the maps.

    Example:
        >>> maps = np.zeros((1, 8, 8, 2), "float32"); maps[0, :2, :2, 0] = 1
        >>> heatmaps, classes, _ = grad_cam_maps(lambda x: x, lambda m: tf.reduce_mean(m, (1, 2)), maps)
        >>> heatmaps[0].argmax() in (0, 1, 8, 9)
        True
    """
    images = images if tf.is_tensor(images) else np.asarray(images)
    count = int(images.shape[0]) if images.ndim >= 1 else 0
    if count == 0:
        raise ValueError(f"images must hold at least one image. Received: images of shape {tuple(images.shape)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int. Received: batch_size={batch_size!r}")
    wanted = _class_indices_per_image(class_indices, count)
    heatmaps, chosen, probabilities = [], [], []
    for start in range(0, count, batch_size):
        stop = min(start + batch_size, count)
        batch_maps, batch_classes, batch_probabilities = _grad_cam_batch(
            to_maps, maps_to_logits, images[start:stop], None if wanted is None else wanted[start:stop])
        heatmaps.append(batch_maps)
        chosen.append(batch_classes)
        probabilities.append(batch_probabilities)
    return np.concatenate(heatmaps), np.concatenate(chosen), np.concatenate(probabilities)


def _class_indices_per_image(class_indices, count: int) -> Optional[np.ndarray]:
    """``class_indices`` as one int per image (checked against the classes later), or None."""
    if class_indices is None:
        return None
    values = np.asarray(class_indices)
    if values.dtype == bool or not np.issubdtype(values.dtype, np.integer) or values.ndim > 1:
        raise ValueError("class_indices must be None, an int or one int per image. "
                         f"Received: class_indices={class_indices!r}")
    if values.ndim == 0:
        return np.full(count, int(values), dtype="int64")
    if len(values) != count:
        raise ValueError(f"class_indices must give one class per image ({count}). "
                         f"Received: {len(values)} class indices")
    return values.astype("int64")


def _grad_cam_batch(to_maps: Callable, maps_to_logits: Callable, images, class_indices: Optional[np.ndarray]) -> tuple:
    maps = tf.cast(tf.convert_to_tensor(to_maps(images)), tf.float32)
    if maps.shape.rank != 4:
        raise ValueError(f"to_maps must return feature maps (N, height, width, channels). Received: a tensor of shape "
                         f"{tuple(maps.shape)}")
    with tf.GradientTape() as tape:
        tape.watch(maps)
        logits = tf.cast(tf.convert_to_tensor(maps_to_logits(maps)), tf.float32)
        if logits.shape.rank != 2:
            raise ValueError(f"maps_to_logits must return class scores (N, classes). Received: a tensor of shape "
                             f"{tuple(logits.shape)}")
        classes = _checked_classes(class_indices, logits)
        # Images are independent, so the gradient of the sum is each image's own gradient.
        scores = tf.reduce_sum(tf.gather(logits, classes, batch_dims=1))
    gradients = tape.gradient(scores, maps)
    if gradients is None:
        raise ValueError("maps_to_logits returned logits that do not depend on its input maps (no gradient flows "
                         "back to them): it must compute the logits from the maps it is given")
    channel_weights = tf.reduce_mean(gradients, axis=(1, 2))
    heatmaps = tf.nn.relu(tf.einsum("nhwc,nc->nhw", maps, channel_weights)).numpy()
    return _normalised(heatmaps), classes.numpy(), tf.nn.softmax(logits).numpy()


def _checked_classes(class_indices: Optional[np.ndarray], logits: tf.Tensor) -> tf.Tensor:
    if class_indices is None:
        return tf.argmax(logits, axis=-1)
    classes = int(logits.shape[-1])
    bad = class_indices[(class_indices < 0) | (class_indices >= classes)]
    if bad.size:
        raise ValueError(f"class indices must lie in 0..{classes - 1} (the model has {classes} classes). "
                         f"Received: class index {int(bad[0])}")
    return tf.constant(class_indices, dtype=tf.int64)


def _normalised(heatmaps: np.ndarray) -> np.ndarray:
    """Each map divided by its maximum; a map whose maximum is 0 (or not finite) stays zeros."""
    heatmaps = np.nan_to_num(heatmaps.astype("float32"), nan=0.0, posinf=0.0, neginf=0.0)
    peaks = heatmaps.max(axis=(1, 2), keepdims=True)
    return np.divide(heatmaps, peaks, out=np.zeros_like(heatmaps), where=peaks > 0)


def grad_cam(model: keras.Model, images, *, class_indices=None, layer: Optional[str] = None,
             batch_size: int = _BATCH_SIZE) -> tuple:
    """Grad-CAM heat maps of ``images`` for a model built by ``build_model``.

    Args:
        model: the run's model (``build_model``'s, or one loaded with ``keras.saving``).
        images: (N, height, width, 3) pixels in [0, 255], the model's input size.
        class_indices: None (the predicted class), one int, or one int per image.
        layer: the stage whose end gives the feature maps, "conv2" to "conv5" up to the
            backbone's cut; None chooses one (``choose_layer``).
        batch_size: images per gradient pass.

    Returns:
        (heatmaps, class_indices, probabilities), as ``grad_cam_maps`` returns them; the
        probabilities are the model's own (``model.predict``'s).

    Raises:
        ConfigError: an unknown stage, or one beyond the backbone's cut (a ``ValueError``).
        ValueError: images that are not a batch of the model's input shape, or a bad class index.

    Example:
        >>> heatmaps, classes, probabilities = grad_cam(model, images[:8], layer="conv4")
    """
    stage = choose_layer(model, layer)
    images = np.asarray(images)
    expected = tuple(model.input_shape[1:])
    if images.ndim != 4 or any(size is not None and size != got for size, got in zip(expected, images.shape[1:])):
        raise ValueError(f"images must be a batch of the model's input shape (N, {', '.join(map(str, expected))}): "
                         f"resize them as the run did. Received: images of shape {images.shape}")
    to_maps, maps_to_logits = _split_at_stage(model, stage)
    return grad_cam_maps(to_maps, maps_to_logits, images.astype("float32"), class_indices, batch_size=batch_size)


def choose_layer(model: keras.Model, layer: Optional[str] = None) -> str:
    """The stage whose end ``grad_cam`` takes its maps from.

    Args:
        model: a model built by ``build_model``.
        layer: a stage, "conv2" to "conv5", checked against the backbone's cut; None for
            the last stage whose map is at least ``MIN_MAP_SIDE`` pixels on each side (at
            224 px, the backbone's output, 7x7; at 32 px with ResNet50, conv3, 4x4), or the
            largest map when no stage's is that big.

    Returns:
        The stage's name.

    Raises:
        ConfigError: ``layer`` is not a stage, or lies beyond the backbone's cut.

    Example:
        >>> choose_layer(model), choose_layer(model, "conv4")
        ('conv3', 'conv4')
    """
    stages = _stage_maps(backbone_of(model))
    if layer is not None:
        if layer not in FEATURE_LAYERS:
            raise ConfigError(f"layer must be one of: {', '.join(FEATURE_LAYERS)}. Received: layer={layer!r}")
        if layer not in stages:
            raise ConfigError(f"layer must be a stage the model's backbone computes: {', '.join(stages)} (it is cut at "
                              f"{list(stages)[-1]}, its feature_layer). Received: layer={layer!r}")
        return layer
    sides = {stage: tuple(tensor.shape[1:3]) for stage, tensor in stages.items()}
    large = [stage for stage, side in sides.items() if all(size is None or size >= MIN_MAP_SIDE for size in side)]
    if large:
        return large[-1]
    return max(sides, key=lambda stage: sides[stage][0] * sides[stage][1])  # (the first of the largest)


def _stage_maps(backbone: keras.Model) -> dict:
    """{stage: the tensor that ends it in ``backbone``'s graph}, for each stage up to its cut.

    The last stage's is the backbone's output: for a ResNetV2 uncut that is "post_relu",
    the normalised map after conv5's last block, which the head sees.
    """
    spec = get_backbone_spec(backbone.name)
    names = {layer.name for layer in backbone.layers}
    stages = [stage for stage in FEATURE_LAYERS if spec.stage_end_layer(stage) in names]
    maps = {stage: backbone.get_layer(spec.stage_end_layer(stage)).output for stage in stages[:-1]}
    maps[stages[-1]] = backbone.output
    return maps


def _split_at_stage(model: keras.Model, stage: str) -> tuple:
    """(images -> the stage's maps, maps -> logits), two functions sharing ``model``'s layers."""
    backbone, head = backbone_of(model), head_of(model)
    inner = _stage_maps(backbone)[stage]
    preprocessing = model.get_layer("preprocessing")
    to_stage = keras.Model(backbone.input, inner, name=f"{backbone.name}_to_{stage}")
    # Keras makes a model from an inner tensor by giving that tensor an Input of its own; the layers stay shared.
    rest = (None if inner is backbone.output
            else keras.Model(inner, backbone.output, name=f"{backbone.name}_after_{stage}"))
    probabilities = head.layers[-1]

    def to_maps(images):
        return to_stage(preprocessing(images, training=False), training=False)

    def maps_to_logits(maps):
        features = maps if rest is None else rest(maps, training=False)
        for layer in head.layers[:-1]:
            features = layer(features, training=False)
        # The softmax layer's affine part: the logits that Grad-CAM differentiates (the softmax would mix classes).
        logits = tf.matmul(tf.cast(features, tf.float32), tf.cast(probabilities.kernel, tf.float32))
        return logits if probabilities.bias is None else logits + tf.cast(probabilities.bias, tf.float32)

    return to_maps, maps_to_logits


def overlay(image, heatmap, *, alpha: float = 0.4) -> np.ndarray:
    """``heatmap`` in matplotlib's "jet" colours, resized to ``image`` and blended over it.

    Args:
        image: (H, W, 3), (H, W, 1) or (H, W) pixels in [0, 255].
        heatmap: (h, w) values in [0, 1] (``grad_cam``'s), resized bilinearly to (H, W).
        alpha: the heat map's share of each pixel, from 0 (the image) to 1 (the colours).

    Returns:
        (H, W, 3) uint8: ``(1 - alpha) * image + alpha * colours``.

    Raises:
        ValueError: an image or heat map of the wrong shape, or ``alpha`` outside [0, 1].

    Example:
        >>> overlay(np.zeros((32, 32, 3)), np.eye(4), alpha=0.5).shape
        (32, 32, 3)
    """
    image = np.asarray(image, dtype="float32")
    heatmap = np.asarray(heatmap, dtype="float32")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3) or 0 in image.shape:
        raise ValueError(f"image must be (height, width, 3) or (height, width) pixels. Received: an image of shape "
                         f"{image.shape}")
    if heatmap.ndim != 2 or 0 in heatmap.shape:
        raise ValueError(f"heatmap must be a 2-D map (height, width). Received: a heat map of shape {heatmap.shape}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number from 0 to 1. Received: alpha={alpha!r}")
    height, width = image.shape[:2]
    resized = np.asarray(Image.fromarray(np.clip(heatmap, 0.0, 1.0)).resize((width, height), Image.Resampling.BILINEAR))
    colours = matplotlib.colormaps["jet"](np.clip(resized, 0.0, 1.0))[..., :3] * 255.0
    blended = (1.0 - alpha) * np.clip(image, 0.0, 255.0) + alpha * colours
    return np.round(np.clip(blended, 0.0, 255.0)).astype("uint8")


def write_explanations(model: keras.Model, images, names: Sequence[str], *, class_names: Sequence[str],
                       output_dir: str, class_index: Optional[int] = None, layer: Optional[str] = None) -> list:
    """Writes one Grad-CAM PNG per image (``<stem>-gradcam.png``) into ``output_dir``.

    Each PNG is the image with its heat map over it (``overlay``), enlarged by a whole
    factor (nearest pixel) until its short side is at least ``EXPLANATION_SIDE`` pixels.
    Two names with the same stem ("a/cat.png", "b/cat.jpg") get "cat" and "cat-2". Each
    file is written atomically.

    Args:
        model: a model built by ``build_model``.
        images: (N, height, width, 3) pixels in [0, 255], the model's input size.
        names: one name (a path) per image: its stem names the PNG, and the result keeps it.
        class_names: the model's classes, in the order of its outputs.
        output_dir: the folder for the PNGs (made if missing).
        class_index: the class to explain in every image; None for each one's predicted class.
        layer: the stage, as ``choose_layer`` takes it (None: chosen).

    Returns:
        One dict per image, in order: {"path": its name, "explanation": the PNG's path,
        "class": the explained class's name, "class_index": its index, "probability":
        the model's probability of it, "layer": the stage}.

    Raises:
        ConfigError: a ``class_index`` the model does not have, or a ``layer`` that
            ``choose_layer`` refuses (both are ``ValueError``s).
        ValueError: names or class names that do not fit the images or the model, or
            images that ``grad_cam`` refuses.

    Example:
        >>> rows = write_explanations(model, images, ["cat.png"], class_names=["cat", "dog"], output_dir="explain")
        >>> rows[0]["explanation"]
        'explain/cat-gradcam.png'
    """
    names = [str(name) for name in names]
    if len(names) != len(images):
        raise ValueError(f"names must give one name per image ({len(images)}). Received: {len(names)} names")
    classes = int(model.output_shape[-1])
    if len(class_names) != classes:
        raise ValueError(f"class_names must name the model's {classes} classes. Received: "
                         f"{len(class_names)} class names ({', '.join(map(str, class_names))})")
    if class_index is not None and (isinstance(class_index, bool) or not isinstance(class_index, (int, np.integer))
                                    or not 0 <= class_index < classes):
        raise ConfigError(f"class_index must be None (each image's predicted class) or a class of the model, 0 to "
                          f"{classes - 1}. Received: class_index={class_index!r}")
    stage = choose_layer(model, layer)
    os.makedirs(output_dir, exist_ok=True)
    rows, stems = [], _unique_stems(names)
    for start in range(0, len(names), _BATCH_SIZE):  # (a batch's PNGs are written before the next is computed)
        batch = np.asarray(images[start : start + _BATCH_SIZE])
        heatmaps, chosen, probabilities = grad_cam(model, batch, class_indices=class_index, layer=stage)
        for name, image, heatmap, index, row_probabilities, stem in zip(
                names[start:], batch, heatmaps, chosen, probabilities, stems[start:]):
            path = os.path.join(output_dir, stem + EXPLANATION_SUFFIX)
            _write_png(overlay(_enlarged(image), heatmap), path)
            rows.append({"path": name, "explanation": path, "class": class_names[int(index)],
                         "class_index": int(index), "probability": float(row_probabilities[int(index)]),
                         "layer": stage})
    return rows


def _unique_stems(names: list) -> list:
    """Each name's file stem, with "-2", "-3" ... after a stem already taken. Stems are compared
    without case: on a case-insensitive disk (macOS, Windows) "Cat" and "cat" are one file."""
    taken, stems = set(), []
    for position, name in enumerate(names):
        base = os.path.splitext(os.path.basename(name.rstrip("/\\")))[0] or f"image-{position + 1}"
        stem, copy = base, 1
        while stem.casefold() in taken:
            copy += 1
            stem = f"{base}-{copy}"
        taken.add(stem.casefold())
        stems.append(stem)
    return stems


def _enlarged(image: np.ndarray) -> np.ndarray:
    """``image`` enlarged by the smallest whole factor that makes its short side at least
    ``EXPLANATION_SIDE`` (nearest pixel, so a 32 px digit stays sharp), as float pixels."""
    image = np.asarray(image, dtype="float32")
    factor = -(-EXPLANATION_SIDE // max(1, min(image.shape[:2])))
    return image if factor <= 1 else image.repeat(factor, axis=0).repeat(factor, axis=1)


def _write_png(pixels: np.ndarray, path: str) -> None:
    try:
        with atomic_path(path) as temporary:
            Image.fromarray(pixels).save(temporary, format="PNG")
    except OSError as error:  # (a full or read-only disk: name the PNG, not the temporary file beside it)
        if error.errno is None:
            raise
        raise OSError(error.errno, error.strerror, path) from error


def explain_run(run_dir: str, inputs: Sequence[str], *, class_name: Optional[str] = None, layer: Optional[str] = None,
                output_dir: Optional[str] = None) -> list:
    """Grad-CAM PNGs for image files with a run's model (``write_explanations``), the images
    prepared as in training (the run's size and resize mode).

    What cannot be explained is skipped and listed, the others are explained: an input that
    names nothing, a file that is no readable image, a file given twice (through a folder and
    a glob, say), and an explanation that an earlier ``explain`` wrote into ``output_dir``
    (a ``*-gradcam.png`` there, found through a folder or a glob: explaining it again would
    write ``*-gradcam-gradcam.png`` on every run).

    Args:
        run_dir: a finished run.
        inputs: image files, folders or globs (``prediction.expand_inputs``).
        class_name: the class to explain in every image (one of the run's); None for each
            image's predicted class.
        layer: the backbone stage, "conv2" to "conv5" (None: ``choose_layer``'s).
        output_dir: where the PNGs go (None: the run's ``explanations`` folder).

    Returns:
        ``write_explanations``' rows, then {"path", "error"} for each input skipped.

    Raises:
        DataError: no readable image among ``inputs``, a class the run does not have, or an
            ``output_dir`` that is a file (or lies under one).
        ConfigError: a ``layer`` the backbone does not compute, or a Keras backend other than TensorFlow.
        RunDirectoryError: not a finished run.

    Example:
        >>> rows = explain_run("runs/quick", ["examples/digits"], class_name="7")
        >>> rows[0]["explanation"]
        'runs/quick/explanations/test00-label7-gradcam.png'
    """
    check_backend()
    run = Run(run_dir)
    model = run.load_model()
    output_dir = output_dir or run.file("explanations")
    _check_output_dir(output_dir)
    class_names = list(run.labels)
    if class_name is not None and class_name not in class_names:
        raise DataError(_unknown_class(class_name, class_names, run.path))
    _check_run_layer(model, layer, run.path)  # (a bad --feature-layer stops before any image is read)
    size, resize = run.image_geometry
    images, names, skipped = [], [], []
    for path, reason in _explainable_files(inputs, output_dir):
        if reason:
            skipped.append({"path": path, "error": reason})
            continue
        try:
            images.append(read_image(path, size=size, resize=resize))
            names.append(path)
        except ImageReadError as error:
            skipped.append({"path": path, "error": error.reason})
    if not images:
        first = f" (for example {skipped[0]['path']!r}: {skipped[0]['error']})" if skipped else ""
        raise DataError(f"no readable image in {', '.join(map(repr, inputs))}{first}; give image files (PNG, JPEG, "
                        "...) or folders holding them")
    rows = write_explanations(model, np.stack(images), names, class_names=class_names, output_dir=output_dir,
                              class_index=None if class_name is None else class_names.index(class_name), layer=layer)
    return rows + skipped


def _check_output_dir(output_dir: str) -> None:
    """Refuses an output folder that is a file, or lies under one, before any work is done."""
    folder = os.path.abspath(output_dir)
    while not os.path.exists(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        where = "is a file" if folder == os.path.abspath(output_dir) else f"lies under {folder!r}, a file"
        raise DataError(f"--output {output_dir!r} {where}, not a folder: give a folder for the PNGs (it is made if "
                        "missing)")


def _unknown_class(class_name: str, class_names: list, run_path: str) -> str:
    shown = ", ".join(class_names[:20]) + (", ..." if len(class_names) > 20 else "")
    hint = ""
    close = [name for name in class_names if name.casefold() == class_name.strip().casefold()]
    if close:
        hint = f"; did you mean --class {close[0]!r}?"
    elif class_name.strip().isdigit() and int(class_name) < len(class_names):
        hint = (f"; --class takes a class's name, not its place: class {int(class_name)} is "
                f"--class {class_names[int(class_name)]!r}")
    return f"--class {class_name!r} is not a class of run {run_path!r}; its classes: {shown}{hint}"


def _check_run_layer(model: keras.Model, layer: Optional[str], run_path: str) -> None:
    """``choose_layer``'s check, in the command line's words: which stages this run's model computes."""
    stages = list(_stage_maps(backbone_of(model)))
    if layer is not None and layer in FEATURE_LAYERS and layer not in stages:
        raise ConfigError(f"--feature-layer {layer!r}: run {run_path!r} cuts its backbone at {stages[-1]} (it was "
                          f"trained with --feature-layer {stages[-1]}), so its model computes {', '.join(stages)}; "
                          "give one of those, or leave --feature-layer out")
    choose_layer(model, layer)


def _explainable_files(inputs: Sequence[str], output_dir: str) -> list:
    """(path, "") for each file to explain, (path or input, why not) for each one skipped."""
    output_dir = os.path.realpath(output_dir)
    files, seen = [], {}
    for item in inputs:
        try:
            paths = expand_inputs([item])
        except DataError:
            files.append((item, "no such file or folder, and no glob match"))
            continue
        for path in paths:
            real = os.path.realpath(path)
            if real in seen:
                files.append((path, f"given twice (the same file as {seen[real]!r})"))
            elif (path != item and real.endswith(EXPLANATION_SUFFIX)
                  and os.path.dirname(real) == output_dir):
                files.append((path, f"an explanation written by explain into the output folder (*{EXPLANATION_SUFFIX})"))
            else:
                seen[real] = path
                files.append((path, ""))
    return files


def check_backend() -> None:
    """Raises ``ConfigError`` unless Keras runs on TensorFlow, whose gradient tape Grad-CAM uses."""
    if keras.backend.backend() != "tensorflow":
        raise ConfigError(f"Grad-CAM takes its gradients with TensorFlow, and Keras runs on "
                          f"{keras.backend.backend()}: run with KERAS_BACKEND=tensorflow")
