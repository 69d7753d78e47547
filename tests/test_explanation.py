import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from resnet_transfer.config import ModelConfig
from resnet_transfer.explanation import choose_layer, grad_cam, grad_cam_maps, overlay, write_explanations
from resnet_transfer.model.assembly import backbone_of, build_model, head_of

CORNER = (slice(0, 2), slice(0, 2))


def corner_maps(count: int = 3) -> np.ndarray:
    """Feature maps (N, 8, 8, 2): channel 0 is bright only in the top-left 2x2 block, channel 1 a dim field."""
    maps = np.zeros((count, 8, 8, 2), dtype="float32")
    maps[:, 0:2, 0:2, 0] = 1.0
    maps[:, :, :, 1] = 0.1
    return maps


# Logits after global average pooling: class 1 ("corner") counts channel 0 and is lowered by channel 1,
# class 0 the other way round.
KERNEL = np.array([[-1.0, 5.0], [1.0, -1.0]], dtype="float32")


def pooled_logits(maps):
    return tf.matmul(tf.reduce_mean(maps, axis=(1, 2)), KERNEL)


def test_the_heat_map_of_a_known_model_lights_the_corner_that_decides_its_class():
    maps = corner_maps()
    heatmaps, classes, probabilities = grad_cam_maps(lambda images: tf.constant(images), pooled_logits, maps)
    assert heatmaps.shape == (3, 8, 8) and heatmaps.dtype == np.float32
    assert classes.tolist() == [1, 1, 1]
    np.testing.assert_allclose(probabilities, tf.nn.softmax(pooled_logits(maps)).numpy(), atol=1e-6)
    for heatmap in heatmaps:
        assert np.unravel_index(heatmap.argmax(), heatmap.shape) in {(0, 0), (0, 1), (1, 0), (1, 1)}
        np.testing.assert_allclose(heatmap[CORNER], 1.0, atol=1e-6)
        outside = heatmap.copy()
        outside[CORNER] = 0.0
        assert outside.max() < 1e-6
    # The other class's evidence is everywhere but the corner.
    other, classes, _ = grad_cam_maps(lambda images: images, pooled_logits, maps, class_indices=0)
    assert classes.tolist() == [0, 0, 0]
    assert other[0][CORNER].max() < 1e-6 and other[0][4:, 4:].min() == pytest.approx(1.0)


def test_a_map_with_no_positive_evidence_stays_zeros_and_bad_classes_are_refused():
    heatmaps, _, _ = grad_cam_maps(lambda images: images, pooled_logits, np.zeros((2, 8, 8, 2), dtype="float32"))
    assert np.all(heatmaps == 0.0) and np.all(np.isfinite(heatmaps))
    with pytest.raises(ValueError, match="class index 2"):
        grad_cam_maps(lambda images: images, pooled_logits, corner_maps(), class_indices=2)
    with pytest.raises(ValueError, match="Received: 2 class indices"):
        grad_cam_maps(lambda images: images, pooled_logits, corner_maps(), class_indices=[0, 1])
    with pytest.raises(ValueError, match="do not depend on its input maps"):
        grad_cam_maps(lambda images: images, lambda maps: tf.zeros((len(maps), 2)), corner_maps())


def test_batches_give_the_same_maps_as_one_pass():
    maps = np.random.default_rng(0).uniform(size=(7, 8, 8, 2)).astype("float32")
    whole = grad_cam_maps(lambda images: images, pooled_logits, maps)
    batched = grad_cam_maps(lambda images: images, pooled_logits, maps, batch_size=3)
    for one, other in zip(whole, batched):
        np.testing.assert_allclose(one, other, atol=1e-6)


def corner_images(count: int, rng: np.random.Generator) -> tuple:
    """16x16 noise; in class 1 the top-left 4x4 corner is bright."""
    images = rng.uniform(0.0, 0.5, size=(count, 16, 16, 1)).astype("float32")
    labels = rng.integers(0, 2, size=count)
    images[labels == 1, :4, :4, :] = 1.0
    return images, labels


