import os

import h5py
import keras
import pytest

from resnet_transfer.errors import WeightsError
from resnet_transfer import registry
from resnet_transfer.model.backbone import create_backbone
from resnet_transfer.registry import BACKBONES
from resnet_transfer.model.weights import (
    cached_weights,
    fetch_weights,
    file_md5,
    import_weights,
    keras_home,
    weights_cache_path,
    weights_identity,
)


def _legacy_h5_weights(model, path):
    """Writes weights in the legacy HDF5 layout of Keras's published application files."""
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    with h5py.File(path, "w") as handle:
        save_weights_to_hdf5_group(handle, model)


def test_cache_path_is_in_keras_home_under_keras_file_name():
    assert keras_home() == os.environ["KERAS_HOME"]
    assert weights_cache_path("resnet50").endswith("/models/" + BACKBONES["resnet50"].weights_file)
    assert weights_cache_path("resnet50").startswith(keras_home())


def test_import_refuses_a_file_with_the_wrong_hash(tmp_path):
    path = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    path.write_bytes(b"not the weights")
    with pytest.raises(WeightsError) as caught:
        import_weights(str(path), "resnet50")
    message = str(caught.value)
    assert str(path) in message and BACKBONES["resnet50"].weights_md5 in message and file_md5(str(path)) in message
    assert cached_weights()["resnet50"] is None


def test_import_of_a_missing_file_says_so(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        import_weights(str(tmp_path / "missing.h5"), "resnet50")


def test_imported_weights_are_what_imagenet_then_loads_offline(tmp_path, monkeypatch, offline_downloads):
    # Our own weights file stands in for Keras's published one: its hash is put in
    # the registry, and the real Keras loading path (weights="imagenet") must find it.
    source = create_backbone("resnet50", weights="none", input_shape=(32, 32, 3))
    path = tmp_path / "carried.h5"
    _legacy_h5_weights(source, path)
    spec = BACKBONES["resnet50"]
    monkeypatch.setitem(BACKBONES, "resnet50", registry.BackboneSpec(**{**spec.__dict__, "weights_md5": file_md5(str(path))}))
    monkeypatch.setitem(keras.src.applications.resnet.WEIGHTS_HASHES, "resnet50", ("unused", file_md5(str(path))))
    target = import_weights(str(path), "resnet50")
    try:
        assert target == weights_cache_path("resnet50") and file_md5(target) == file_md5(str(path))
        assert cached_weights()["resnet50"] == target
        loaded = create_backbone("resnet50", weights="imagenet", input_shape=(32, 32, 3))
        for expected, found in zip(source.get_weights(), loaded.get_weights()):
            assert (expected == found).all()
    finally:
        os.remove(target)  # other tests expect no cached ImageNet weights


def test_offline_imagenet_fetch_says_what_to_do(offline_downloads):
    with pytest.raises(WeightsError) as caught:
        fetch_weights("resnet152")
    message = str(caught.value)
    for part in ("could not fetch", weights_cache_path("resnet152"), "weights import", "--weights PATH", "--weights none"):
        assert part in message
    assert "network disabled by the test suite" in message  # the download was tried, and refused


def test_weights_identity_changes_with_the_weights(tmp_path):
    first, second = tmp_path / "a.h5", tmp_path / "b.h5"
    first.write_bytes(b"a")
    second.write_bytes(b"b")
    identities = {
        weights_identity("resnet50", "none", seed=0),
        weights_identity("resnet50", "none", seed=1),
        weights_identity("resnet50", "imagenet", seed=0),
        weights_identity("resnet101", "imagenet", seed=0),
        weights_identity("resnet50", str(first), seed=0),
        weights_identity("resnet50", str(second), seed=0),
    }
    assert len(identities) == 6
    assert weights_identity("resnet50", "imagenet", seed=0) == weights_identity("resnet50", "imagenet", seed=5)


def test_a_sidecar_whose_format_is_true_is_not_taken_for_format_1(tmp_path):
    import json

    from resnet_transfer.errors import WeightsError
    from resnet_transfer.model.weights import read_sidecar

    (tmp_path / "b.weights.h5").write_bytes(b"weights")
    (tmp_path / "b.weights.json").write_text(json.dumps({"format": True, "backbone": "resnet50"}))
    with pytest.raises(WeightsError, match="has format True"):
        read_sidecar(str(tmp_path / "b.weights.h5"))
