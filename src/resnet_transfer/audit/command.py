"""The ``audit`` verb: a data set's label issues, duplicates and leakage, outliers and
overlapping classes, from the features its frozen backbone computed (``findings``).

``audit_run(RUN)`` reads a finished run's features from the feature cache (the backbone
does not run; with ``extract`` it computes what the cache lacks) and writes into the run
folder; ``audit_data(config)`` computes (or finds) the features of the data that a train
config names and writes a new folder. Both write ``audit.csv``, ``audit.json``,
``exclude.txt``, ``feature_map.png`` and ``audit.html`` (``page``); a run's report.html
then shows the map and links the page.

Example:
    >>> summary = audit_run("runs/20261207T120000Z-resnet152")
    >>> summary["counts"]
    {'label_issue': 31, 'leakage': 50, 'duplicate': 2, 'outlier': 17}
"""

import glob
import logging
import os
import shutil
import tempfile
import time
from typing import Optional

import numpy as np

from resnet_transfer.audit.findings import (
    DUPLICATE_FRACTION, FOLDS, OUTLIER_FENCE, SPLITS, duplicates, feature_map,
    label_issues, nearest_training_images, out_of_sample_probabilities, outliers, overlapping_classes, reduce_features,
)
from resnet_transfer.audit.page import KINDS, plot_feature_map, write_audit_csv, write_audit_page, write_exclude_list
from resnet_transfer.config import RunConfig
from resnet_transfer.data.dataset import Dataset
from resnet_transfer.errors import ConfigError, DataError, RunDirectoryError
from resnet_transfer.files import write_json_atomic
from resnet_transfer.model.assembly import build_model
from resnet_transfer.training.adaptation import adapt_batch_norm
from resnet_transfer.model.precision import precision_policy
from resnet_transfer.model.weights import fetch_weights
from resnet_transfer.report import refresh_report_page
from resnet_transfer.runs import Run, check_run_dir_free, default_run_dir
from resnet_transfer.training.backbone_pass import stored_features
from resnet_transfer.training.setup import prepare

__all__ = ["AUDIT_FILES", "audit_data", "audit_features", "audit_run"]

logger = logging.getLogger(__name__)

AUDIT_FILES = ("audit.csv", "audit.json", "exclude.txt", "feature_map.png", "audit.html")
_PARTIAL = ".audit.partial-"


def audit_run(run_dir: str, *, extract: bool = False, allow_changed_data: bool = False) -> dict:
    """Audits the data of a finished run from its cached features; writes ``AUDIT_FILES`` into
    the run folder (replacing an earlier audit's) and refreshes its report.html.

    Args:
        run_dir: a finished run.
        extract: run the backbone for the splits the feature cache lacks (as train would).
        allow_changed_data: audit the data as it is now even if it changed since the run trained.

    Returns:
        The summary written to audit.json.

    Raises:
        RunDirectoryError: not a finished run.
        DataError: the data changed (without ``allow_changed_data``), or its features are not
            in the cache (without ``extract``).
    """
    run = Run(run_dir)
    if run.status != "finished":
        raise RunDirectoryError(f"{run.path!r} is no finished run (status {run.status!r}); audit a finished run, or "
                                "the data itself with 'resnet-transfer audit --data ...'")
    config = run.config
    dataset = run.load_dataset(splits=SPLITS, allow_changed_data=allow_changed_data)
    with precision_policy(config.train.mixed_precision):
        model = build_model(config.model, image_shape=dataset.image_shape, num_classes=dataset.num_classes,
                            weights_path=fetch_weights(config.model.backbone) if config.model.weights == "imagenet"
                            else None)
        features, _, _ = stored_features(model, dataset, config, compute=False)
        missing = [split for split in SPLITS if features[split] is None]
        if missing and not extract:
            raise DataError(
                f"the features of run {run.path!r} ({', '.join(missing)} split) are not in the feature cache "
                f"{config.train.cache_dir or '(the default one)'}: it trained with --no-cache or end to end, or the "
                "cache was pruned. Add --extract to run the backbone for them (one pass, stored in the cache)")
        if missing:
            if config.model.bn_recalibrate:
                adapt_batch_norm(model, dataset.x_train, config.model, seed=config.train.seed)
            features, _, _ = stored_features(model, dataset, config)
    title = f"resnet-transfer audit: {os.path.basename(os.path.abspath(run.path))}"
    for stale in glob.glob(os.path.join(run.path, f"{_PARTIAL}*")):  # (what a killed audit left)
        shutil.rmtree(stale, ignore_errors=True)
    partial = tempfile.mkdtemp(prefix=_PARTIAL, dir=run.path)
    try:  # written aside, then moved in file by file: an audit stopped while computing leaves the old one whole
        summary = audit_features(features, dataset, partial, title=title, seed=config.train.seed,
                                 source={"run": os.path.abspath(run.path)})
        for name in AUDIT_FILES:
            os.replace(os.path.join(partial, name), run.file(name))
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    refresh_report_page(run.path)
    logger.info("audit written to %s", run.file("audit.html"))
    return summary