def test_a_trained_model_is_explained_by_the_corner_it_learned():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images, labels = corner_images(256, rng)
    inputs = keras.Input((16, 16, 1))
    hidden = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    maps = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(hidden)
    logits = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(maps))
    model = keras.Model(inputs, logits)
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(images, labels, epochs=15, batch_size=32, verbose=0)
    tests, test_labels = corner_images(64, rng)
    positives = tests[test_labels == 1]
    assert model.evaluate(tests, test_labels, verbose=0)[1] >= 0.9

    heatmaps, classes, _ = grad_cam_maps(keras.Model(inputs, maps), keras.Model(maps, logits), positives,
                                         class_indices=1)
    peaks = [np.unravel_index(heatmap.argmax(), heatmap.shape) for heatmap in heatmaps]
    in_quadrant = np.mean([row < 8 and column < 8 for row, column in peaks])
    assert in_quadrant >= 0.8, peaks


@pytest.fixture(scope="module")
def seed_model():
    keras.utils.set_random_seed(1)
    return build_model(ModelConfig(backbone="resnet50", weights="none", head_units=16), image_shape=(32, 32, 3),
                       num_classes=3)


def some_images(count: int) -> np.ndarray:
    return np.random.default_rng(2).integers(0, 256, size=(count, 32, 32, 3)).astype("float32")


def test_grad_cam_on_the_seed_model_explains_its_own_predictions_at_conv3(seed_model):
    images = some_images(5)
    assert choose_layer(seed_model) == "conv3"  # conv5 is 1x1 at 32 px
    heatmaps, classes, probabilities = grad_cam(seed_model, images, batch_size=2)
    predicted = seed_model.predict(images, verbose=0)
    assert heatmaps.shape == (5, 4, 4)
    assert heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0
    np.testing.assert_array_equal(classes, predicted.argmax(axis=-1))
    np.testing.assert_allclose(probabilities, predicted, atol=1e-4)


def test_the_split_model_has_the_gradients_of_the_whole_one(seed_model):
    """The maps' gradients through the two models that share the layers equal those taken in one pass
    of the whole model, where the inner map is an intermediate output."""
    images = some_images(2)
    backbone, head = backbone_of(seed_model), head_of(seed_model)
    both = keras.Model(backbone.input, [backbone.get_layer("conv3_block4_out").output, backbone.output])
    with tf.GradientTape() as tape:
        maps, features = both(seed_model.get_layer("preprocessing")(images), training=False)
        hidden = head.get_layer("hidden")(head.get_layer("pooling")(features))
        dense = head.get_layer("probabilities")
        logits = tf.matmul(hidden, dense.kernel) + dense.bias
        score = tf.reduce_sum(logits[:, 2])
    weights = tf.reduce_mean(tape.gradient(score, maps), axis=(1, 2))
    expected = tf.nn.relu(tf.einsum("nhwc,nc->nhw", maps, weights)).numpy()
    expected /= expected.max(axis=(1, 2), keepdims=True)
    heatmaps, _, _ = grad_cam(seed_model, images, class_indices=2, layer="conv3")
    np.testing.assert_allclose(heatmaps, expected, atol=1e-4)


def test_grad_cam_on_a_cut_backbone_refuses_a_stage_beyond_the_cut():
    model = build_model(ModelConfig(backbone="resnet50", weights="none", head="linear", pooling="avg",
                                    feature_layer="conv4"), image_shape=(32, 32, 3), num_classes=3)
    images = some_images(2)
    assert choose_layer(model) == "conv3"
    heatmaps, classes, probabilities = grad_cam(model, images, layer="conv4")
    assert heatmaps.shape == (2, 2, 2)
    np.testing.assert_allclose(probabilities, model.predict(images, verbose=0), atol=1e-4)
    with pytest.raises(ValueError, match=r"conv2, conv3, conv4 .*Received: layer='conv5'"):
        grad_cam(model, images, layer="conv5")
    with pytest.raises(ValueError, match=r"conv2, conv3, conv4, conv5\. Received: layer='pool5'"):
        choose_layer(model, "pool5")
    with pytest.raises(ValueError, match=r"Received: images of shape \(2, 16, 16, 3\)"):
        grad_cam(model, images[:, :16, :16])


def test_a_v2_backbone_is_explained_at_its_normalised_output():
    model = build_model(ModelConfig(backbone="resnet50v2", weights="none", head="linear"), image_shape=(32, 32, 3),
                        num_classes=2)
    assert choose_layer(model) == "conv2"  # ResNetV2 strides at the end of each stage: conv2 ends at 4x4 here
    heatmaps, _, probabilities = grad_cam(model, some_images(2), layer="conv5")
    assert heatmaps.shape == (2, 1, 1)
    np.testing.assert_allclose(probabilities, model.predict(some_images(2), verbose=0), atol=1e-4)


