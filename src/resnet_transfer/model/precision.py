"""Mixed precision (``--mixed-precision``): Keras's mixed dtype policy for the layers a run builds.

Keras computes in 16 bits and keeps every variable in float32 under a mixed policy:
"mixed_float16" where a GPU is visible (Keras wraps the optimizer in a ``LossScaleOptimizer``
when it compiles such a model), "mixed_bfloat16" on a CPU with bfloat16 instructions
(x86 ``avx512_bf16`` or ``amx_bf16``, Arm ``bf16``). The head's softmax layer always computes
in float32 (``heads.build_head``), as Keras's mixed-precision guide asks of the output. On a
machine with neither, asking for mixed precision is refused with one line: bfloat16 emulated
on a CPU without the instructions is slower than float32.

Layers take the global policy when they are built, and saved models keep each layer's policy,
so ``keras.saving.load_model`` gives the same model back without any global setting.

Example:
    >>> with precision_policy(True):
    ...     model = build_model(config.model, image_shape=(32, 32, 3), num_classes=10)
"""

import contextlib
import logging
import platform
from typing import Iterator

import keras

from resnet_transfer.errors import ConfigError

__all__ = ["mixed_policy", "precision_policy", "cpu_has_bfloat16", "visible_gpus"]

logger = logging.getLogger(__name__)

_BFLOAT16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


def cpu_has_bfloat16() -> bool:
    """Whether this CPU has bfloat16 instructions (read from /proc/cpuinfo; False elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                name, _, value = line.partition(":")
                if name.strip().lower() in ("flags", "features") and _BFLOAT16_FLAGS & set(value.split()):
                    return True
    except OSError:
        pass
    return False


def visible_gpus() -> list:
    """The GPUs the Keras backend sees ([] on a CPU-only machine)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.config.list_physical_devices("GPU")
    if keras.backend.backend() == "jax":
        import jax

        return [device for device in jax.devices() if device.platform == "gpu"]
    if keras.backend.backend() == "torch":
        import torch

        return list(range(torch.cuda.device_count()))
    return []


def mixed_policy() -> str:
    """The mixed policy this machine can use.

    Raises:
        ConfigError: no GPU and no bfloat16 instructions in the CPU.
    """
    if visible_gpus():
        return "mixed_float16"
    if cpu_has_bfloat16():
        return "mixed_bfloat16"
    raise ConfigError(
        f"--mixed-precision needs a GPU (float16) or a CPU with bfloat16 instructions (avx512_bf16, amx_bf16 or Arm "
        f"bf16); this machine ({platform.machine() or 'unknown CPU'}, no GPU visible) has neither, and emulated 16-bit "
        "arithmetic would be slower than float32: leave out --mixed-precision"
    )


@contextlib.contextmanager
def precision_policy(mixed: bool) -> Iterator[str]:
    """Sets Keras's global dtype policy for the layers built inside (and restores the one
    before on the way out); yields the policy's name."""
    previous = keras.config.dtype_policy()
    name = mixed_policy() if mixed else "float32"
    if mixed:
        logger.info("mixed precision: %s (variables and the output layer in float32)", name)
    keras.config.set_dtype_policy(name)
    try:
        yield name
    finally:
        keras.config.set_dtype_policy(previous)
