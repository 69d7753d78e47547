import os

import keras
import numpy as np
import pytest
from conftest import requires_mnist

from resnet_transfer.config import RunConfig
from resnet_transfer.errors import ConfigError
from resnet_transfer.model import precision
from resnet_transfer.model.precision import cpu_has_bfloat16, precision_policy
from resnet_transfer.training.train import train


def test_mixed_precision_is_refused_with_one_line_on_a_machine_without_gpu_or_bfloat16(monkeypatch, small_config,
                                                                                          tmp_path):
    monkeypatch.setattr(precision, "cpu_has_bfloat16", lambda: False)
    monkeypatch.setattr(precision, "visible_gpus", lambda: [])
    with pytest.raises(ConfigError, match="--mixed-precision needs a GPU .* leave out --mixed-precision") as error:
        train(small_config(tmp_path / "run", mixed_precision=True))
    assert "\n" not in str(error.value)
    assert not os.path.exists(tmp_path / "run") and keras.config.dtype_policy().name == "float32"


def test_mixed_precision_uses_float16_where_a_gpu_is_visible_and_restores_the_policy(monkeypatch):
    monkeypatch.setattr(precision, "visible_gpus", lambda: ["GPU:0"])
    with precision_policy(True) as name:
        assert name == "mixed_float16" and keras.config.dtype_policy().name == "mixed_float16"
    assert keras.config.dtype_policy().name == "float32"


def test_mixed_precision_and_a_converted_runtime_are_refused_together():
    for runtime in ("openvino", "tflite", "onnx"):
        with pytest.raises(ConfigError, match=f"--extract-runtime {runtime} converts a float32 backbone"):
            RunConfig.from_dict({"train": {"mixed_precision": True, "extract_runtime": runtime}})
    assert RunConfig.from_dict({"train": {"mixed_precision": True, "extract_runtime": "auto"}}).train.mixed_precision
    with pytest.raises(ConfigError, match="mixed_precision must be true or false"):
        RunConfig.from_dict({"train": {"mixed_precision": "yes"}})


@requires_mnist
@pytest.mark.slow
@pytest.mark.skipif(not cpu_has_bfloat16(), reason="this CPU has no bfloat16 instructions")
def test_a_mixed_bfloat16_run_keeps_its_output_in_float32_saves_its_policies_and_keys_its_features_apart(
        small_config, tmp_path):
    cache_dir = str(tmp_path / "cache")
    mixed = train(small_config(tmp_path / "mixed", cache_dir=cache_dir, mixed_precision=True, epochs=1))
    assert keras.config.dtype_policy().name == "float32"  # restored after the run
    model = keras.saving.load_model(os.path.join(mixed.run_dir, "model.keras"))  # plain Keras, no global policy
    assert model.get_layer("resnet50").get_layer("conv1_conv").dtype_policy.name == "mixed_bfloat16"
    assert model.get_layer("head").get_layer("probabilities").dtype_policy.name == "float32"
    probabilities = model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0)
    assert probabilities.dtype == np.float32 and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # The same settings in float32 do not take the bfloat16 features from the cache.
    full = train(small_config(tmp_path / "full", cache_dir=cache_dir, epochs=1))
    assert mixed.metrics["feature_cache"] == "miss" and full.metrics["feature_cache"] == "miss"
    assert np.isfinite(mixed.metrics["test_loss"]) and abs(mixed.metrics["test_loss"] - full.metrics["test_loss"]) < 0.1
