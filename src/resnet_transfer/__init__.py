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
    "BACKBONES": "backbones",
    "ConfigError": "errors",
    "DataConfig": "config",
    "DataError": "errors",
    "Dataset": "data",
    "FeatureCache": "features",
    "ModelConfig": "config",
    "ResnetTransferError": "errors",
    "RunConfig": "config",
    "RunDirectoryError": "errors",
    "RunResult": "training",
    "TrainConfig": "config",
    "WeightsError": "errors",
    "build_head": "heads",
    "build_model": "model",
    "cached_features": "features",
    "compile_model": "model",
    "create_backbone": "backbones",
    "evaluate_run": "evaluation",
    "export_run": "export",
    "predict": "prediction",
    "extract_features": "features",
    "fetch_weights": "backbones",
    "import_weights": "backbones",
    "load_config_file": "config",
    "load_dataset": "data",
    "load_run_model": "evaluation",
    "plot_curves": "evaluation",
    "train": "training",
}

__all__ = [
    "BACKBONES",
    "ConfigError",
    "DataConfig",
    "DataError",
    "Dataset",
    "FeatureCache",
    "ModelConfig",
    "ResnetTransferError",
    "RunConfig",
    "RunDirectoryError",
    "RunResult",
    "TrainConfig",
    "WeightsError",
    "build_head",
    "build_model",
    "cached_features",
    "compile_model",
    "create_backbone",
    "evaluate_run",
    "export_run",
    "predict",
    "extract_features",
    "fetch_weights",
    "import_weights",
    "load_config_file",
    "load_dataset",
    "load_run_model",
    "plot_curves",
    "train",
]


def __getattr__(name):
    if name not in _LOCATIONS:
        raise AttributeError(f"module 'resnet_transfer' has no attribute {name!r}")
    return getattr(importlib.import_module(f"resnet_transfer.{_LOCATIONS[name]}"), name)


def __dir__():
    return sorted(__all__)
