import csv
import io
import json
import os

import keras
import numpy as np
import pytest
from imagesets import add_broken_files, draw_shape

from resnet_transfer.data.images import read_image
from resnet_transfer.errors import DataError
from resnet_transfer.prediction import expand_inputs, format_predictions, predict

CLASSES = ("cat", "dog", "fox")


@pytest.fixture(scope="module")
def model():
    """A tiny classifier of raw 8x8 pixels (fast; prediction does not care what the model is)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    pixels = keras.layers.Rescaling(1 / 255)(inputs)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(pixels))
    return keras.Model(inputs, outputs)


@pytest.fixture
def image_folder(tmp_path):
    """Two images at the top, one in a subfolder, and an unreadable text file."""
    rng = np.random.default_rng(0)
    for name, shape in (("b.png", "circle"), ("a.png", "square"), (os.path.join("sub", "c.jpg"), "triangle")):
        os.makedirs(os.path.dirname(tmp_path / "images" / name), exist_ok=True)
        draw_shape(shape, rng, (20, 12)).save(tmp_path / "images" / name)
    return tmp_path / "images"


def test_inputs_expand_files_folders_and_globs_in_order(image_folder):
    a, b, c = (str(image_folder / name) for name in ("a.png", "b.png", os.path.join("sub", "c.jpg")))
    assert expand_inputs([b, a]) == [b, a]  # files as given
    assert expand_inputs([str(image_folder)]) == [a, b, c]  # folders walked, sorted
    assert expand_inputs([str(image_folder / "*.png")]) == [a, b]
    assert expand_inputs([str(image_folder / "**" / "*.jpg")]) == [c]
    with pytest.raises(DataError, match="no image file, folder or glob match at .*missing.png"):
        expand_inputs([a, str(image_folder / "missing.png")])
    with pytest.raises(DataError, match="glob"):
        expand_inputs([str(image_folder / "*.gif")])


def test_an_array_gets_the_training_fit_and_the_model_probabilities(model):
    digits = np.random.default_rng(1).integers(0, 256, size=(5, 6, 6), dtype=np.uint8)
    results = predict(model, digits, top_k=2, class_names=CLASSES, image_size=8, resize="pad")
    padded = np.zeros((5, 8, 8, 3), np.float32)
    padded[:, 1:7, 1:7, :] = digits[..., None]  # grey to 3 channels, centred on black
    expected = model.predict(padded, verbose=0)
    assert [result["path"] for result in results] == list(range(5))
    for result, row in zip(results, expected):
        np.testing.assert_allclose(result["probabilities"], row, atol=1e-6)
        order = np.argsort(-row)[:2]
        assert [name for name, _ in result["top"]] == [CLASSES[i] for i in order]
        assert [p for _, p in result["top"]] == pytest.approx([row[i] for i in order], abs=1e-6)
        assert result["top"][0][1] >= result["top"][1][1]


def test_files_are_read_like_training_images_and_unreadable_ones_are_rows(model, image_folder):
    broken = add_broken_files(image_folder)
    results = predict(model, [str(image_folder)], top_k=3, class_names=CLASSES, image_size=8, resize="stretch")
    by_path = {result["path"]: result for result in results}
    assert set(by_path) == set(expand_inputs([str(image_folder)]))
    for name in broken:
        assert "top" not in by_path[broken[name]] and by_path[broken[name]]["error"]
    assert by_path[broken["empty"]]["error"] == "empty file"
    readable = [path for path in by_path if "error" not in by_path[path]]
    assert len(readable) == 3
    pixels = np.stack([read_image(path, size=8, resize="stretch") for path in readable]).astype("float32")
    for path, row in zip(readable, model.predict(pixels, verbose=0)):
        np.testing.assert_allclose(by_path[path]["probabilities"], row, atol=1e-6)
        assert sum(p for _, p in by_path[path]["top"]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("top_k", [0, 4, True, 1.5])
def test_top_k_must_be_between_1_and_the_number_of_classes(model, top_k):
    with pytest.raises(DataError, match=f"between 1 and 3.*top_k={top_k}"):
        predict(model, np.zeros((1, 8, 8, 3), np.uint8), top_k=top_k, class_names=CLASSES, image_size=8)


def test_a_model_needs_its_class_names_and_image_size(model):
    with pytest.raises(ValueError, match="class_names and image_size"):
        predict(model, np.zeros((1, 8, 8, 3), np.uint8))


@pytest.fixture
def results():
    return [
        {"path": "x/cat one.png", "top": [("cat", 0.75), ("dog", 0.2)], "probabilities": np.array([0.75, 0.2, 0.05])},
        {"path": "x/broken.png", "error": "empty file"},
    ]


def test_jsonl_has_one_object_per_input(results):
    lines = [json.loads(line) for line in format_predictions(results, "jsonl").splitlines()]
    assert lines == [
        {"path": "x/cat one.png", "top": [{"class": "cat", "probability": 0.75}, {"class": "dog", "probability": 0.2}]},
        {"path": "x/broken.png", "error": "empty file"},
    ]


def test_csv_has_a_row_per_rank_and_one_for_the_error(results):
    rows = list(csv.DictReader(io.StringIO(format_predictions(results, "csv"))))
    assert [(row["path"], row["rank"], row["class"], row["error"]) for row in rows] == [
        ("x/cat one.png", "1", "cat", ""), ("x/cat one.png", "2", "dog", ""), ("x/broken.png", "", "", "empty file"),
    ]
    assert float(rows[0]["probability"]) == 0.75


def test_table_aligns_paths_and_shows_errors(results):
    lines = format_predictions(results, "table").splitlines()
    assert lines[0].split() == ["path", "top", "classes"] and len(lines) == 3
    assert lines[1].startswith("x/cat one.png  cat 0.750  dog 0.200")
    assert lines[2] == "x/broken.png   error: empty file"
    assert lines[1].index("cat 0.750") == lines[2].index("error")
    with pytest.raises(DataError, match="table, jsonl, csv.*xml"):
        format_predictions(results, "xml")


def test_a_file_name_with_a_newline_stays_on_its_line_of_the_table(results):
    results = [{**results[0], "path": "x/two\nlines.png"}, results[1]]
    lines = format_predictions(results, "table").splitlines()
    assert len(lines) == 3 and lines[1].startswith("x/two\\nlines.png  cat 0.750")


def test_tta_views_are_the_image_its_four_shifts_and_its_mirror_only_when_asked():
    from resnet_transfer.inference import tta_views

    image = np.zeros((1, 6, 6, 3), "uint8")
    image[0, 3, 3] = 255  # one bright pixel, away from the edges
    views = list(tta_views(image, flip=False, shift=2))
    assert len(views) == 5 and all(view.shape == image.shape for view in views)
    bright = [tuple(np.argwhere(view[0, :, :, 0])[0]) for view in views]
    assert bright == [(3, 3), (3, 5), (3, 1), (5, 3), (1, 3)]  # as is, then moved right, left, down and up by 2
    mirrored = list(tta_views(image, flip=True, shift=2))
    assert len(mirrored) == 6 and tuple(np.argwhere(mirrored[-1][0, :, :, 0])[0]) == (3, 2)


def test_tta_averages_the_models_outputs_over_the_views():
    import keras

    from resnet_transfer.inference import predict_with_tta, tta_views

    inputs = keras.Input((6, 6, 3))  # a model whose output is known: softmax of each row's brightness
    model = keras.Model(inputs, keras.layers.Softmax()(keras.ops.mean(inputs, axis=(2, 3)) / 64))
    images = np.random.default_rng(0).integers(0, 256, (4, 6, 6, 3)).astype("uint8")
    averaged, views = predict_with_tta(model, images, flip=True)
    expected = np.mean([keras.ops.convert_to_numpy(model(view.astype("float32"))) for view in tta_views(images, flip=True)],
                       axis=0)
    assert views == 6
    np.testing.assert_allclose(averaged, expected, rtol=1e-5)
    assert not np.allclose(averaged, keras.ops.convert_to_numpy(model(images.astype("float32"))))
