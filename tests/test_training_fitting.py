import keras
import numpy as np
import pytest

from resnet_transfer.config import ModelConfig, RunConfig
from resnet_transfer.model.assembly import backbone_of, build_model, compile_model
from resnet_transfer.training import batches
from resnet_transfer.training.fitting import Phase, balanced_class_weight, choose_path, fit


def test_balanced_weights_are_inverse_class_frequency():
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
    weights = balanced_class_weight(labels, num_classes=3)
    assert weights == pytest.approx({0: 10 / 18, 1: 10 / 9, 2: 10 / 3})


def test_the_cached_path_is_taken_only_for_a_frozen_backbone():
    model = build_model(ModelConfig(backbone="resnet50", weights="none"), image_shape=(32, 32, 3), num_classes=2)
    use_cache, _ = choose_path(RunConfig(), model)
    assert use_cache
    use_cache, reason = choose_path(RunConfig.from_dict({"train": {"feature_cache": "off"}}), model)
    assert not use_cache and "--no-cache" in reason
    backbone_of(model).trainable = True
    use_cache, reason = choose_path(RunConfig(), model)
    assert not use_cache and "trainable" in reason


@pytest.mark.parametrize("settings, small_model, jit_compile", [
    ({}, False, False), ({"label_smoothing": 0.1}, True, False),
    pytest.param({"class_weight": "balanced"}, True, False, marks=pytest.mark.slow),
    pytest.param({}, True, True, marks=pytest.mark.slow)])  # (XLA's compilation: the fast loop's longest)
def test_features_held_in_memory_and_memory_mapped_give_the_same_history(tmp_path, monkeypatch, caplog, settings,
                                                                         small_model, jit_compile):
    # small_model: in memory, the head's steps run through TensorBatches.train_function (batches
    # gathered in this thread, four steps a call, one XLA program with jit_compile); from the
    # memory map, through Keras's own (one XLA program per step).
    rng = np.random.default_rng(0)
    features, labels = rng.standard_normal((150, 12)).astype(np.float32), rng.integers(0, 3, 150)
    np.save(tmp_path / "features.npy", features)
    mapped = np.load(tmp_path / "features.npy", mmap_mode="r")
    config = RunConfig.from_dict({"train": {"batch_size": 16, "steps_per_execution": 4,
                                            "label_smoothing": settings.get("label_smoothing", 0.0)}})
    class_weight = balanced_class_weight(labels, 3) if settings.get("class_weight") else None
    histories = []
    caplog.set_level("DEBUG", logger="resnet_transfer.training.fitting")
    for share in (0.5, 0.0):  # in memory (tf.data), then read batch by batch from the memory map
        monkeypatch.setattr(batches, "MEMORY_SHARE", share)
        keras.utils.set_random_seed(0)
        head = keras.Sequential([keras.Input((12,)), keras.layers.Dense(8, activation="relu"),
                                 keras.layers.Dense(3, activation="softmax")])
        compile_model(head, learning_rate=1e-2, steps_per_execution=4, jit_compile=jit_compile,
                      label_smoothing=config.train.label_smoothing)
        histories.append(fit(head, mapped, labels, (mapped[:40], labels[:40]), config=config,
                             phase=Phase("head", epochs=3, first_epoch=0, learning_rate=1e-2), callbacks=[],
                             class_weight=class_weight, small_model=small_model))
    said = [record.getMessage() for record in caplog.records if "phase inputs" in record.getMessage()]
    assert "held in memory" in said[0] and "batch by batch" in said[1]
    gathered = [record.getMessage() for record in caplog.records if "gathered in this thread" in record.getMessage()]
    assert len(gathered) == (1 if small_model else 0)
    assert histories[0]["loss"][0] != histories[0]["loss"][2]
    if jit_compile:  # XLA may fuse four steps otherwise than one
        assert histories[0].keys() == histories[1].keys()
        for name in histories[0]:
            np.testing.assert_allclose(histories[0][name], histories[1][name], rtol=1e-5, err_msg=name)
    else:
        assert histories[0] == histories[1]


def test_the_head_inside_a_strategy_trains_through_keras_own_steps(caplog):
    # TensorBatches.train_function calls train_step outside strategy.run: not under a strategy,
    # even a one-replica one (Keras's on-read metric variables would refuse its updates).
    import tensorflow as tf

    rng = np.random.default_rng(0)
    features, labels = rng.standard_normal((64, 12)).astype(np.float32), rng.integers(0, 3, 64)
    config = RunConfig.from_dict({"train": {"batch_size": 16, "steps_per_execution": 2}})
    caplog.set_level("DEBUG", logger="resnet_transfer.training.fitting")
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        head = keras.Sequential([keras.Input((12,)), keras.layers.Dense(3, activation="softmax")])
        compile_model(head, learning_rate=1e-2, steps_per_execution=2, jit_compile=False)
        history = fit(head, features, labels, (features[:16], labels[:16]), config=config,
                      phase=Phase("head", epochs=2, first_epoch=0, learning_rate=1e-2), callbacks=[], small_model=True)
    assert len(history["loss"]) == 2
    assert not [record for record in caplog.records if "gathered in this thread" in record.getMessage()]


def test_the_progress_bar_never_counts_past_the_epochs_steps():
    from resnet_transfer.training.callbacks import StepProgress

    progress = StepProgress()
    progress.set_params({"verbose": 1, "epochs": 1, "steps": 6})
    progress.on_train_begin()
    progress.on_epoch_begin(0)
    progress.on_train_batch_end(3, {"loss": 1.0})
    assert progress.seen == 4
    progress.on_train_batch_end(7, {"loss": 1.0})  # a call of 4 steps from step 4: Keras reports step 7
    assert progress.seen == 6
