import re

import keras
import numpy as np
import pytest

from resnet_transfer.errors import ConfigError, WeightsError
from resnet_transfer.model.backbone import check_input_size, create_backbone, cut_backbone, stage_end
from resnet_transfer.model.weights import read_sidecar
from resnet_transfer.registry import BACKBONES


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_builds_frozen_with_its_feature_shape(name):
    backbone = create_backbone(name, weights="none", input_shape=(32, 32, 3))
    assert backbone.output_shape == (None, 1, 1, BACKBONES[name].feature_channels)
    assert not backbone.trainable_weights
    # the registry's record of the stages names the last block of each stage of Keras's model
    names = {layer.name for layer in backbone.layers}
    for stage, blocks in zip(("conv2", "conv3", "conv4", "conv5"), BACKBONES[name].stage_blocks):
        assert stage_end(backbone, stage) == f"{stage}_block{blocks}_out"
        assert f"{stage}_block{blocks + 1}_out" not in names


@pytest.mark.parametrize("name, expected", [
    # ResNet v1 halves the map at the start of conv3, conv4, conv5; v2 at the end of conv2, conv3, conv4.
    ("resnet50", {"conv2": (8, 8, 256), "conv3": (4, 4, 512), "conv4": (2, 2, 1024), "conv5": (1, 1, 2048)}),
    ("resnet50v2", {"conv2": (4, 4, 256), "conv3": (2, 2, 512), "conv4": (1, 1, 1024), "conv5": (1, 1, 2048)}),
])
def test_each_cut_ends_its_stage_with_the_stage_s_feature_shape(name, expected):
    whole = create_backbone(name, weights="none", input_shape=(32, 32, 3))
    for stage, shape in expected.items():
        cut = cut_backbone(whole, stage)
        assert cut.output_shape == (None, *shape) and cut.name == name
        assert cut.layers[-1].name == (stage_end(whole, stage) if stage != "conv5" else whole.layers[-1].name)
    assert stage_end(whole, "conv4") == ("conv4_block6_out")
    with pytest.raises(ConfigError, match="feature_layer must be one of: conv2, conv3, conv4, conv5.*conv6"):
        stage_end(whole, "conv6")


def test_an_input_below_the_minimum_is_refused_with_the_minimum():
    check_input_size("resnet50", 32)
    with pytest.raises(ConfigError, match="at least 32 for resnet50.*image_size=31"):
        check_input_size("resnet50", 31)
    with pytest.raises(ConfigError, match="at least 32"):
        create_backbone("resnet50", weights="none", input_shape=(31, 64, 3))


def test_a_weights_file_that_does_not_fit_is_a_clear_error(tmp_path):
    path = tmp_path / "garbage.h5"
    path.write_bytes(b"\0" * 100)
    with pytest.raises(WeightsError, match="could not be loaded into resnet50"):
        create_backbone("resnet50", weights=str(path), input_shape=(32, 32, 3))


def test_imagenet_weights_offline_stop_with_the_weights_message(offline_downloads):
    with pytest.raises(WeightsError, match="could not fetch the ImageNet weights of resnet50"):
        create_backbone("resnet50", weights="imagenet", input_shape=(32, 32, 3))


def test_a_plain_weights_file_without_a_sidecar_loads_every_weight(tmp_path):
    source = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = str(tmp_path / "elsewhere.weights.h5")
    source.save_weights(path)
    (tmp_path / "elsewhere.json").write_text("{}")  # not the sidecar's name: ignored
    loaded = create_backbone("resnet50", weights=path, input_shape=(32, 32, 3))
    assert len(loaded.weights) == len(source.weights) == 318
    for expected, actual in zip(source.weights, loaded.weights):
        np.testing.assert_array_equal(np.asarray(expected), np.asarray(actual), err_msg=expected.path)


@pytest.mark.parametrize("content, message", [
    ("{not json", "cannot be read"),
    ('{"format": 2, "backbone": "resnet50"}', "has format 2; this version reads format 1"),
    ('{"format": 1, "backbone": "resnet50", "weights_sha256": "ab", "epochs": "one", "classes": [], "source": {}}',
     "has epochs='one', not of type int"),
    ('{"format": 1, "backbone": 50, "weights_sha256": "ab", "epochs": 1, "classes": [], "source": {}}',
     "has backbone=50, not of type str"),
])
def test_a_damaged_sidecar_is_named_and_another_tool_s_json_is_ignored(tmp_path, content, message):
    weights = tmp_path / "x.weights.h5"
    weights.write_bytes(b"weights")
    sidecar = tmp_path / "x.weights.json"
    sidecar.write_text('{"made_by": "another tool"}')
    assert read_sidecar(str(weights)) is None
    sidecar.write_text(content)
    with pytest.raises(WeightsError, match=f"sidecar .*x.weights.json.*{re.escape(message)}"):
        read_sidecar(str(weights))
    assert read_sidecar(str(tmp_path / "x.h5")) is None  # only a .weights.h5 file has a sidecar
