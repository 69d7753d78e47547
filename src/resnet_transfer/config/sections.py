"""The settings of each stage: ``DataConfig``, ``ModelConfig`` and ``TrainConfig``, frozen
dataclasses validated on creation. Each field carries its command-line help (``option``)."""

import codecs
import math
import os
from dataclasses import dataclass
from typing import Any, Optional

from resnet_transfer.config.choices import (
    AUGMENT_LEVELS, AUGMENT_PHASES, BUILTIN_DATA, CALIBRATIONS, CACHE_DTYPES, EXTRACT_RUNTIMES, FEATURE_LAYERS, HEADS, POOLINGS,
    PREPROCESS_MODES, RESIZE_MODES, STRATEGIES, UNFREEZE_POINTS, class_selection, interpolation_weight, option,
    parse_class_list, parse_count_or_fraction, require_choice, require_int, require_number, require_size, require_text,
)
from resnet_transfer.errors import ConfigError
from resnet_transfer.registry import BACKBONES

__all__ = ["DataConfig", "ModelConfig", "TrainConfig"]


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
        exclude: a file listing images to leave out, in every split (``data.exclusion``).
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
    exclude: Optional[str] = option(None, "leave out the images a file lists (audit's exclude.txt or audit.csv, or "
                                    "one path, or x_train[i] for arrays, per line), in every split", metavar="FILE")

    def __post_init__(self):
        if self.classes is not None:
            object.__setattr__(self, "classes", class_selection(self.classes))
        if not isinstance(self.source, str) or not (
            self.source in BUILTIN_DATA or os.path.isdir(self.source) or (
                os.path.isfile(self.source) and self.source.lower().endswith((".csv", ".npz")))
        ):
            raise ConfigError(
                f"data must be one of {', '.join(BUILTIN_DATA)}, an existing folder of class folders, "
                f"or an existing .csv or .npz file. Received: data={self.source!r}"
            )
        require_int("limit", self.limit, 1, allow_none=True)
        require_size("val_size", self.val_size)
        require_int("test_limit", self.test_limit, 1, allow_none=True)
        require_size("test_size", self.test_size)
        require_int("image_size", self.image_size, 1, allow_none=True)
        if self.resize is not None:
            require_choice("resize", self.resize, RESIZE_MODES)
        if self.data_dir is not None and (not isinstance(self.data_dir, str) or not os.path.isdir(self.data_dir)):
            raise ConfigError(f"data_dir must be an existing folder. Received: data_dir={self.data_dir!r}")
        if self.exclude is not None and (not isinstance(self.exclude, str) or not os.path.isfile(self.exclude)):
            raise ConfigError(f"exclude must be an existing file that lists images (audit's exclude.txt, for example). "
                              f"Received: exclude={self.exclude!r}")
        require_text("path_column", self.path_column)
        require_text("label_column", self.label_column)
        require_text("encoding", self.encoding, allow_none=True)
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
        backbone: a name from ``resnet_transfer.registry.BACKBONES``.
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
        require_choice("backbone", self.backbone, tuple(BACKBONES))
        if not isinstance(self.bn_recalibrate, bool):
            raise ConfigError(f"bn_recalibrate must be true or false. Received: bn_recalibrate={self.bn_recalibrate!r}")
        require_int("bn_images", self.bn_images, 16)  # (fewer give statistics of a few images' quirks, or variance 0)
        require_choice("feature_layer", self.feature_layer, FEATURE_LAYERS)
        require_choice("preprocess", self.preprocess, PREPROCESS_MODES)
        require_choice("pooling", self.pooling, POOLINGS)
        require_choice("head", self.head, HEADS)
        require_int("head_units", self.head_units, 1)
        require_number("dropout", self.dropout, low=0.0, high=1.0)
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
        ema: keep an exponential moving average of the trained weights (Keras's optimizer
            ``use_ema``); at the end of each phase the weights become the average, so the
            saved model, the test metrics and every export are the average's.
        ema_momentum: the average's momentum (Keras's ``ema_momentum``): the share it keeps
            at each step.
        mixup: MixUp's alpha (0: off): every training batch becomes a mix of pairs of its rows,
            ``l * x_i + (1 - l) * x_j`` and the same of their one-hot labels, ``l`` drawn from
            Beta(alpha, alpha) for each row. On images (end-to-end phases) Keras's
            ``keras.layers.MixUp``; on a head phase's stored features, the same mix of the
            feature vectors (manifold MixUp, Verma et al. 2019), so the phase stays cached.
        cutmix: CutMix's alpha (0: off; at most 1, as Keras's ``keras.layers.CutMix(factor=(a, a))``
            allows): a box of one image
            pasted into another, labels mixed by its area; images only, so end-to-end phases
            only. With ``mixup`` too, each batch takes one of the two at random (timm's way).
        lr_decay: layer-wise learning-rate decay in the fine-tune phase (1: off): the head
            trains at ``fine_tune_lr``, stage conv5 at ``fine_tune_lr * lr_decay``, conv4 at
            ``fine_tune_lr * lr_decay**2``, down to the stem (conv1) at ``lr_decay**5`` (timm's
            ``--layer-decay``, fastai's discriminative rates; ``training.layer_decay``).
        interpolate: after the fine-tune phase, mix its weights with those it started from,
            ``(1 - a) * before + a * after`` (WiSE-FT): "none", "auto" (``a`` picked on the
            validation split) or a number in [0, 1] (``training.interpolation``).
        tta: also test the trained model with test-time augmentation (``inference.predict_with_tta``:
            the image and its four 2-pixel shifts, its mirror with ``flip``); metrics.json records
            both, the model's own figures staying the run's.
        calibrate: "temperature" (after training, a temperature fitted on the validation split
            is folded into the last layer, so the saved model's probabilities are calibrated;
            ``calibration``) or "none" (the raw model).
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
            "openvino", "tflite" (LiteRT) or "onnx" (ONNX Runtime) (``runtimes.choice``).
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
                                  "else Keras), keras, openvino, tflite (LiteRT), onnx (ONNX Runtime), or openvino-int8 "
                                  "(quantised by NNCF on the run's training images; never chosen by auto)")
    steps_per_execution: int = option(8, "optimizer steps per compiled call")
    class_weight: Optional[str] = option(None, "balanced: weight the loss by inverse class frequency")
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy (0: none)")
    weight_decay: float = option(0.0, "decoupled weight decay; > 0 uses AdamW instead of Adam")
    ema: bool = option(False, "keep an exponential moving average of the trained weights (Keras's use_ema); each "
                       "phase ends with the average, so the saved model, the test metrics and exports are its",
                       const=True)
    ema_momentum: float = option(0.99, "--ema's momentum: the share of the average kept at each step")
    mixup: float = option(0.0, "MixUp's alpha (0: off; 0.2 is Keras's and timm's usual): mix pairs of training "
                          "images and their labels; a head phase on stored features mixes the feature vectors")
    cutmix: float = option(0.0, "CutMix's alpha (0: off; 1.0 is timm's usual): paste a box of one training image "
                           "into another, labels mixed by its area; end-to-end phases only")
    lr_decay: float = option(1.0, "layer-wise learning-rate decay in the fine-tune phase (1: off): each stage further "
                             "from the head trains at this factor of the stage above's rate (conv5: lr*F, conv4: "
                             "lr*F^2, ...)")
    interpolate: str = option("none", "after fine-tuning, mix the weights with those the fine-tune phase started "
                              "from, (1-a)*before + a*after (WiSE-FT): none, auto (a picked on the validation split "
                              "from 0, 0.1, ..., 1) or a number a from 0 to 1")
    tta: bool = option(False, "also test with test-time augmentation (the image and its four 2-pixel shifts, and its "
                       "mirror with --flip); metrics.json records both", const=True)
    calibrate: str = option("temperature", "after training, fit a temperature on the validation split and fold it "
                            "into the last layer (calibrated probabilities, same predictions), or none")
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
        require_int("epochs", self.epochs, 0)
        require_int("fine_tune_epochs", self.fine_tune_epochs, 0)
        require_number("label_smoothing", self.label_smoothing, low=0.0, high=1.0)
        require_number("weight_decay", self.weight_decay, low=0.0, high=1.0)
        if not isinstance(self.ema, bool):
            raise ConfigError(f"ema must be true or false. Received: ema={self.ema!r}")
        if not isinstance(self.tta, bool):
            raise ConfigError(f"tta must be true or false. Received: tta={self.tta!r}")
        require_number("ema_momentum", self.ema_momentum, low=0.0, high=1.0, low_included=False)
        require_number("mixup", self.mixup, low=0.0, high=100.0, high_included=True)
        require_number("cutmix", self.cutmix, low=0.0, high=1.0, high_included=True)  # Keras's CutMix: [0, 1]
        require_number("lr_decay", self.lr_decay, low=0.0, high=1.0, low_included=False, high_included=True)
        try:
            interpolation_weight(self.interpolate)
        except ValueError:
            raise ConfigError(f"interpolate must be none, auto or a number from 0 to 1. Received: "
                              f"interpolate={self.interpolate!r}") from None
        require_choice("calibrate", self.calibrate, CALIBRATIONS)
        require_number("fine_tune_lr", self.fine_tune_lr, low=0.0, high=math.inf, low_included=False)
        require_choice("unfreeze", self.unfreeze, UNFREEZE_POINTS)
        require_choice("augment", self.augment, AUGMENT_LEVELS)
        require_choice("augment_phase", self.augment_phase, AUGMENT_PHASES)
        require_choice("jit_compile", self.jit_compile, ("auto", "on", "off"))
        require_choice("strategy", self.strategy, STRATEGIES)
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
        require_int("batch_size", self.batch_size, 1)
        require_int("seed", self.seed, 0, maximum=2**32 - 1)  # numpy's and Keras's seeding range
        require_int("steps_per_execution", self.steps_per_execution, 1)
        rate = self.learning_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
            raise ConfigError(f"learning_rate must be a finite number > 0. Received: learning_rate={rate!r}")
        require_choice("feature_cache", self.feature_cache, ("auto", "off"))
        require_choice("extract_runtime", self.extract_runtime, EXTRACT_RUNTIMES)
        if not isinstance(self.mixed_precision, bool):
            raise ConfigError(f"mixed_precision must be true or false. Received: mixed_precision={self.mixed_precision!r}")
        if self.mixed_precision and self.extract_runtime not in ("auto", "keras"):
            raise ConfigError(f"--extract-runtime {self.extract_runtime} converts a float32 backbone, and "
                              "--mixed-precision computes it in 16 bits: give one of them")
        require_choice("cache_dtype", self.cache_dtype, CACHE_DTYPES)
        if self.cache_dir is not None:
            require_text("cache_dir", self.cache_dir)
            if os.path.exists(self.cache_dir) and not os.path.isdir(self.cache_dir):
                raise ConfigError(f"cache_dir must be a folder, not a file. Received: cache_dir={self.cache_dir!r}")
        if self.class_weight is not None:
            require_choice("class_weight", self.class_weight, ("balanced",))
