"""Run configuration: one frozen dataclass per stage, validated on creation.

Precedence is defaults < config file (JSON) < command-line flags. Unknown keys
are errors. Every run writes its resolved configuration to ``config.json``.

Each field carries its command-line help in its metadata (``option``), and the
CLI builds its ``train`` flags from these fields, so a setting is declared once.

Example:
    >>> config = RunConfig.from_dict({"model": {"weights": "none"}, "data": {"limit": 512}})
    >>> config.train.epochs
    40
"""

import codecs
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from resnet_transfer.errors import ConfigError
from resnet_transfer.recipes import PRETRAIN_SETTINGS, RECIPES, apply_recipe
from resnet_transfer.registry import BACKBONES, get_backbone_spec

__all__ = [
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "RunConfig",
    "load_config_file",
    "read_config_values",
    "flat_settings",
    "HOW_SETTINGS",
    "parse_shard",
    "option",
    "parse_count_or_fraction",
    "BUILTIN_DATA",
    "RESIZE_MODES",
    "PREPROCESS_MODES",
    "CACHE_DTYPES",
    "POOLINGS",
    "HEADS",
    "UNFREEZE_POINTS",
    "AUGMENT_LEVELS",
    "AUGMENT_PHASES",
    "PHASES",
    "FEATURE_LAYERS",
    "parse_class_list",
    "check_settings_take_effect",
    "EXPORT_FORMATS",
    "check_export_settings",
]

BUILTIN_DATA = ("mnist", "fashion_mnist", "cifar10", "cifar100")
RESIZE_MODES = ("pad", "stretch", "crop")
PREPROCESS_MODES = ("seed", "imagenet")
CACHE_DTYPES = ("float32", "float16")
POOLINGS = ("auto", "flatten", "avg", "max")
HEADS = ("seed", "linear", "mlp")
UNFREEZE_POINTS = ("all", "conv5", "conv4", "conv3", "conv2")
AUGMENT_LEVELS = ("none", "light", "strong")
AUGMENT_PHASES = ("fine-tune", "both")
PHASES = ("head", "fine-tune")
# tf.distribute strategies (training.distribution)
STRATEGIES = ("auto", "default", "mirrored", "multi-worker")
EXTRACT_RUNTIMES = ("auto", "keras", "openvino", "tflite", "onnx")
# Where features are taken: the end of a residual stage (fastai's "cut"); conv5 is the backbone's output.
FEATURE_LAYERS = ("conv2", "conv3", "conv4", "conv5")


def parse_class_list(text: str) -> tuple:
    """'0,1,2' or 'cat, dog' -> a tuple of class names or indices, as text."""
    names = tuple(part.strip() for part in str(text).split(","))
    if not names or any(not name for name in names):
        raise ValueError(f"expected class names or indices separated by commas (e.g. 0,1,2 or cat,dog), got {text!r}")
    return names


def parse_count_or_fraction(text: str):
    """'500' -> 500, '0.2' -> 0.2 (range checked by the config)."""
    try:
        return float(text) if any(mark in text.lower() for mark in ".en") else int(text)
    except ValueError:
        raise ValueError(f"expected a count (e.g. 500) or a fraction (e.g. 0.2), got {text!r}") from None


def option(default, help: str, *, flag: Optional[str] = None, parse=None, const=None, metavar=None):
    """A config field with its command-line flag: ``--field-name`` unless ``flag`` says otherwise.

    Args:
        default: the field's default.
        help: the flag's help text (the default is appended by the CLI).
        flag: the flag's name when it is not the field's name with dashes.
        parse: converts the flag's text (default: from the field's type).
        const: for switches (``--strict``, ``--no-cache``), the value the switch sets.
    """
    metadata = {"help": help, "flag": flag, "parse": parse, "const": const, "metavar": metavar}
    return field(default=default, metadata=metadata)


def _require_int(name: str, value: Any, minimum: int, *, allow_none: bool = False, maximum: Optional[int] = None) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum is not None and value > maximum):
        allowed = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ConfigError(f"{name} must be an integer {allowed}. Received: {name}={value!r}")


def _require_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of: {', '.join(choices)}. Received: {name}={value!r}")