def audit_data(config: RunConfig, *, output_dir: Optional[str] = None) -> dict:
    """Audits the data ``config`` names (train's settings: data, backbone, weights, pooling,
    cache), computing its features into the feature cache where they are not there yet;
    writes ``AUDIT_FILES`` into ``output_dir`` (new or empty; None: runs/<UTC time>-audit).

    Raises:
        RunDirectoryError: ``output_dir`` holds files.
        ConfigError, DataError, WeightsError: as ``train`` raises them.
    """
    folder = output_dir or config.run_dir or default_run_dir("audit")
    check_run_dir_free(folder)
    if config.train.feature_cache == "off":
        raise ConfigError("audit works on the features of the feature cache, which --no-cache turns off; leave out "
                          "--no-cache")
    with precision_policy(config.train.mixed_precision):
        dataset, model, _ = prepare(config)
        features, _, _ = stored_features(model, dataset, config)
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    partial = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(folder))}.partial-", dir=parent)
    try:  # (written aside, then renamed: a stopped audit leaves nothing that blocks the same command)
        summary = audit_features(features, dataset, partial, title=f"resnet-transfer audit: {config.data.source}",
                                 seed=config.train.seed, source={"data": config.data.source,
                                                                 "backbone": config.model.backbone,
                                                                 "weights": config.model.weights})
        if os.path.isdir(folder):
            os.rmdir(folder)  # (empty, checked above)
        os.rename(partial, folder)
        logger.info("audit written to %s", os.path.join(folder, "audit.html"))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return {**summary, "folder": folder}


def audit_features(features: dict, dataset: Dataset, folder: str, *, title: str, seed: int = 0,
                   source: Optional[dict] = None) -> dict:
    """Runs every check of ``findings`` on ``features`` ({split: N x ...}) of ``dataset`` and
    writes ``AUDIT_FILES`` into ``folder``; returns the summary (audit.json's)."""
    seconds, started = {}, time.perf_counter()
    labels = {split: np.asarray(getattr(dataset, f"y_{split}")) for split in SPLITS}
    images = {split: getattr(dataset, f"x_{split}") for split in SPLITS}
    names = {split: dataset.ids.get(split) or [f"{split}[{index}]" for index in range(len(labels[split]))]
             for split in SPLITS}
    reduced = reduce_features(features, seed=seed)
    seconds["reduce"] = time.perf_counter() - started
    started = time.perf_counter()
    probabilities = out_of_sample_probabilities(reduced, labels, seed=seed)
    seconds["out_of_sample"] = time.perf_counter() - started
    started = time.perf_counter()
    found = [finding for split in SPLITS for finding in label_issues(labels[split], probabilities[split], split)]
    overlaps = overlapping_classes(labels["train"], probabilities["train"], dataset.class_names)
    seconds["label_issues"] = time.perf_counter() - started
    started = time.perf_counter()
    nearest = nearest_training_images(reduced)
    seconds["neighbours"] = time.perf_counter() - started
    started = time.perf_counter()
    found += duplicates(images, features, nearest)
    found += outliers(reduced, labels)[0]
    seconds["duplicates_and_outliers"] = time.perf_counter() - started
    found.sort(key=lambda finding: (list(KINDS).index(finding.kind), -finding.score))
    started = time.perf_counter()
    places, coordinates = feature_map(reduced, flagged=found, seed=seed)
    misclassified = {(split, index) for split in SPLITS
                     for index in np.flatnonzero(probabilities[split].argmax(axis=1) != labels[split])}
    plot_feature_map(os.path.join(folder, "feature_map.png"), places, coordinates, labels=labels,
                     class_names=dataset.class_names, flagged={(f.split, f.index) for f in found},
                     misclassified=misclassified)
    seconds["feature_map"] = time.perf_counter() - started
    rows = write_audit_csv(os.path.join(folder, "audit.csv"), found, names=names, labels=labels,
                           class_names=dataset.class_names)
    excluded = write_exclude_list(os.path.join(folder, "exclude.txt"), found, names=names)
    accuracy = {split: float(np.mean(probabilities[split].argmax(axis=1) == labels[split])) if len(labels[split])
                else None for split in SPLITS}
    summary = {
        "source": source or {},
        "images": {split: int(len(labels[split])) for split in SPLITS},
        "counts": {kind: sum(1 for finding in found if finding.kind == kind) for kind in KINDS},
        "exclude_list": excluded,
        "overlapping_classes": overlaps,
        "out_of_sample_accuracy": accuracy,
        "method": {"reduced_dimensions": int(reduced["train"].shape[1]), "folds": FOLDS,
                   "classifier": "logistic regression (scikit-learn)", "label_issues": "cleanlab find_label_issues, "
                   "prune_by_noise_rate", "duplicate_fraction_of_median_neighbour_distance": DUPLICATE_FRACTION,
                   "outliers": "Mahalanobis distance to the nearest class (shared Ledoit-Wolf covariance)",
                   "outlier_fence_iqr": OUTLIER_FENCE},
        "seconds": {name: round(value, 2) for name, value in seconds.items()},
    }
    write_json_atomic(os.path.join(folder, "audit.json"), summary)
    write_audit_page(os.path.join(folder, "audit.html"), title=title, findings=found, rows=rows, images=images,
                     summary=summary, overlaps=overlaps, map_png=os.path.join(folder, "feature_map.png"))
    logger.info("audit: %s", ", ".join(f"{count} {kind.replace('_', ' ')}" for kind, count in summary["counts"].items()))
    return summary