def test_write_explanations_writes_one_png_per_image_under_unique_names(seed_model, tmp_path):
    images = some_images(3)
    rows = write_explanations(seed_model, images, ["a/cat.png", "b/cat.jpg", "dog.png"],
                              class_names=["cat", "dog", "bird"], output_dir=str(tmp_path / "explain"))
    assert [os.path.basename(row["explanation"]) for row in rows] == [
        "cat-gradcam.png", "cat-2-gradcam.png", "dog-gradcam.png"]
    assert sorted(os.listdir(tmp_path / "explain")) == ["cat-2-gradcam.png", "cat-gradcam.png", "dog-gradcam.png"]
    predicted = seed_model.predict(images, verbose=0)
    for row, probabilities in zip(rows, predicted):
        with Image.open(row["explanation"]) as picture:
            assert picture.format == "PNG" and picture.mode == "RGB" and picture.size == (224, 224)
        assert row["class"] == ["cat", "dog", "bird"][probabilities.argmax()] and row["layer"] == "conv3"
        assert row["probability"] == pytest.approx(probabilities.max(), abs=1e-4)
    rows = write_explanations(seed_model, images[:1], ["x.png"], class_names=["cat", "dog", "bird"],
                              output_dir=str(tmp_path / "bird"), class_index=2, layer="conv2")
    assert rows[0]["class"] == "bird" and rows[0]["layer"] == "conv2"
    with pytest.raises(ValueError, match="0 to 2. Received: class_index=3"):
        write_explanations(seed_model, images, ["a", "b", "c"], class_names=["cat", "dog", "bird"],
                           output_dir=str(tmp_path), class_index=3)
    with pytest.raises(ValueError, match="Received: 2 names"):
        write_explanations(seed_model, images, ["a", "b"], class_names=["cat", "dog", "bird"], output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="Received: 2 class names"):
        write_explanations(seed_model, images, ["a", "b", "c"], class_names=["cat", "dog"], output_dir=str(tmp_path))


def test_overlay_blends_jet_colours_over_an_image_of_its_size():
    image = np.full((40, 30, 3), 200, dtype="uint8")
    heatmap = np.zeros((4, 4), dtype="float32")
    heatmap[0, 0] = 1.0
    blended = overlay(image, heatmap)
    assert blended.dtype == np.uint8 and blended.shape == (40, 30, 3)
    np.testing.assert_array_equal(overlay(image, heatmap, alpha=0.0), image)
    hot = overlay(image, np.ones((4, 4)), alpha=1.0)
    assert tuple(hot[0, 0]) == (128, 0, 0)  # the top of "jet": dark red
    assert overlay(image[..., 0], heatmap).shape == (40, 30, 3)  # a grayscale image is coloured too
    with pytest.raises(ValueError, match="Received: alpha=1.5"):
        overlay(image, heatmap, alpha=1.5)
    with pytest.raises(ValueError, match=r"Received: a heat map of shape \(1, 4, 4\)"):
        overlay(image, heatmap[None])


# --- explain_run and the command line: what a user can get wrong -------------------------------------------------


def test_the_inputs_skip_missing_names_repeated_files_and_earlier_explanations_in_the_output_folder(tmp_path):
    from resnet_transfer.explanation import _explainable_files

    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png", "a-gradcam.png"):
        (images / name).write_bytes(b"")
    files = _explainable_files([str(images / "a.png"), str(tmp_path / "missing.png"), str(images)], str(images))
    files = [(os.path.relpath(path, tmp_path), reason.split(" (")[0]) for path, reason in files]
    assert files == [("images/a.png", ""), ("missing.png", "no such file or folder, and no glob match"),
                     ("images/a-gradcam.png", "an explanation written by explain into the output folder"),
                     ("images/a.png", "given twice"), ("images/b.png", "")]
    # named on its own, or in another folder than the output, an explanation is an image like any other
    assert _explainable_files([str(images / "a-gradcam.png")], str(images)) == [(str(images / "a-gradcam.png"), "")]
    assert all(reason == "" for _, reason in _explainable_files([str(images)], str(tmp_path / "elsewhere")))


