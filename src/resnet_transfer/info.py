"""What ``resnet-transfer info`` reports: versions, devices, cached weights, data location."""

__all__ = ["collect_info"]


def _devices() -> list:
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return [f"{device.device_type}:{device.name}" for device in tf.config.list_physical_devices()]
    if keras.backend.backend() == "jax":
        import jax

        return [str(device) for device in jax.devices()]
    return [keras.backend.backend()]


def collect_info() -> dict:
    """Returns a JSON-ready dict describing this installation."""
    from resnet_transfer.backbones import cached_weights
    from resnet_transfer.data import locate_mnist
    from resnet_transfer.features import default_cache_dir
    from resnet_transfer.runs import environment_versions

    mnist = locate_mnist()
    return {
        "versions": environment_versions(),
        "devices": _devices(),
        "imagenet_weights_cached": cached_weights(),
        "mnist_source": {"kind": mnist.kind, "location": mnist.location, "origin": mnist.origin},
        "feature_cache_dir": default_cache_dir(),
    }
