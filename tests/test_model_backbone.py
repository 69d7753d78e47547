import h5py
import keras
import numpy as np
import pytest
from conftest import network_reachable

import resnet_transfer.backbones as backbones
from resnet_transfer.backbones import (
    BACKBONES,
    ImagePreprocessing,
    create_backbone,
    fetch_weights,
    file_md5,
    get_backbone_spec,
    import_weights,
    weights_cache_path,
)
from resnet_transfer.errors import ConfigError, WeightsError


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_builds_frozen_with_its_feature_shape(name):
    backbone = create_backbone(name, weights="none", input_shape=(32, 32, 3))
    assert backbone.output_shape == (None, 1, 1, BACKBONES[name].feature_channels)
    assert not backbone.trainable_weights
    assert BACKBONES[name].weights_file.startswith(name) and len(BACKBONES[name].weights_md5) == 32


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(ConfigError) as caught:
        get_backbone_spec("resnet18")
    assert "resnet18" in str(caught.value) and all(name in str(caught.value) for name in BACKBONES)


@pytest.mark.parametrize("name", ["resnet50", "resnet50v2"])
def test_preprocessing_layer_matches_the_backbone_preprocess_input(name):
    pixels = np.random.default_rng(0).integers(0, 256, size=(2, 8, 8, 3)).astype("float32")
    seed = ImagePreprocessing(name, "seed")(pixels)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(seed), pixels / 255.0, rtol=1e-6)
    imagenet = ImagePreprocessing(name, "imagenet")(pixels)
    expected = BACKBONES[name].preprocess_input(pixels.copy())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(imagenet), expected, rtol=1e-5, atol=1e-4)


def _legacy_h5_weights(model, path):
    """Writes weights in the legacy HDF5 layout of Keras's published application files."""
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    with h5py.File(path, "w") as handle:
        save_weights_to_hdf5_group(handle, model)


def test_import_refuses_a_file_with_the_wrong_hash(tmp_path):
    path = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    path.write_bytes(b"not the weights")
    with pytest.raises(WeightsError) as caught:
        import_weights(str(path), "resnet50")
    message = str(caught.value)
    assert str(path) in message and BACKBONES["resnet50"].weights_md5 in message and file_md5(str(path)) in message


def test_imported_weights_are_what_imagenet_then_loads_offline(tmp_path, monkeypatch):
    # Our own weights file stands in for Keras's published one: its hash is put in
    # the registry, and the real Keras loading path (weights="imagenet") must find it.
    source = create_backbone("resnet50", weights="none", input_shape=(32, 32, 3))
    path = tmp_path / "carried.h5"
    _legacy_h5_weights(source, path)
    spec = BACKBONES["resnet50"]
    monkeypatch.setitem(BACKBONES, "resnet50", backbones.BackboneSpec(**{**spec.__dict__, "weights_md5": file_md5(str(path))}))
    monkeypatch.setitem(keras.src.applications.resnet.WEIGHTS_HASHES, "resnet50", ("unused", file_md5(str(path))))
    target = import_weights(str(path), "resnet50")
    assert target == weights_cache_path("resnet50") and file_md5(target) == file_md5(str(path))
    loaded = create_backbone("resnet50", weights="imagenet", input_shape=(32, 32, 3))
    for expected, found in zip(source.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(expected, found)


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


@pytest.mark.skipif(network_reachable(), reason="checks the offline failure; this machine can reach Keras's host")
def test_offline_imagenet_fetch_says_what_to_do():
    with pytest.raises(WeightsError) as caught:
        fetch_weights("resnet152")
    message = str(caught.value)
    for part in ("could not fetch", weights_cache_path("resnet152"), "weights import", "--weights PATH", "--weights none"):
        assert part in message
