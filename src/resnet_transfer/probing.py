"""The ``probe`` verb: which backbone, cut at which stage, suits these images?

For each backbone and each cut, the frozen backbone's pooled features of a sample of
the user's data are taken from the feature cache (or computed and stored there, under
the key ``train`` uses, so a later ``train`` with the same settings reuses them), and
two fast classifiers from scikit-learn are fit on the training sample and scored on
the validation split:

- a linear probe: ``LogisticRegression`` on standardised features;
- a k-nearest-neighbour classifier (cosine distance, the usual k-NN probe).

The table (printed, ``probe.csv``) and ``probe.png`` (accuracy by cut, one line per
backbone) go into a run folder. The ranking is by the linear probe's accuracy: a
linear probe on frozen features is the standard measure of how well features
transfer, and it takes seconds, not the hours of a training run.

Example:
    >>> result = probe(RunConfig.from_dict({"data": {"source": "photos/", "limit": 500}}),
    ...                backbones=("resnet50", "resnet50v2"), feature_layers=("conv3", "conv4", "conv5"),
    ...                weights=("imagenet",), run_dir="runs/probe")
    >>> result.best["backbone"], result.best["feature_layer"]
"""

import contextlib
import logging
import os
import time
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from resnet_transfer.config import FEATURE_LAYERS, RunConfig, check_settings_take_effect
from resnet_transfer.data.dataset import load_dataset
from resnet_transfer.errors import ConfigError
from resnet_transfer.files import write_text_atomic
from resnet_transfer.model.assembly import build_model
from resnet_transfer.model.backbone import check_pretrained_fit, check_weights_file
from resnet_transfer.model.weights import fetch_weights
from resnet_transfer.recipes import DEFAULT_PROBE_BACKBONES, DEFAULT_PROBE_LAYERS, DEFAULT_PROBE_LIMIT
from resnet_transfer.registry import get_backbone_spec
from resnet_transfer.report import save_figure, subplots
from resnet_transfer.runs import Run, RunContext, check_run_dir_free, environment_versions
from resnet_transfer.training.adaptation import adapt_batch_norm
from resnet_transfer.cache.store import FeatureCache
from resnet_transfer.training.backbone_pass import stored_features
from resnet_transfer.signals import watching_interrupts, without_retracing_notices

__all__ = ["ProbeResult", "probe", "format_probe", "PROBE_COLUMNS", "DEFAULT_PROBE_BACKBONES", "DEFAULT_PROBE_LAYERS",
           "DEFAULT_PROBE_LIMIT"]

logger = logging.getLogger(__name__)

PROBE_COLUMNS = ("backbone", "feature_layer", "linear_accuracy", "knn_accuracy", "seconds", "feature_size")
_NEIGHBOURS = 10


@dataclass
class ProbeResult:
    """The rows (one per backbone and cut, as ``PROBE_COLUMNS``), the best row, and the run folder."""

    rows: list
    best: dict
    run_dir: str
    n_train: int
    n_val: int
    bn_recalibrate: bool = False
    bn_images: int = 4096


def _check_choices(backbones: tuple, feature_layers: tuple, weights: tuple) -> None:
    for name in backbones:
        get_backbone_spec(name)
    for layer in feature_layers:
        if layer not in FEATURE_LAYERS:
            raise ConfigError(f"--feature-layer takes stages among {', '.join(FEATURE_LAYERS)}, separated by commas. "
                              f"Received: {layer!r}")
    if not backbones or not feature_layers:
        raise ConfigError("probe needs at least one backbone and one feature layer")
    for values, name in ((backbones, "backbone"), (feature_layers, "feature_layer")):
        if len(set(values)) != len(values):
            raise ConfigError(f"{name} names an entry twice. Received: {','.join(values)}")
    if len(weights) not in (1, len(backbones)):
        raise ConfigError(f"weights must be one value for every backbone, or one per backbone ({len(backbones)}). "
                          f"Received: weights={','.join(weights)}")


