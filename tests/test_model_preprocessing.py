import keras
import numpy as np
import pytest

from resnet_transfer.errors import ConfigError
from resnet_transfer.model.preprocessing import build_preprocessing
from resnet_transfer.registry import BACKBONES

PREPROCESS_INPUT = {"caffe": keras.applications.resnet.preprocess_input, "tf": keras.applications.resnet_v2.preprocess_input}


@pytest.fixture
def pixels():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 256, size=(2, 8, 8, 3)).astype("float32")
    values[0, 0, 0] = (0, 255, 128)  # the extremes and a mid value, in distinct channels
    return values


@pytest.mark.parametrize("name", list(BACKBONES))
def test_imagenet_mode_is_the_backbone_preprocess_input(name, pixels):
    style = BACKBONES[name].imagenet_preprocessing
    found = keras.ops.convert_to_numpy(build_preprocessing(name, "imagenet")(pixels))
    expected = np.asarray(PREPROCESS_INPUT[style](pixels.copy()))
    assert found.shape == expected.shape and found.dtype == np.float32
    if style == "caffe":  # a channel permutation and a bias: exact in float32
        assert np.max(np.abs(found - expected)) == 0.0
    else:  # x * (1/127.5) - 1 against x / 127.5 - 1: a rounding apart
        np.testing.assert_allclose(found, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_seed_mode_scales_to_the_unit_range_and_accepts_uint8(name, pixels):
    found = keras.ops.convert_to_numpy(build_preprocessing(name, "seed")(pixels.astype(np.uint8)))
    np.testing.assert_allclose(found, pixels / 255.0, rtol=1e-6)


def test_preprocessing_has_no_trainable_weights_and_survives_saving(tmp_path, pixels):
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, build_preprocessing("resnet50", "imagenet")(inputs))
    assert not model.trainable_weights
    model.save(tmp_path / "preprocessing.keras")
    reloaded = keras.saving.load_model(tmp_path / "preprocessing.keras")
    np.testing.assert_array_equal(reloaded.predict(pixels, verbose=0), model.predict(pixels, verbose=0))


def test_unknown_mode_lists_the_modes():
    with pytest.raises(ConfigError, match="seed, imagenet.*caffe"):
        build_preprocessing("resnet50", "caffe")
