import json
import os

import keras
import numpy as np
import pytest

from resnet_transfer.errors import ConfigError
from resnet_transfer.files import hash_file
from resnet_transfer.cache import extraction as extraction_module
from resnet_transfer.cache.extraction import cached_features, extract_features, predict_in_batches
from resnet_transfer.cache.keys import CACHE_FORMAT, FeatureKey
from resnet_transfer.cache.store import FeatureCache


@pytest.fixture(scope="module")
def extractor():
    """A small real Keras model standing in for a backbone (fast to run)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    return keras.Model(inputs, outputs)


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, size=(50, 8, 8, 3), dtype=np.uint8)


def make_key(images, **changes):
    values = dict(backbone="resnet50", weights="random:seed=0", preprocess="seed", pooling="flatten", images=images,
                  dtype="float32")
    return FeatureKey.create(**{**values, **changes})


def test_extraction_in_chunks_equals_one_predict(extractor, images, tmp_path):
    path = str(tmp_path / "features.npy")
    extract_features(extractor, images, path, batch_size=7, chunk_size=16)
    np.testing.assert_allclose(np.load(path), extractor.predict(images.astype("float32"), verbose=0), rtol=1e-5, atol=1e-6)


def test_key_changes_with_everything_that_changes_features(images):
    base = make_key(images)
    other_images = images.copy()
    other_images[0, 0, 0, 0] ^= 1
    variants = [
        make_key(images, backbone="resnet101"),
        make_key(images, weights="random:seed=1"),
        make_key(images, preprocess="imagenet"),
        make_key(images, pooling="avg"),
        make_key(images, dtype="float16"),
        make_key(images, feature_layer="conv3"),
        make_key(other_images),
        make_key(images[:-1]),
    ]
    assert base.format == CACHE_FORMAT and base.input_shape == (8, 8, 3)
    assert len({base.digest} | {key.digest for key in variants}) == 1 + len(variants)
    assert make_key(images.copy()).digest == base.digest


def test_miss_then_hit_returns_the_same_features(extractor, images, tmp_path):
    cache = FeatureCache(str(tmp_path))
    key = make_key(images)
    first, status, seconds = cached_features(extractor, images, key=key, cache=cache)
    assert status == "miss" and seconds > 0
    second, status, seconds = cached_features(extractor, images, key=key, cache=cache)
    assert status == "hit" and seconds == 0.0
    assert isinstance(second, np.memmap) and np.array_equal(np.asarray(first), np.asarray(second))


def test_float16_cache_stores_float16(extractor, images, tmp_path):
    features, _, _ = cached_features(extractor, images, key=make_key(images, dtype="float16"), cache=FeatureCache(str(tmp_path)))
    assert features.dtype == np.float16


def test_corrupted_entry_is_discarded_with_a_warning_and_recomputed(extractor, images, tmp_path):
    cache = FeatureCache(str(tmp_path))
    key = make_key(images)
    good, _, _ = cached_features(extractor, images, key=key, cache=cache)
    expected = np.array(good)
    del good
    path = os.path.join(cache.entry_path(key), "features.npy")
    with open(path, "r+b") as handle:
        handle.seek(-4, os.SEEK_END)
        handle.write(b"\x00\x00\xc0\x7f")
    with pytest.warns(UserWarning, match="discarded"):
        features, status, _ = cached_features(extractor, images, key=key, cache=cache)
    assert status == "miss" and np.array_equal(np.asarray(features), expected)


def test_interrupted_extraction_leaves_no_entry(extractor, images, tmp_path):
    cache = FeatureCache(str(tmp_path))
    key = make_key(images)

    def killed(path):
        np.lib.format.open_memmap(path, mode="w+", dtype="float32", shape=(50, 4))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.store(key, killed)
    assert cache.load(key) is None and os.listdir(tmp_path) == []
    _, status, _ = cached_features(extractor, images, key=key, cache=cache)
    assert status == "miss"


def test_an_entry_of_an_older_cache_format_is_not_used(extractor, images, tmp_path):
    cache = FeatureCache(str(tmp_path))
    key = make_key(images)
    cached_features(extractor, images, key=key, cache=cache)
    older = FeatureKey(**{**key.__dict__, "format": CACHE_FORMAT - 1})
    assert older.digest != key.digest and cache.load(older) is None


def test_a_cache_that_cannot_hold_files_is_refused_before_any_work(tmp_path):
    FeatureCache(str(tmp_path / "new")).check_writable()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot hold feature files.*--no-cache"):
        FeatureCache(str(tmp_path / "file")).check_writable()


class _Killed(Exception):
    pass


def test_a_killed_extraction_goes_on_from_its_first_unfinished_chunk(extractor, images, tmp_path, monkeypatch):
    cache, key = FeatureCache(str(tmp_path)), make_key(images)
    predicted = []

    def counting_predict(model, chunk, batch_size):  # counts the images of every chunk, killed at the third
        if len(predicted) == 2 and kill:
            raise _Killed
        predicted.append(len(chunk))
        return predict_in_batches(model, chunk, batch_size)

    monkeypatch.setattr(extraction_module, "predict_in_batches", counting_predict)
    kill = True
    with pytest.raises(_Killed):
        cached_features(extractor, images, key=key, cache=cache, batch_size=16, chunk_size=16)
    assert cache.load(key) is None and len(os.listdir(cache.chunks_path(key))) == 2 * 2  # 2 chunks, each with its record
    kill, predicted[:] = False, []
    features, status, _ = cached_features(extractor, images, key=key, cache=cache, batch_size=16, chunk_size=16)
    assert status == "miss" and predicted == [16, 2]  # chunks 3 and 4 (of 50 images: 16, 16, 16, 2)
    np.testing.assert_allclose(features, extractor.predict(images.astype("float32"), verbose=0), rtol=1e-5, atol=1e-6)
    assert os.listdir(tmp_path) == [key.digest]  # the chunks are gone once the entry is complete


def test_shards_each_extract_their_chunks_and_the_last_one_assembles_the_entry(extractor, images, tmp_path):
    cache, key = FeatureCache(str(tmp_path)), make_key(images)
    features, status, _ = cached_features(extractor, images, key=key, cache=cache, chunk_size=16, shard=(1, 2))
    assert (features, status) == (None, "partial") and cache.load(key) is None
    # A chunk damaged since it was written is computed again.
    damaged = os.path.join(cache.chunks_path(key), min(name for name in os.listdir(cache.chunks_path(key)) if name.endswith(".npy")))
    with open(damaged, "r+b") as handle:
        handle.seek(-4, os.SEEK_END)
        handle.write(b"\x00\x00\x00\x00")
    features, status, _ = cached_features(extractor, images, key=key, cache=cache, chunk_size=16, shard=(0, 2))
    assert status == "partial"  # shard 1's first chunk is damaged: not finished
    features, status, _ = cached_features(extractor, images, key=key, cache=cache, chunk_size=16, shard=(1, 2))
    assert status == "miss"
    np.testing.assert_allclose(features, extractor.predict(images.astype("float32"), verbose=0), rtol=1e-5, atol=1e-6)


def test_a_chunk_of_another_shape_with_a_matching_record_is_computed_again(extractor, images, tmp_path):
    cache, key = FeatureCache(str(tmp_path)), make_key(images)
    cached_features(extractor, images, key=key, cache=cache, chunk_size=16, shard=(0, 2))
    first = os.path.join(cache.chunks_path(key), "chunk-000000000-000000016.npy")
    np.save(first, np.zeros((16, 5), "float32"))  # a wrong width, its record rewritten to match
    with open(first[: -len(".npy")] + ".json", "w") as handle:
        json.dump({"rows": 16, "sha256": hash_file(first)}, handle)
    features, status, _ = cached_features(extractor, images, key=key, cache=cache, chunk_size=16)
    assert status == "miss"
    np.testing.assert_allclose(features, extractor.predict(images.astype("float32"), verbose=0), rtol=1e-5, atol=1e-6)
