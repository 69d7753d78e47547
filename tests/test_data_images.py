import numpy as np
import pytest
from imagesets import add_broken_files, draw_shape
from PIL import Image

from resnet_transfer.data.arrays import check_images
from resnet_transfer.data.images import ImageReadError, decode_to_store, fit_image, fit_images, image_size_of, read_image


def test_seed_images_are_padded_with_zeros_and_have_three_equal_channels():
    digits = np.random.default_rng(0).integers(1, 256, size=(5, 28, 28), dtype=np.uint8)
    padded = fit_images(check_images(digits, name="x_train"), size=32, resize="pad")
    assert padded.shape == (5, 32, 32, 3) and padded.dtype == np.uint8
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert np.all(padded[:, border] == 0)
    assert np.array_equal(padded[:, 2:30, 2:30, 0], digits)
    assert np.array_equal(padded[..., 0], padded[..., 1]) and np.array_equal(padded[..., 0], padded[..., 2])


@pytest.mark.parametrize("resize", ["pad", "stretch", "crop"])
@pytest.mark.parametrize("shape", [(5, 20, 12, 3), (5, 40, 24, 3), (5, 16, 16, 3)])
def test_fitting_an_array_equals_fitting_each_image(resize, shape):
    images = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    fitted = fit_images(images, size=16, resize=resize)
    expected = np.stack([fit_image(Image.fromarray(image), size=16, resize=resize) for image in images])
    assert fitted.shape == (5, 16, 16, 3) and np.array_equal(fitted, expected)


def test_every_mode_gives_square_rgb_from_any_image():
    rgba = draw_shape("circle", np.random.default_rng(1), (50, 20), "RGBA")
    for mode in ("pad", "stretch", "crop"):
        fitted = fit_image(rgba, size=16, resize=mode)
        assert fitted.shape == (16, 16, 3) and fitted.dtype == np.uint8
    with pytest.raises(ValueError, match="pad, stretch, crop.*squash"):
        fit_image(rgba, size=16, resize="squash")


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    path = str(tmp_path / "deep.png")
    Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(path)
    assert read_image(path, size=8, resize="stretch").min() == 255
    Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)).save(path)
    assert read_image(path, size=8, resize="stretch").max() == 128


def test_broken_files_give_their_reason_and_the_store_keeps_the_readable(tmp_path):
    good = str(tmp_path / "good.png")
    draw_shape("square", np.random.default_rng(2), (30, 20)).save(good)
    broken = add_broken_files(tmp_path)
    reasons = {}
    for name, path in broken.items():
        with pytest.raises(ImageReadError) as caught:
            read_image(path, size=16, resize="pad")
        reasons[name] = caught.value.reason
    assert reasons["empty"] == "empty file" and "truncated" in reasons["truncated"] and "not an image" in reasons["text"]
    assert image_size_of(good) == (30, 20) and image_size_of(broken["text"]) is None
    paths = [broken["empty"], good, broken["text"], good]
    images, kept, skipped = decode_to_store(paths, len(paths), size=16, resize="pad", folder=str(tmp_path))
    assert kept == [1, 3] and images.shape == (2, 16, 16, 3) and [path for path, _ in skipped] == [broken["empty"], broken["text"]]
    assert np.array_equal(images[0], read_image(good, size=16, resize="pad"))


def test_decoding_in_threads_gives_the_arrays_order_and_skips_of_one_thread(tmp_path):
    rng = np.random.default_rng(5)
    paths = []
    for index in range(40):  # more files than the threads keep in flight, of several sizes and formats
        path = str(tmp_path / f"{index:02d}.{'jpg' if index % 2 else 'png'}")
        draw_shape(("circle", "square", "triangle")[index % 3], rng, (int(rng.integers(20, 90)), int(rng.integers(20, 90)))).save(path)
        paths.append(path)
    broken = add_broken_files(tmp_path)
    paths[7:7] = [broken["truncated"]]
    paths[25:25] = [broken["empty"], broken["text"]]
    one = decode_to_store(paths, len(paths), size=24, resize="crop", folder=str(tmp_path), workers=1)
    three = decode_to_store(paths, len(paths), size=24, resize="crop", folder=str(tmp_path), workers=3)
    assert np.array_equal(one[0], three[0]) and one[0].shape == (40, 24, 24, 3)
    assert one[1] == three[1] and one[2] == three[2] and len(one[2]) == 3
