import keras
import pytest

from resnet_transfer.errors import ConfigError
from resnet_transfer.registry import BACKBONES, PREPROCESS_STYLES, WEIGHTS_BASE_URL, get_backbone_spec

# Keras keeps the hashes of v1 and v2 in one table, in resnet.py.
KERAS_WEIGHTS_HASHES = keras.src.applications.resnet.WEIGHTS_HASHES


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_entry_matches_what_keras_publishes(name):
    spec = get_backbone_spec(name)
    assert spec.name == name and callable(getattr(keras.applications, spec.builder))
    assert spec.weights_md5 == KERAS_WEIGHTS_HASHES[name][1]  # Keras's (with top, no top) pair
    assert spec.weights_file == f"{name}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert spec.weights_url == WEIGHTS_BASE_URL + spec.weights_file
    assert spec.imagenet_preprocessing == ("tf" if name.endswith("v2") else "caffe")
    assert spec.imagenet_preprocessing in PREPROCESS_STYLES
    assert spec.min_input_size == 32 and spec.default_input_size == 224


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(ConfigError) as caught:
        get_backbone_spec("resnet18")
    assert "resnet18" in str(caught.value) and all(name in str(caught.value) for name in BACKBONES)