def probe(config: RunConfig, *, backbones: tuple = DEFAULT_PROBE_BACKBONES,
          feature_layers: tuple = DEFAULT_PROBE_LAYERS, weights: tuple = ("imagenet",), run_dir: str) -> ProbeResult:
    """Ranks ``backbones`` x ``feature_layers`` by linear-probe accuracy on ``config``'s data.

    Args:
        config: the data (``limit`` is the training sample, at most), preprocessing,
            pooling, seed and feature cache; its backbone, weights and cut are replaced.
        backbones, feature_layers: what to compare.
        weights: one setting for every backbone ("imagenet", "none", a file), or one per backbone.
        run_dir: the new run folder.

    Raises:
        ConfigError, DataError, WeightsError, RunDirectoryError: bad input; nothing is written.
    """
    with _each_message_once("resnet_transfer.model.backbone"):  # (a model per cut: its weights' notes once)
        return _probe(config, backbones=backbones, feature_layers=feature_layers, weights=weights, run_dir=run_dir)


def _probe(config: RunConfig, *, backbones: tuple, feature_layers: tuple, weights: tuple, run_dir: str) -> ProbeResult:
    _check_choices(tuple(backbones), tuple(feature_layers), tuple(weights))
    check_settings_take_effect(config)
    weights = tuple(weights) * len(backbones) if len(weights) == 1 else tuple(weights)
    settings = [config.updated({"model": {"backbone": name, "weights": setting, "head": "linear"}})
                for name, setting in zip(backbones, weights)]
    for entry in settings:
        if entry.model.weights not in ("imagenet", "none"):
            check_weights_file(entry.model.backbone, entry.model.weights, bn_recalibrate=entry.model.bn_recalibrate)
    check_run_dir_free(run_dir)
    FeatureCache(config.train.cache_dir).check_writable()
    dataset = load_dataset(config.data, seed=config.train.seed, default_image_size=get_backbone_spec(backbones[0]).default_input_size,
                           splits=("train", "val"), limit_at_most=True)
    for entry in settings:
        if entry.model.weights not in ("imagenet", "none"):
            check_pretrained_fit(entry.model.weights, preprocess=entry.model.preprocess,
                                 image_size=int(dataset.image_shape[0]), strict=config.data.strict)
    weights_paths = {entry.model.backbone: fetch_weights(entry.model.backbone) if entry.model.weights == "imagenet" else None
                     for entry in settings}
    with watching_interrupts() as interrupts, RunContext(run_dir, interrupts=interrupts) as context:
        with without_retracing_notices():
            rows = [_probe_one(entry.updated({"model": {"feature_layer": layer}}), dataset, weights_paths)
                    for entry in settings for layer in feature_layers]
        best = max(rows, key=lambda row: (row["linear_accuracy"], row["knn_accuracy"]))
        _write(context.run, rows, best, dataset, config, list(zip(backbones, weights)))
        context.finish()
    return ProbeResult(rows=rows, best=best, run_dir=context.run.path, n_train=len(dataset.y_train), n_val=len(dataset.y_val),
                       bn_recalibrate=config.model.bn_recalibrate, bn_images=config.model.bn_images)


@contextlib.contextmanager
def _each_message_once(name: str):
    """The logger ``name`` says each of its messages once while the block runs."""
    said = set()

    def first_time(record: logging.LogRecord) -> bool:
        message = (record.levelno, record.getMessage())
        if message in said:
            return False
        said.add(message)
        return True

    logger = logging.getLogger(name)
    logger.addFilter(first_time)
    try:
        yield
    finally:
        logger.removeFilter(first_time)


def _probe_one(config: RunConfig, dataset, weights_paths: dict) -> dict:
    started = time.perf_counter()
    model = build_model(config.model, image_shape=dataset.image_shape, num_classes=dataset.num_classes,
                        weights_path=weights_paths[config.model.backbone])
    if config.model.bn_recalibrate:  # (the features' cache key says so: they must be the recalibrated backbone's)
        adapt_batch_norm(model, dataset.x_train, config.model, seed=config.train.seed)
    features, status, _ = stored_features(model, dataset, config, splits=("train", "val"))
    train = np.asarray(features["train"], dtype="float32")
    val = np.asarray(features["val"], dtype="float32")
    linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    neighbours = KNeighborsClassifier(n_neighbors=min(_NEIGHBOURS, len(train)), metric="cosine")
    with warnings.catch_warnings():  # a probe stopped at max_iter still ranks features; the log says so
        warnings.simplefilter("ignore", ConvergenceWarning)
        linear.fit(train, dataset.y_train)
    neighbours.fit(train, dataset.y_train)
    row = {
        "backbone": config.model.backbone,
        "feature_layer": config.model.feature_layer,
        "linear_accuracy": float(np.mean(linear.predict(val) == dataset.y_val)),
        "knn_accuracy": float(np.mean(neighbours.predict(val) == dataset.y_val)),
        "seconds": time.perf_counter() - started,
        "feature_size": int(train.shape[1]),
    }
    logger.info("%s at %s: linear %.4f, k-NN %.4f, %d features, %.1f s (features: cache %s)", row["backbone"],
                row["feature_layer"], row["linear_accuracy"], row["knn_accuracy"], row["feature_size"], row["seconds"], status)
    return row


