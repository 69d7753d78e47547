"""What ``resnet-transfer info`` reports: versions, devices, cached weights, data location."""

import keras

from resnet_transfer.data.mnist import locate_mnist
from resnet_transfer.model.weights import cached_weights
from resnet_transfer.runs import environment_versions
from resnet_transfer.cache.folders import default_cache_dir

__all__ = ["collect_info", "format_info"]


def _devices() -> list:
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # only on this backend

        return [f"{device.device_type}:{device.name}" for device in tf.config.list_physical_devices()]
    if keras.backend.backend() == "jax":
        import jax  # only on this backend

        return [str(device) for device in jax.devices()]
    return [keras.backend.backend()]


def collect_info() -> dict:
    """Returns a JSON-ready dict describing this installation."""
    mnist = locate_mnist()
    return {
        "versions": environment_versions(),
        "devices": _devices(),
        "imagenet_weights_cached": cached_weights(),
        "mnist_source": {"kind": mnist.kind, "location": mnist.location, "origin": mnist.origin},
        "feature_cache_dir": default_cache_dir(),
    }


def format_info(info: dict) -> str:
    """``collect_info``'s dict as a two-column table for the terminal."""
    rows = [(name, str(version)) for name, version in info["versions"].items()]
    rows.append(("devices", ", ".join(info["devices"]) or "none"))
    rows += [(f"weights {name}", path or "not cached") for name, path in info["imagenet_weights_cached"].items()]
    mnist = info["mnist_source"]
    rows.append(("mnist", f"{mnist['location']} ({mnist['origin']})"))
    rows.append(("feature cache", info["feature_cache_dir"]))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
