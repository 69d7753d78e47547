import numpy as np
import pytest

from resnet_transfer.errors import ConfigError, WeightsError
from resnet_transfer.model.backbone import check_input_size, create_backbone
from resnet_transfer.registry import BACKBONES


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_builds_frozen_with_its_feature_shape(name):
    backbone = create_backbone(name, weights="none", input_shape=(32, 32, 3))
    assert backbone.output_shape == (None, 1, 1, BACKBONES[name].feature_channels)
    assert not backbone.trainable_weights


def test_an_input_below_the_minimum_is_refused_with_the_minimum():
    check_input_size("resnet50", 32)
    with pytest.raises(ConfigError, match="at least 32 for resnet50.*image_size=31"):
        check_input_size("resnet50", 31)
    with pytest.raises(ConfigError, match="at least 32"):
        create_backbone("resnet50", weights="none", input_shape=(31, 64, 3))


def test_weights_path_loads_a_keras_weights_file(tmp_path):
    source = create_backbone("resnet50", weights="none", input_shape=(32, 32, 3))
    path = str(tmp_path / "backbone.weights.h5")
    source.save_weights(path)
    loaded = create_backbone("resnet50", weights=path, input_shape=(32, 32, 3))
    np.testing.assert_array_equal(source.get_weights()[0], loaded.get_weights()[0])


def test_a_weights_file_that_does_not_fit_is_a_clear_error(tmp_path):
    path = tmp_path / "garbage.h5"
    path.write_bytes(b"\0" * 100)
    with pytest.raises(WeightsError, match="could not be loaded into resnet50"):
        create_backbone("resnet50", weights=str(path), input_shape=(32, 32, 3))


def test_imagenet_weights_offline_stop_with_the_weights_message(offline_downloads):
    with pytest.raises(WeightsError, match="could not fetch the ImageNet weights of resnet50"):
        create_backbone("resnet50", weights="imagenet", input_shape=(32, 32, 3))
