"""--mixup and --cutmix: training batches mixed pairwise, labels mixed as the inputs are."""

import keras
import numpy as np
import pytest
from conftest import requires_mnist

from resnet_transfer.config import RunConfig, TrainConfig
from resnet_transfer.config.rules import check_settings_take_effect
from resnet_transfer.errors import ConfigError
from resnet_transfer.training.batches import ArrayBatches
from resnet_transfer.training.mixing import batch_mixer
from resnet_transfer.training.train import train


def _constant_images(count: int, size: int = 16) -> tuple:
    """Image i is filled with the value i, labelled i: a mix's pixels say which images it took."""
    images = np.repeat(np.arange(count, dtype="float32"), size * size * 3).reshape(count, size, size, 3)
    return images, keras.utils.to_categorical(np.arange(count), count)


def test_mixed_feature_vectors_and_their_labels_are_the_same_mix():
    """With each vector its own one-hot label, the mixed vectors must equal the mixed labels."""
    identity = np.eye(8, dtype="float32")
    mix = batch_mixer(TrainConfig(mixup=0.4), on_features=True)
    features, labels = mix(identity, identity, (0, 1, 2))
    np.testing.assert_allclose(features, labels, atol=1e-6)
    np.testing.assert_allclose(labels.sum(axis=1), 1, atol=1e-6)
    assert not np.allclose(labels, identity)  # Beta(0.4, 0.4) mixes some rows
    np.testing.assert_array_equal(mix(identity, identity, (0, 1, 2))[0], features)  # the key fixes the draw
    assert not np.array_equal(mix(identity, identity, (0, 2, 2))[0], features)  # another epoch draws anew


@pytest.mark.parametrize("settings", [{"mixup": 0.4}, {"cutmix": 1.0}, {"mixup": 0.4, "cutmix": 1.0}])
def test_keras_mixup_and_cutmix_mix_images_and_labels_alike(settings):
    """Keras's layers: a mixed image's mean is its label's mix of the images' values (MixUp:
    exactly; CutMix: its labels are mixed by the box's area and its pixels are the grid points
    inside the box, which differ by less than (2 * size + 1) / size**2 of the image)."""
    size = 64
    images, labels = _constant_images(6, size)
    mix = batch_mixer(TrainConfig(fine_tune_epochs=1, **settings), on_features=False)
    for epoch in range(4):
        mixed, mixed_labels = mix(images, labels, (0, epoch, 0))
        np.testing.assert_allclose(mixed_labels.sum(axis=1), 1, atol=1e-5)
        expected = mixed_labels @ np.arange(6)
        if "cutmix" not in settings:
            np.testing.assert_allclose(mixed.mean(axis=(1, 2, 3)), expected, atol=1e-4)
            continue
        for image, label, mean in zip(mixed, mixed_labels, expected):
            values = np.unique(image)
            if not np.array_equal(values, np.round(values)):  # a MixUp batch (both asked: each batch takes one)
                assert "mixup" in settings
                np.testing.assert_allclose(image.mean(), mean, atol=1e-4)
                continue
            assert len(values) <= 2
            shares = {int(value): float(np.mean(image == value)) for value in values}
            for value, share in shares.items():
                assert abs(share - label[value]) < (2 * size + 1) / size**2


def test_a_cached_head_phase_mixes_feature_vectors_only():
    assert batch_mixer(TrainConfig(cutmix=1.0, fine_tune_epochs=1), on_features=True) is None
    assert batch_mixer(TrainConfig(), on_features=False) is None


def test_the_batches_mix_each_batch_by_seed_epoch_and_index():
    identity = np.eye(16, dtype="float32")
    mix = batch_mixer(TrainConfig(mixup=1.0), on_features=True)
    batches = ArrayBatches(identity, identity, batch_size=8, shuffle=True, seed=3, mix=mix)
    batches.set_epoch(2)
    features, labels = batches[1]
    np.testing.assert_allclose(features, labels, atol=1e-6)
    rows = np.sort(batches.order[8:16])
    np.testing.assert_array_equal(features, mix(identity[rows], identity[rows], (3, 2, 1))[0])


def test_the_alphas_are_checked_and_cutmix_needs_an_end_to_end_phase():
    for name, value in (("mixup", -1), ("mixup", float("nan")), ("cutmix", 1.5), ("cutmix", "1")):
        with pytest.raises(ConfigError, match=f"{name} must be a number in"):
            TrainConfig(fine_tune_epochs=1, **{name: value})
    with pytest.raises(ConfigError, match="--cutmix changes nothing here: CutMix pastes boxes of images"):
        check_settings_take_effect(RunConfig.from_dict({"train": {"cutmix": 1.0}}))
    for end_to_end in ({"fine_tune_epochs": 1}, {"feature_cache": "off"}):
        check_settings_take_effect(RunConfig.from_dict({"train": {"cutmix": 1.0, **end_to_end}}))
    check_settings_take_effect(RunConfig.from_dict({"train": {"mixup": 0.2}}))  # a cached head mixes features


@pytest.mark.slow
@requires_mnist
def test_a_run_with_mixup_trains_its_head_on_the_cache_with_mixed_labels(tmp_path):
    def run(name, **settings):
        return train(RunConfig.from_dict({
            "data": {"limit": 256, "val_size": 64, "test_limit": 64},
            "model": {"weights": "none", "backbone": "resnet50"},
            "train": {"epochs": 2, "cache_dir": str(tmp_path / "cache"), **settings},
            "run_dir": str(tmp_path / name)}))

    plain, mixed = run("plain"), run("mixed", mixup=0.4)
    assert mixed.metrics["feature_cache"] == "hit"  # the backbone did not run again
    assert isinstance(mixed.model.loss, keras.losses.CategoricalCrossentropy)
    assert mixed.history["loss"] != plain.history["loss"]
