"""What every verb that trains does before its first epoch (train, pretrain, lr-find,
extract): the checks that need no data, ``prepare`` (data, weights, model: everything that
fails on bad input fails here, before anything is written) and the run's record
(config.json).
"""

import importlib.util
import json
import os
from typing import Optional

import keras

from resnet_transfer.config import BUILTIN_DATA, RunConfig
from resnet_transfer.data.dataset import Dataset, load_dataset
from resnet_transfer.errors import ConfigError
from resnet_transfer.model.assembly import backbone_of, build_model, head_of
from resnet_transfer.model.backbone import check_pretrained_fit
from resnet_transfer.model.heads import resolve_pooling
from resnet_transfer.model.weights import fetch_weights, read_sidecar, weights_identity
from resnet_transfer.registry import get_backbone_spec
from resnet_transfer.runs import check_run_dir_free, environment_versions
from resnet_transfer.training.adaptation import adapt_batch_norm, adaptation_record
from resnet_transfer.cache.store import FeatureCache

__all__ = ["check_before_run", "check_tensorboard", "config_record", "config_values", "prepare", "tensorboard_callbacks"]


def check_before_run(config: RunConfig, run_dir: str, *, resumable: bool = False) -> None:
    """The checks that need no data: the run folder is free, optional packages are there,
    the feature cache is writable."""
    check_run_dir_free(run_dir, resumable=resumable)
    check_tensorboard(config)
    if config.train.feature_cache != "off":
        FeatureCache(config.train.cache_dir).check_writable()


def check_tensorboard(config: RunConfig) -> None:
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard")


def prepare(config: RunConfig, *, splits: tuple = ("train", "val", "test"), frozen_backbone: bool = True) -> tuple:
    """Seeds Keras, loads the data, fetches the weights and builds the model: every step that
    fails on bad input, before anything is written (``frozen_backbone``: see ``build_model``).

    Returns:
        (dataset, model, weights_path)
    """
    keras.utils.set_random_seed(config.train.seed)
    spec = get_backbone_spec(config.model.backbone)
    dataset = load_dataset(config.data, seed=config.train.seed, default_image_size=spec.default_input_size, splits=splits)
    weights_path = fetch_weights(config.model.backbone) if config.model.weights == "imagenet" else None
    if config.model.weights not in ("imagenet", "none"):
        check_pretrained_fit(config.model.weights, preprocess=config.model.preprocess,
                             image_size=int(dataset.image_shape[0]), strict=config.data.strict)
    model = build_model(config.model, image_shape=dataset.image_shape, num_classes=dataset.num_classes,
                        weights_path=weights_path, frozen_backbone=frozen_backbone)
    if config.model.bn_recalibrate and frozen_backbone:
        adapt_batch_norm(model, dataset.x_train, config.model, seed=config.train.seed)
    return dataset, model, weights_path


def tensorboard_callbacks(config: RunConfig, run_dir: str) -> list:
    if not config.tensorboard:
        return []
    return [keras.callbacks.TensorBoard(log_dir=os.path.join(run_dir, "tensorboard"))]


def config_values(config: RunConfig, run_dir: str) -> dict:
    """``config`` as config.json records it: paths absolute, so that evaluate/predict/export
    work from any folder."""
    config_values = json.loads(json.dumps(config.to_dict()))  # tuples as JSON has them: lists
    config_values["run_dir"] = run_dir
    data = config_values["data"]
    if data["source"] not in BUILTIN_DATA:
        data["source"] = os.path.abspath(data["source"])
    if data["data_dir"] is not None:
        data["data_dir"] = os.path.abspath(data["data_dir"])
    if data.get("exclude") is not None:
        data["exclude"] = os.path.abspath(data["exclude"])
    return config_values


def config_record(config: RunConfig, run_dir: str, dataset: Dataset, model, weights_path: Optional[str],
                   class_weight) -> dict:
    pooling, pooling_reason = resolve_pooling(config.model.pooling, tuple(backbone_of(model).output.shape[1:]))
    return {
        "config": config_values(config, run_dir),
        "seed": config.train.seed,
        "versions": environment_versions(),
        "data_source": dataset.source,
        "class_names": list(dataset.class_names),
        "image_shape": list(dataset.image_shape),
        "class_weight": class_weight,
        "resolved": {"pooling": pooling, "pooling_reason": pooling_reason,
                     "head_parameters": int(head_of(model).count_params()),
                     "feature_layer": backbone_of(model).layers[-1].name,
                     "feature_map": list(backbone_of(model).output.shape[1:])},
        "weights": {
            "setting": config.model.weights,
            "identity": weights_identity(config.model.backbone, config.model.weights, config.train.seed),
            "path": weights_path or (None if config.model.weights == "none" else os.path.abspath(config.model.weights)),
            "pretrained": None if config.model.weights in ("none", "imagenet") else read_sidecar(config.model.weights),
            "bn_recalibration": adaptation_record(dataset.x_train, config.model, seed=config.train.seed),
        },
    }