def _write(run: Run, rows: list, best: dict, dataset, config: RunConfig, backbones: list) -> None:
    run.write_config({
        "command": "probe",
        "config": {**config.to_dict(), "run_dir": run.path},
        "backbones": [{"backbone": name, "weights": setting} for name, setting in backbones],
        "feature_layers": sorted({row["feature_layer"] for row in rows}, key=FEATURE_LAYERS.index),
        "n_train": int(len(dataset.y_train)), "n_val": int(len(dataset.y_val)),
        "class_names": list(dataset.class_names), "data_source": dataset.source, "versions": environment_versions(),
    })
    lines = [",".join(PROBE_COLUMNS)] + [",".join(_cell(row[column]) for column in PROBE_COLUMNS) for row in rows]
    write_text_atomic(run.file("probe.csv"), "\n".join(lines) + "\n")
    _plot(rows, best, run.file("probe.png"))
    run.write_metrics({"best": best, "rows": rows})


def _cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _plot(rows: list, best: dict, path: str) -> None:
    figure, axis = subplots(figsize=(6, 4))
    layers = [layer for layer in FEATURE_LAYERS if any(row["feature_layer"] == layer for row in rows)]
    for name in dict.fromkeys(row["backbone"] for row in rows):
        mine = {row["feature_layer"]: row for row in rows if row["backbone"] == name}
        line, = axis.plot([layers.index(layer) for layer in mine], [row["linear_accuracy"] for row in mine.values()],
                          marker="o", label=f"{name} (linear)")
        axis.plot([layers.index(layer) for layer in mine], [row["knn_accuracy"] for row in mine.values()], marker="x",
                  linestyle="--", color=line.get_color(), label=f"{name} (k-NN)")
    axis.scatter([layers.index(best["feature_layer"])], [best["linear_accuracy"]], s=200, facecolors="none",
                 edgecolors="black", label="best")
    axis.set_xticks(range(len(layers)), layers)
    axis.set_xlabel("features taken at the end of")
    axis.set_ylabel("validation accuracy")
    axis.set_title("Probe: frozen features by backbone and cut")
    axis.legend(fontsize="small")
    save_figure(figure, path)


def format_probe(result: ProbeResult) -> str:
    """The table, best row marked, for the terminal."""
    header = f"{'backbone':<13} {'cut':<6} {'linear':>7} {'k-NN':>7} {'seconds':>8} {'features':>9}"
    lines = [f"probe on {result.n_train} training and {result.n_val} validation images "
             "(validation accuracy of a linear probe and of 10-nearest neighbours on frozen features)", header]
    for row in sorted(result.rows, key=lambda row: (-row["linear_accuracy"], -row["knn_accuracy"])):
        mark = "  <- best" if row is result.best else ""
        lines.append(f"{row['backbone']:<13} {row['feature_layer']:<6} {row['linear_accuracy']:>7.4f} "
                     f"{row['knn_accuracy']:>7.4f} {row['seconds']:>8.1f} {row['feature_size']:>9}{mark}")
    best = result.best
    adapted = f" --bn-recalibrate --bn-images {result.bn_images}" if result.bn_recalibrate else ""
    lines.append(f"best: --backbone {best['backbone']} --feature-layer {best['feature_layer']}{adapted}; table in "
                 f"{os.path.join(result.run_dir, 'probe.csv')}, plot in {os.path.join(result.run_dir, 'probe.png')}")
    return "\n".join(lines) + "\n"
