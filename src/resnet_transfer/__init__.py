"""resnet-transfer: transfer learning with ImageNet-pretrained Keras ResNets.

Example:
    >>> from resnet_transfer import RunConfig, train
    >>> config = RunConfig.from_dict({"model": {"weights": "none"}, "train": {"epochs": 2},
    ...                               "data": {"limit": 512, "val_size": 128, "test_limit": 256}})
    >>> result = train(config)
"""

import importlib

# Names are imported on first use (PEP 562), so that `import resnet_transfer` and
# `resnet-transfer --help` do not pay for importing Keras and TensorFlow.
_LOCATIONS = {
    "BACKBONES": "registry",
    "ConfigError": "errors",
    "DataConfig": "config",
    "DataError": "errors",
    "Dataset": "data.dataset",
    "FeatureCache": "cache.store",
    "FrozenWeights": "training.frozen",
    "FrozenWeightsError": "errors",
    "ModelConfig": "config",
    "RECIPES": "recipes",
    "ResnetTransferError": "errors",
    "Run": "runs",
    "RunConfig": "config",
    "RunDirectoryError": "errors",
    "RunResult": "training.train",
    "TrainConfig": "config",
    "WeightsError": "errors",
    "build_augmentation": "model.augmentation",
    "build_head": "model.heads",
    "build_model": "model.assembly",
    "build_preprocessing": "model.preprocessing",
    "cached_features": "cache.extraction",
    "compile_model": "model.assembly",
    "create_backbone": "model.backbone",
    "cut_backbone": "model.backbone",
    "evaluate_run": "evaluation",
    "export_run": "export",
    "extract_features": "cache.extraction",
    "fetch_weights": "model.weights",
    "find_learning_rate": "training.lr_find",
    "import_weights": "model.weights",
    "load_config_file": "config",
    "load_dataset": "data.dataset",
    "load_run_model": "evaluation",
    "plot_curves": "report",
    "predict": "prediction",
    "pretrain": "training.pretrain",
    "probe": "probing",
    "read_sidecar": "model.weights",
    "select_classes": "data.dataset",
    "reproduce": "reproduction",
    "train": "training.train",
    "unfreeze": "training.phases",
}

__all__ = sorted(_LOCATIONS)


def __getattr__(name):
    if name not in _LOCATIONS:
        raise AttributeError(f"module 'resnet_transfer' has no attribute {name!r}")
    return getattr(importlib.import_module(f"resnet_transfer.{_LOCATIONS[name]}"), name)


def __dir__():
    return sorted(__all__)
