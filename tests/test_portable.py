"""Saved models load with plain Keras, where resnet_transfer cannot be imported."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from resnet_transfer.config import ModelConfig
from resnet_transfer.model.assembly import build_model
from resnet_transfer.model.preprocessing import PREPROCESS_MODES, build_preprocessing
from resnet_transfer.registry import BACKBONES

# Runs in a fresh interpreter in which importing resnet_transfer fails.
LOADER = """
import importlib.abc, json, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "resnet_transfer":
            raise ImportError("resnet_transfer is blocked in this test")
sys.meta_path.insert(0, Blocked())
import keras, numpy as np
images = np.load(sys.argv[1])
outputs = {}
for path in sys.argv[2:]:
    outputs[path] = keras.saving.load_model(path).predict(images, verbose=0).tolist()
assert not [name for name in sys.modules if name.startswith("resnet_transfer")]
print(json.dumps(outputs))
"""


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_every_backbone_serializes_with_keras_layers_only(backbone):
    model = build_model(ModelConfig(backbone=backbone, weights="none", preprocess="imagenet"), image_shape=(32, 32, 3), num_classes=3)
    text = json.dumps(keras.saving.serialize_keras_object(model))
    assert "resnet_transfer" not in text
    modules = {layer["module"] for layer in model.get_config()["layers"]}
    assert all(module.startswith("keras") for module in modules), modules
    for mode in PREPROCESS_MODES:
        assert "resnet_transfer" not in json.dumps(keras.saving.serialize_keras_object(build_preprocessing(backbone, mode)))


@pytest.mark.slow
def test_saved_models_load_without_the_package_and_predict_the_same(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(4, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    expected = {}
    # The two ImageNet styles (caffe: the 1x1 convolution; tf: Rescaling with an offset); the seed
    # mode's Rescaling is covered by the serialization test above.
    for backbone, preprocess in (("resnet50", "imagenet"), ("resnet50v2", "imagenet")):
        keras.utils.set_random_seed(0)
        model = build_model(ModelConfig(backbone=backbone, weights="none", preprocess=preprocess), image_shape=(32, 32, 3), num_classes=5)
        path = str(tmp_path / f"{backbone}-{preprocess}.keras")
        model.save(path)
        expected[path] = model.predict(images, verbose=0)
        del model
    result = subprocess.run(
        [sys.executable, "-c", LOADER, str(tmp_path / "images.npy"), *expected],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": ""},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    for path, probabilities in expected.items():
        np.testing.assert_array_equal(np.asarray(loaded[path], dtype="float32"), probabilities)