def test_an_output_folder_that_is_a_file_is_refused_by_its_flag_before_any_work(tmp_path):
    from resnet_transfer.errors import DataError
    from resnet_transfer.explanation import _check_output_dir

    (tmp_path / "afile").write_text("x")
    _check_output_dir(str(tmp_path / "new" / "deeper"))  # (made later)
    with pytest.raises(DataError, match=r"--output '.*afile' is a file, not a folder"):
        _check_output_dir(str(tmp_path / "afile"))
    with pytest.raises(DataError, match=r"--output '.*afile/sub' lies under '.*afile', a file"):
        _check_output_dir(str(tmp_path / "afile" / "sub"))


def test_a_class_given_by_its_place_or_in_another_case_is_pointed_to_its_name():
    from resnet_transfer.explanation import _unknown_class

    names = ["circle", "square", "triangle"]
    assert _unknown_class("1", names, "runs/r").endswith("class 1 is --class 'square'")
    assert _unknown_class("Circle", names, "runs/r").endswith("did you mean --class 'circle'?")
    assert _unknown_class("cat", names, "runs/r") == ("--class 'cat' is not a class of run 'runs/r'; its classes: "
                                                      "circle, square, triangle")


def test_a_stage_beyond_the_runs_cut_is_refused_in_the_flags_words():
    from resnet_transfer.errors import ConfigError
    from resnet_transfer.explanation import _check_run_layer

    model = build_model(ModelConfig(backbone="resnet50", weights="none", head="linear", pooling="avg",
                                    feature_layer="conv4"), image_shape=(32, 32, 3), num_classes=3)
    _check_run_layer(model, "conv4", "runs/r")
    with pytest.raises(ConfigError, match=r"--feature-layer 'conv5': run 'runs/r' cuts its backbone at conv4 .* "
                                          r"computes conv2, conv3, conv4; give one of those"):
        _check_run_layer(model, "conv5", "runs/r")


def test_stems_that_differ_only_in_case_get_their_own_files():
    from resnet_transfer.explanation import _unique_stems

    assert _unique_stems(["a/Cat.PNG", "b/cat.png", "c/CAT.jpg"]) == ["Cat", "cat-2", "CAT-3"]


def test_a_failed_write_names_the_png_not_its_temporary_file(tmp_path, monkeypatch):
    import errno

    from resnet_transfer import explanation

    def full_disk(self, *arguments, **keywords):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(OSError) as raised:
        explanation._write_png(np.zeros((4, 4, 3), "uint8"), str(tmp_path / "cat-gradcam.png"))
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(tmp_path / "cat-gradcam.png")
    assert os.listdir(tmp_path) == []  # (no temporary file is left behind)


@pytest.mark.slow
def test_explain_on_the_command_line_skips_and_lists_what_it_cannot_explain(seed_model, tmp_path, capsys):
    import json

    from resnet_transfer.cli import main
    from resnet_transfer.config import RunConfig

    run = tmp_path / "run"
    run.mkdir()
    seed_model.save(str(run / "model.keras"))
    (run / "config.json").write_text(json.dumps({
        "config": RunConfig.from_dict({"model": {"weights": "none", "backbone": "resnet50"}}).to_dict(), "seed": 0,
        "class_names": ["circle", "square", "triangle"], "image_shape": [32, 32, 3],
        "data_source": {"image_size": 32, "resize": "stretch"}}))
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(some_images(1)[0].astype("uint8")).save(images / "one.png")
    (images / "notes.txt").write_text("no image")
    output = tmp_path / "out"

    for _ in range(2):  # the second time, the folder holds the first time's explanation: it is not explained again
        assert main(["explain", str(run), str(images), str(tmp_path / "missing.png"), "--output", str(output)]) == 0
    captured = capsys.readouterr()
    assert os.listdir(output) == ["one-gradcam.png"]
    assert captured.out.count("one-gradcam.png") == 2 and "Traceback" not in captured.err
    assert "skipped " + str(tmp_path / "missing.png") in captured.err and "notes.txt" in captured.err

    (tmp_path / "afile").write_text("x")
    for arguments, message in ((["--output", str(tmp_path / "afile")], "is a file, not a folder"),
                               (["--class", "1"], "class 1 is --class 'square'")):
        assert main(["explain", str(run), str(images), *arguments]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and message in error[0]
    assert not os.path.exists(run / "explanations")