def _require_text(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a non-empty string. Received: {name}={value!r}")


def _require_number(name: str, value: Any, *, low: float, high: float, high_included: bool = False,
                    low_included: bool = True) -> None:
    """A finite number in [low, high) (or with the ends the flags say)."""
    inside = (
        not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
        and (value >= low if low_included else value > low) and (value <= high if high_included else value < high)
    )
    if not inside:
        allowed = f"{'[' if low_included else '('}{low:g}, {high:g}{']' if high_included else ')'}"
        raise ConfigError(f"{name} must be a number in {allowed}. Received: {name}={value!r}")


def _require_size(name: str, value: Any) -> None:
    """A count (int >= 1), a fraction (0 < float < 1), or None."""
    if value is None or (isinstance(value, float) and 0 < value < 1):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"{name} must be a count (an integer >= 1) or a fraction (between 0 and 1). Received: {name}={value!r}"
        )


def _class_selection(value: Any) -> tuple:
    """A class selection from a flag's text, or a config file's list of names and indices."""
    if isinstance(value, str):
        try:
            entries = list(parse_class_list(value))
        except ValueError as error:
            raise ConfigError(f"classes: {error}. Received: classes={value!r}") from None
    else:
        entries = list(value) if isinstance(value, (list, tuple)) else None
    if not entries or any(isinstance(entry, bool) or not isinstance(entry, (str, int)) or str(entry).strip() == ""
                          for entry in entries):
        raise ConfigError("classes must be a non-empty list of class names or indices, or their comma-separated text "
                          f"(e.g. \"0,1,2\"). Received: classes={value!r}")
    names = tuple(str(entry).strip() for entry in entries)
    if len(set(names)) != len(names):
        raise ConfigError(f"classes names a class twice; name each once. Received: classes={','.join(names)}")
    return names


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from, how they are shaped and how they are split.

    Args:
        source: "mnist" (the seed recipe's), "fashion_mnist", "cifar10", "cifar100",
            a folder of class folders (or with train/, val/, test/), a .csv or a .npz file.
        data_dir: for MNIST, a folder holding ``mnist.npz`` or the four IDX ``.gz`` files.
        limit: train on the first ``limit`` training images only (None: all).
        val_size: validation images, a count or a fraction (MNIST: the LAST 2000; others:
            a stratified, seeded 0.2 unless there is a val/ folder).
        test_limit: evaluate on the first ``test_limit`` test images only (None: all).
        test_size: held-out test share for sources without test images.
        image_size: side of the square backbone input (None: 32 for 28x28 images, else
            the backbone's default, 224).
        resize: "pad", "stretch" or "crop" (None: "pad" for 28x28 -> 32, else "stretch").
        path_column, label_column: the CSV's columns.
        encoding: the CSV's text encoding (None: UTF-8, with or without a byte-order mark).
        classes: keep only these classes (names, or indices into the source's class order),
            in every split; the model's outputs keep the source's order. None: all.
        strict: turn every skipped input into an error.
    """

    source: str = option("mnist", "mnist, fashion_mnist, cifar10, cifar100, a folder of class folders, a .csv or a .npz file", flag="--data")
    data_dir: Optional[str] = option(None, "folder with mnist.npz or the four MNIST IDX .gz files")
    limit: Optional[int] = option(None, "train on the first N training images only")
    val_size: Any = option(None, "validation images, a count or a fraction (MNIST: the last 2000; others: stratified 0.2)", parse=parse_count_or_fraction)
    test_limit: Optional[int] = option(None, "evaluate on the first N test images only")
    test_size: Any = option(0.2, "test share for data without test images", parse=parse_count_or_fraction)
    image_size: Optional[int] = option(None, "square input side (32 for 28x28 images, else the backbone's 224)")
    resize: Optional[str] = option(None, "pad, stretch or crop (pad for 28x28 -> 32, else stretch)")
    path_column: str = option("path", "CSV column with image paths")
    label_column: str = option("label", "CSV column with labels")
    encoding: Optional[str] = option(None, "the CSV's text encoding (UTF-8 with or without BOM if not given)")
    classes: Optional[tuple] = option(None, "keep only these classes: names or indices, comma-separated (e.g. 0,1,2,3,4)",
                                      parse=parse_class_list, metavar="A,B,...")
    strict: bool = option(False, "stop on any unreadable or unusable input instead of skipping it", const=True)

    def __post_init__(self):
        if self.classes is not None:
            object.__setattr__(self, "classes", _class_selection(self.classes))
        if not isinstance(self.source, str) or not (
            self.source in BUILTIN_DATA or os.path.isdir(self.source) or (
                os.path.isfile(self.source) and self.source.lower().endswith((".csv", ".npz")))
        ):
            raise ConfigError(
                f"data must be one of {', '.join(BUILTIN_DATA)}, an existing folder of class folders, "
                f"or an existing .csv or .npz file. Received: data={self.source!r}"
            )
        _require_int("limit", self.limit, 1, allow_none=True)
        _require_size("val_size", self.val_size)
        _require_int("test_limit", self.test_limit, 1, allow_none=True)
        _require_size("test_size", self.test_size)
        _require_int("image_size", self.image_size, 1, allow_none=True)
        if self.resize is not None:
            _require_choice("resize", self.resize, RESIZE_MODES)
        if self.data_dir is not None and (not isinstance(self.data_dir, str) or not os.path.isdir(self.data_dir)):
            raise ConfigError(f"data_dir must be an existing folder. Received: data_dir={self.data_dir!r}")
        _require_text("path_column", self.path_column)
        _require_text("label_column", self.label_column)
        _require_text("encoding", self.encoding, allow_none=True)
        if self.encoding is not None:
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                raise ConfigError(
                    f"encoding must be a text encoding Python knows (utf-8, cp1252, latin-1, ...). Received: encoding={self.encoding!r}"
                ) from None
        if not isinstance(self.strict, bool):
            raise ConfigError(f"strict must be true or false. Received: strict={self.strict!r}")


@dataclass(frozen=True)
class ModelConfig:
    """The backbone, its weights and preprocessing, and the head on top.

    Args:
        backbone: a name from ``resnet_transfer.model.BACKBONES``.
        weights: "imagenet" (Keras downloads and caches them under KERAS_HOME),
            "none" (random initialisation) or the path of a weights file.
        preprocess: "seed" (scale pixels to [0, 1], as the article does) or
            "imagenet" (the backbone's own ImageNet preprocessing).
        pooling: how the backbone's feature map becomes a vector: "flatten", "avg", "max"
            (Keras applications' ``pooling``), or "auto": flatten for a 1x1 map (the
            seed recipe's model), avg otherwise.
        head: "seed" (pooling -> Dense(head_units, relu) -> Dense(C, softmax)), "linear"
            (pooling -> Dense(C, softmax)) or "mlp" (pooling -> Dropout -> Dense(head_units,
            relu) -> Dropout -> Dense(C, softmax)).
        head_units: width of the head's hidden Dense layer (seed and mlp heads).
        dropout: the mlp head's dropout rate.
        feature_layer: where the head takes the features: the end of stage "conv2", "conv3",
            "conv4" or "conv5" (the backbone's output); the backbone is cut there.
        bn_recalibrate: before the head phase, set every BatchNormalization layer's moving
            statistics to those of the training images (AdaBN; ``model.batch_norm``).
        bn_images: how many training images (a seeded sample) those statistics are computed
            over, for ``bn_recalibrate`` and at the end of ``pretrain``.
    """

    backbone: str = option("resnet152", ", ".join(BACKBONES))
    weights: str = option("imagenet", "imagenet, none (random), or the path of a weights file")
    preprocess: str = option("seed", "seed (scale to [0, 1]) or imagenet (the backbone's preprocess_input)")
    pooling: str = option("auto", "auto, flatten, avg or max (auto: flatten for a 1x1 feature map, else avg)")
    head: str = option("seed", "seed (Dense(units, relu) -> softmax), linear (softmax only) or mlp (with dropout)")
    head_units: int = option(1000, "width of the head's hidden layer (seed and mlp heads)")
    dropout: float = option(0.2, "dropout rate of the mlp head")
    feature_layer: str = option("conv5", "take the features at the end of stage conv2, conv3, conv4 or conv5 (the "
                                "backbone's output); earlier stages transfer better from a distant source task")
    bn_recalibrate: bool = option(False, "before the head phase, re-estimate the backbone's BatchNormalization "
                                  "statistics on (a sample of) the training images (AdaBN), for a backbone from "
                                  "another domain", const=True)
    bn_images: int = option(4096, "training images (a seeded sample; all if fewer) over which BatchNormalization "
                            "statistics are recomputed (--bn-recalibrate, and the end of pretrain)")

    def __post_init__(self):
        _require_choice("backbone", self.backbone, tuple(BACKBONES))
        if not isinstance(self.bn_recalibrate, bool):
            raise ConfigError(f"bn_recalibrate must be true or false. Received: bn_recalibrate={self.bn_recalibrate!r}")
        _require_int("bn_images", self.bn_images, 16)  # (fewer give statistics of a few images' quirks, or variance 0)
        _require_choice("feature_layer", self.feature_layer, FEATURE_LAYERS)
        _require_choice("preprocess", self.preprocess, PREPROCESS_MODES)
        _require_choice("pooling", self.pooling, POOLINGS)
        _require_choice("head", self.head, HEADS)
        _require_int("head_units", self.head_units, 1)
        _require_number("dropout", self.dropout, low=0.0, high=1.0)
        if not isinstance(self.weights, str) or not self.weights:
            raise ConfigError(
                f"weights must be 'imagenet', 'none' or the path of a weights file. Received: weights={self.weights!r}"
            )
        if self.weights not in ("imagenet", "none"):
            if not os.path.isfile(self.weights) or not os.access(self.weights, os.R_OK):
                raise ConfigError(
                    "weights must be 'imagenet', 'none' or the path of a readable weights file. "
                    f"Received: weights={self.weights!r}, which is not a readable file"
                )


@dataclass(frozen=True)
class TrainConfig:
    """How the model is trained: the head phase, then an optional fine-tune phase.

    Args:
        epochs: passes over the training images in the head phase (0: the untrained head
            is only evaluated, unless a fine-tune phase follows).
        batch_size: images per optimizer step.
        learning_rate: Adam's learning rate in the head phase (Keras's default is 0.001).
        label_smoothing: Keras's ``CategoricalCrossentropy(label_smoothing=...)``; 0: none.
        weight_decay: > 0 uses AdamW with this decoupled weight decay instead of Adam.
        fine_tune_epochs: epochs of the fine-tune phase (0: no fine-tuning).
        unfreeze: what the fine-tune phase trains: "all" layers, or the stage "convK" and
            every stage above it (Keras's ResNet layer names ``convK_...``).
        fine_tune_lr: learning rate of the fine-tune phase.
        augment: "none", "light" or "strong" random translation, rotation, zoom and contrast.
        augment_phase: "fine-tune" (the head phase keeps its cached features) or "both".
        flip: also flip images horizontally when augmenting (not for digits or text).
        train_bn: the fine-tune phase also trains every unfrozen stage's BatchNormalization
            scale and offset (fastai's default); the layers stay in inference mode, their
            moving statistics frozen.
        jit_compile: XLA: "auto" (where it was measured faster on CPU: the head on stored
            features and the fine-tune phase, with TensorFlow or JAX), "on" or "off".
        run_eagerly: Keras's ``run_eagerly`` (XLA is then off): no graph is traced.
        strategy: tf.distribute strategy: "auto" (MultiWorkerMirroredStrategy when TF_CONFIG
            describes a cluster, MirroredStrategy when more than one GPU is visible, else the
            default), "default", "mirrored" or "multi-worker" (``training.distribution``).
        seed: fixes Python, numpy and Keras random state, and the shuffling.
        feature_cache: "auto" runs the frozen backbone once and trains the head on
            stored features; "off" runs the backbone in every epoch, as the article does.
        cache_dir: where stored features live (None: the user's cache directory).
        cache_dtype: "float32" or "float16" for stored features.
        mixed_precision: Keras's mixed dtype policy (``model.precision``): "mixed_float16" on
            a GPU, "mixed_bfloat16" on a CPU with bfloat16 instructions; refused elsewhere.
        extract_runtime: what runs the frozen backbone's pass over the images: "auto" (OpenVINO
            where converting the backbone is expected to pay off and the converted backbone's
            features are within 1e-5 of Keras's and it runs faster; else Keras), "keras",
            "openvino", "tflite" (LiteRT) or "onnx" (ONNX Runtime) (``training.runtimes``).
        steps_per_execution: optimizer steps per compiled call (8 measured fastest).
        class_weight: None, or "balanced" to weight the loss by inverse class frequency.
    """

    epochs: int = option(40, "passes over the training images (0: only evaluate the untrained head)")
    batch_size: int = option(64, "images per optimizer step")
    learning_rate: float = option(0.001, "Adam's learning rate")
    seed: int = option(0, "random seed of weights, shuffling and splits")
    feature_cache: str = option("auto", "run the backbone in every epoch (the article's way) instead of once",
                                flag="--no-cache", const="off")
    cache_dir: Optional[str] = option(None, "feature cache folder (~/.cache/resnet-transfer/features if not given)")
    cache_dtype: str = option("float32", "float32 or float16 for stored features")
    mixed_precision: bool = option(False, "compute in 16 bits, variables and the output layer in float32: "
                                   "mixed_float16 on a GPU, mixed_bfloat16 on a CPU with bfloat16 instructions "
                                   "(refused elsewhere)", const=True)
    extract_runtime: str = option("auto", "what runs the frozen backbone's pass: auto (OpenVINO where converting the "
                                  "backbone is expected to pay off and it checks within 1e-5 of Keras and faster, "
                                  "else Keras), keras, openvino, tflite (LiteRT) or onnx (ONNX Runtime)")
    steps_per_execution: int = option(8, "optimizer steps per compiled call")
    class_weight: Optional[str] = option(None, "balanced: weight the loss by inverse class frequency")
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy (0: none)")
    weight_decay: float = option(0.0, "decoupled weight decay; > 0 uses AdamW instead of Adam")
    fine_tune_epochs: int = option(0, "epochs of the fine-tune phase after the head phase (0: none)")
    unfreeze: str = option("all", "what fine-tuning trains: all, or conv5, conv4, conv3, conv2 and the stages above it")
    fine_tune_lr: float = option(1e-5, "learning rate of the fine-tune phase")
    augment: str = option("none", "none, light or strong random translation, rotation, zoom and contrast")
    augment_phase: str = option("fine-tune", "fine-tune (keeps the head phase on cached features) or both")
    flip: bool = option(False, "also flip images horizontally when augmenting (never for digits or text)", const=True)
    train_bn: bool = option(False, "in the fine-tune phase, also train the BatchNormalization layers' scale and "
                            "offset (their moving statistics stay frozen, in inference mode)", const=True)
    jit_compile: str = option("auto", "XLA: auto (where measured faster: head on features, fine-tuning), on or off")
    run_eagerly: bool = option(False, "Keras's run_eagerly: no graph is traced (for debugging, or a few steps of a "
                               "trainable ResNet, whose tracing takes about a minute on a CPU)", const=True)
    strategy: str = option("auto", "tf.distribute strategy: auto (multi-worker when TF_CONFIG describes a cluster, "
                           "mirrored when more than one GPU is visible), default, mirrored (every GPU, else every "
                           "logical CPU) or multi-worker (the cluster of TF_CONFIG); --batch-size is the global batch")

    def __post_init__(self):
        _require_int("epochs", self.epochs, 0)
        _require_int("fine_tune_epochs", self.fine_tune_epochs, 0)
        _require_number("label_smoothing", self.label_smoothing, low=0.0, high=1.0)
        _require_number("weight_decay", self.weight_decay, low=0.0, high=1.0)
        _require_number("fine_tune_lr", self.fine_tune_lr, low=0.0, high=math.inf, low_included=False)
        _require_choice("unfreeze", self.unfreeze, UNFREEZE_POINTS)
        _require_choice("augment", self.augment, AUGMENT_LEVELS)
        _require_choice("augment_phase", self.augment_phase, AUGMENT_PHASES)
        _require_choice("jit_compile", self.jit_compile, ("auto", "on", "off"))
        _require_choice("strategy", self.strategy, STRATEGIES)
        if not isinstance(self.run_eagerly, bool):
            raise ConfigError(f"run_eagerly must be true or false. Received: run_eagerly={self.run_eagerly!r}")
        if not isinstance(self.flip, bool):
            raise ConfigError(f"flip must be true or false. Received: flip={self.flip!r}")
        if self.augment != "none" and self.augment_phase == "fine-tune" and self.fine_tune_epochs == 0:
            raise ConfigError(
                f"augment={self.augment!r} applies in the fine-tune phase (augment_phase='fine-tune'), and there is none "
                "(fine_tune_epochs=0): add --fine-tune-epochs N, or --augment-phase both to augment the head phase"
            )
        if not isinstance(self.train_bn, bool):
            raise ConfigError(f"train_bn must be true or false. Received: train_bn={self.train_bn!r}")
        if self.flip and self.augment == "none":
            raise ConfigError("flip is part of augmentation, and augment='none': add --augment light or --augment strong")
        _require_int("batch_size", self.batch_size, 1)
        _require_int("seed", self.seed, 0, maximum=2**32 - 1)  # numpy's and Keras's seeding range
        _require_int("steps_per_execution", self.steps_per_execution, 1)
        rate = self.learning_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
            raise ConfigError(f"learning_rate must be a finite number > 0. Received: learning_rate={rate!r}")
        _require_choice("feature_cache", self.feature_cache, ("auto", "off"))
        _require_choice("extract_runtime", self.extract_runtime, EXTRACT_RUNTIMES)
        if not isinstance(self.mixed_precision, bool):
            raise ConfigError(f"mixed_precision must be true or false. Received: mixed_precision={self.mixed_precision!r}")
        if self.mixed_precision and self.extract_runtime not in ("auto", "keras"):
            raise ConfigError(f"--extract-runtime {self.extract_runtime} converts a float32 backbone, and "
                              "--mixed-precision computes it in 16 bits: give one of them")
        _require_choice("cache_dtype", self.cache_dtype, CACHE_DTYPES)
        if self.cache_dir is not None:
            _require_text("cache_dir", self.cache_dir)
            if os.path.exists(self.cache_dir) and not os.path.isdir(self.cache_dir):
                raise ConfigError(f"cache_dir must be a folder, not a file. Received: cache_dir={self.cache_dir!r}")
        if self.class_weight is not None:
            _require_choice("class_weight", self.class_weight, ("balanced",))


@dataclass(frozen=True)
class RunConfig:
    """Everything one ``train`` run needs; its defaults are the seed recipe.

    Args:
        data, model, train: the stage configurations.
        recipe: the named settings laid under the given ones (``recipes.RECIPES``).
        run_dir: the run's output folder (None: ``runs/<UTC timestamp>-<backbone>``).
        tensorboard: also write TensorBoard logs to ``RUN_DIR/tensorboard``.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run_dir: Optional[str] = option(None, "output folder (runs/<UTC timestamp>-<backbone> if not given); never overwritten")
    tensorboard: bool = option(False, "also write TensorBoard logs to RUN_DIR/tensorboard", const=True)
    recipe: str = option("seed", "; ".join(f"{name}: {recipe.description}" for name, recipe in RECIPES.items())
                         + "; flags override its settings")

    SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}

    def __post_init__(self):
        _require_text("run_dir", self.run_dir, allow_none=True)
        _require_choice("recipe", self.recipe, tuple(RECIPES))
        if not isinstance(self.tensorboard, bool):
            raise ConfigError(f"tensorboard must be true or false. Received: tensorboard={self.tensorboard!r}")
        unfreeze, cut = self.train.unfreeze, self.model.feature_layer
        if unfreeze != "all" and unfreeze > cut:
            raise ConfigError(
                f"unfreeze={unfreeze!r} (from --unfreeze, the config file or the recipe) is above feature_layer={cut!r}: "
                f"the backbone is cut at the end of {cut}, so {unfreeze} is not in the model. Pass --unfreeze {cut} "
                "(or an earlier stage, or all), or a later --feature-layer"
            )
        if self.data.image_size is not None:
            spec = get_backbone_spec(self.model.backbone)
            if self.data.image_size < spec.min_input_size:
                raise ConfigError(
                    f"image_size must be at least {spec.min_input_size} for {spec.name} (Keras's smallest input "
                    f"without the top). Received: image_size={self.data.image_size}"
                )

    @classmethod
    def from_dict(cls, values: Any) -> "RunConfig":
        """Builds a config from nested dicts laid over their recipe's settings (``recipes``);
        unknown keys and wrong types raise ``ConfigError``."""
        if not isinstance(values, dict):
            raise ConfigError(f"a config must be a JSON object. Received: {type(values).__name__}")
        values = apply_recipe(values)
        top_level = {f.name for f in dataclasses.fields(cls)} - set(cls.SECTIONS)
        unknown = set(values) - set(cls.SECTIONS) - top_level
        if unknown:
            allowed = ", ".join(sorted(set(cls.SECTIONS) | top_level))
            raise ConfigError(f"unknown config keys: {', '.join(sorted(map(str, unknown)))}. Allowed: {allowed}")
        built = {}
        for name, section_class in cls.SECTIONS.items():
            section = values.get(name, {})
            if not isinstance(section, dict):
                raise ConfigError(
                    f"config section '{name}' must be an object of settings, like {{\"{name}\": {{...}}}}. "
                    f"Received: {type(section).__name__}"
                )
            names = {f.name for f in dataclasses.fields(section_class)}
            unknown = set(section) - names
            if unknown:
                raise ConfigError(
                    f"unknown keys in config section '{name}': {', '.join(sorted(map(str, unknown)))}. "
                    f"Allowed: {', '.join(sorted(names))}"
                )
            built[name] = section_class(**section)
        return cls(**built, **{key: values[key] for key in top_level if key in values})

    def to_dict(self) -> dict:
        """The config as nested plain dicts (what ``config.json`` stores under "config")."""
        return dataclasses.asdict(self)

    def updated(self, overrides: dict) -> "RunConfig":
        """Returns a copy with ``overrides`` (same nesting as ``to_dict``) applied.

        A changed ``recipe`` is laid under the overrides only: this config's resolved
        values win over it. To combine a recipe with settings, use ``from_dict``.
        """
        merged = self.to_dict()
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key].update(value)
            else:
                merged[key] = value
        return RunConfig.from_dict(merged)


def load_config_file(path: str) -> RunConfig:
    """Reads a JSON config file (same nesting as ``RunConfig.to_dict``).

    Raises:
        ConfigError: the file cannot be read, is not UTF-8 JSON, or has unknown keys or bad values.
    """
    return RunConfig.from_dict(read_config_values(path))


def read_config_values(path: str) -> dict:
    """The settings of a JSON config file as nested dicts, not yet checked.

    Raises:
        ConfigError: the file cannot be read or is not UTF-8 JSON.
    """
    try:
        with open(path, encoding="utf-8-sig") as handle:
            values = json.load(handle)
    except OSError as error:
        raise ConfigError(f"cannot read config file {path!r}: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path!r} is not UTF-8 text ({error.reason}); save it as UTF-8 JSON") from error
    except json.JSONDecodeError as error:
        raise ConfigError(f"config file {path!r} is not valid JSON ({error}); fix it or leave out --config") from error
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path!r} must hold a JSON object. Received: {type(values).__name__}")
    return values


# Settings that change where a run's files are and how it computes, not what it computes.
# The extraction runtime is one of them: a converted backbone's features are checked within 1e-5 of Keras's.
HOW_SETTINGS = frozenset({"run_dir", "tensorboard", "data.data_dir", "train.cache_dir", "train.jit_compile",
                          "train.run_eagerly", "train.strategy", "train.extract_runtime"})


def flat_settings(values: dict, prefix: str = "") -> dict:
    """``RunConfig.to_dict``-style nested settings as {"section.name": value}."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flat_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def parse_shard(text: str) -> tuple:
    """"i/n" -> (i, n), with 0 <= i < n (``extract --shard``).

    Raises:
        ValueError: anything else.
    """
    index, _, count = text.partition("/")
    if not (index.isdecimal() and count.isdecimal()) or not 0 <= int(index) < int(count):
        raise ValueError(f"expected i/n with 0 <= i < n (for example 0/4: the first of 4 shards), got {text!r}")
    return int(index), int(count)


def check_settings_take_effect(config: RunConfig, *, verb: str = "train", fine_tuning: Optional[bool] = None) -> None:
    """Raises ``ConfigError`` for a setting given (set apart from its default and its recipe's
    value) that changes nothing under the others, naming what would give it effect: one rule
    for all of them, as for ``flip`` without ``augment``.

    Args:
        verb: "train" (and extract, reproduce), "pretrain" (one phase; it always recomputes
            the BatchNormalization statistics) or "lr-find" (whose config is usually the
            train run's that follows: its phase settings are not checked).
        fine_tuning: whether the verb trains an unfrozen backbone (None: whether there is
            a fine-tune phase; ``lr-find --phase fine-tune`` sweeps one without it).
    """
    defaults = flat_settings(RunConfig().to_dict())
    recipe = flat_settings(apply_recipe({"recipe": config.recipe}))
    if verb == "pretrain":  # (pretrain's own defaults, laid under the user's settings, are not the user's)
        recipe = flat_settings(PRETRAIN_SETTINGS)
    given = flat_settings(config.to_dict())
    fine_tuning = config.train.fine_tune_epochs > 0 if fine_tuning is None else fine_tuning
    no_phase = ("there is no fine-tune phase (fine_tune_epochs=0)", "add --fine-tune-epochs N")
    if verb == "pretrain":
        no_phase = ("pretrain trains every layer in one phase", "remove it from the config file")
    no_cache = ("--no-cache runs the backbone in every epoch, with no features to store", "leave out --no-cache")
    phase_rules = {"train.fine_tune_lr", "train.unfreeze", "train.train_bn"}
    rules = (
        ("model.head_units", config.model.head == "linear", "the linear head has no hidden layer",
         "give --head seed or --head mlp"),
        ("model.dropout", config.model.head != "mlp", f"only the mlp head has dropout, and head={config.model.head!r}",
         "give --head mlp"),
        ("model.bn_images", not config.model.bn_recalibrate and verb != "pretrain",
         "it is the sample --bn-recalibrate recomputes the BatchNormalization statistics over", "add --bn-recalibrate"),
        ("train.fine_tune_lr", not fine_tuning, *no_phase),
        ("train.unfreeze", not fine_tuning, *no_phase),
        ("train.train_bn", not fine_tuning, *no_phase),
        ("train.extract_runtime", config.train.feature_cache == "off", *no_cache),
        ("train.cache_dtype", config.train.feature_cache == "off", *no_cache),
        ("train.augment_phase", config.train.augment == "none", "nothing is augmented (augment='none')",
         "add --augment light or --augment strong"),
        ("train.jit_compile", config.train.run_eagerly, "--run-eagerly traces no graph for XLA to compile",
         "leave out --run-eagerly"),
    )
    for name, idle, why, fix in rules:
        if verb == "lr-find" and name in phase_rules:
            continue  # (lr-find is asked with the settings of the train run it prepares)
        value = given[name]
        if idle and value != defaults[name] and value != recipe.get(name, defaults[name]):
            flag = "--" + name.split(".")[1].replace("_", "-")
            raise ConfigError(f"{flag} changes nothing here: {why}. {fix[0].upper() + fix[1:]}, or leave out {flag}. "
                              f"Received: {name.split('.')[1]}={value!r}")


# export's formats (``export.export_run``)
EXPORT_FORMATS = ("savedmodel", "tflite", "onnx")


def check_export_settings(output_format: str, quantize: bool) -> None:
    """Raises ``ConfigError`` for an unknown format, or ``quantize`` with a format other than TFLite."""
    _require_choice("format", output_format, EXPORT_FORMATS)
    if quantize and output_format != "tflite":
        raise ConfigError(f"--quantize applies to tflite only. Received: format={output_format!r}")
