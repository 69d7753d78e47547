"""Every error a user can cause: one line on stderr, exit status 2, nothing left behind.

One test (or parametrized case) per class of bad input. Checks that can happen before
training do; the runs that must train share one small class-folder data set and its
feature cache (``trained``), so each later training there is a cache hit.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from imagesets import add_broken_files, draw_shape, write_class_folders
from resnet_transfer.cli import main
from resnet_transfer.config import DataConfig
from resnet_transfer.data.arrays import check_images, check_labels
from resnet_transfer.data.dataset import load_dataset
from resnet_transfer.data.images import fit_image, image_size_of, read_image
from resnet_transfer.data.readers import read_source
from resnet_transfer.errors import DataError
from resnet_transfer.cache.keys import FeatureKey
from resnet_transfer.cache.store import FeatureCache

SMALL = ["--weights", "none", "--backbone", "resnet50", "--image-size", "32", "--epochs", "1"]
MNIST_SMALL = ["--weights", "none", "--backbone", "resnet50", "--limit", "256", "--val-size", "64", "--test-limit", "128"]
LITERAL_CLASS = "$\\foo$"  # matplotlib would read it as math text, and fail on \foo


def cli(capsys, *arguments) -> tuple:
    """Runs ``main`` in this process; returns (exit status, stderr). argparse errors exit too."""
    capsys.readouterr()
    try:
        status = main([str(argument) for argument in arguments])
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


def assert_one_error_line(stderr: str, *fragments) -> str:
    """The rule: exactly one error line, the last one, no traceback; it mentions ``fragments``."""
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("resnet-transfer: error:")]
    assert len(errors) == 1, stderr
    assert lines[-1] == errors[0], stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment.lower() in errors[0].lower(), errors[0]
    return errors[0]


def write_junk_class(folder) -> list:
    """A class folder of files that look like images and are not."""
    os.makedirs(folder, exist_ok=True)
    paths = list(add_broken_files(folder).values())
    for index in range(3):
        path = os.path.join(folder, f"junk{index}.jpg")
        with open(path, "wb") as handle:
            handle.write(b"\xff\xd8 not really a JPEG " * (index + 1))
        paths.append(path)
    return paths


def write_literal_class(root, count: int = 10, seed: int = 1) -> None:
    folder = os.path.join(root, LITERAL_CLASS)
    os.makedirs(folder)
    rng = np.random.default_rng(seed)
    for index in range(count):
        draw_shape("triangle", rng, (36, 28)).save(os.path.join(folder, f"{index:02d}.png"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished run on classes 'circle', '$\\foo$' and an unreadable 'junk', and its cache."""
    root = tmp_path_factory.mktemp("trained")
    data = root / "data"
    write_class_folders(str(data), per_class=(10, 0, 0))
    os.rmdir(data / "square")
    os.rmdir(data / "triangle")
    write_literal_class(str(data))
    write_junk_class(str(data / "junk"))
    cache = root / "cache"
    run_dir = root / "run"
    status = main(["train", "--data", str(data), *SMALL, "--cache-dir", str(cache), "--run-dir", str(run_dir)])
    assert status == 0
    return {"data": data, "cache": cache, "run": run_dir, "root": root}


# 1. Unreadable classes -------------------------------------------------------------------


def test_class_folder_of_unreadable_files_is_dropped_and_listed(tmp_path):
    write_class_folders(str(tmp_path), per_class=(12, 12, 0))
    os.rmdir(tmp_path / "triangle")
    junk_files = write_junk_class(str(tmp_path / "junk"))
    dataset = load_dataset(DataConfig(source=str(tmp_path), image_size=32))
    assert dataset.class_names == ("circle", "square")
    reasons = dict(dataset.skipped)
    assert "dropped" in reasons["junk"]
    skipped_paths = {path for path, _ in dataset.skipped}
    assert {path for path in junk_files if path in skipped_paths}, dataset.skipped
    assert all(label in (0, 1) for label in dataset.y_test)


@pytest.mark.slow
def test_the_dropped_class_is_listed_in_the_runs_skipped_csv(trained):
    with open(trained["run"] / "skipped.csv", encoding="utf-8") as handle:
        text = handle.read()
    assert "junk" in text and "dropped" in text
    with open(trained["run"] / "labels.txt", encoding="utf-8") as handle:
        assert handle.read().split("\n")[:2] == sorted(["circle", LITERAL_CLASS])


def test_one_readable_class_and_one_junk_class_stop_before_anything_is_written(tmp_path, capsys):
    data = tmp_path / "data"
    write_class_folders(str(data), per_class=(12, 0, 0))
    os.rmdir(data / "square")
    os.rmdir(data / "triangle")
    write_junk_class(str(data / "junk"))
    run_dir = tmp_path / "run"
    status, stderr = cli(capsys, "train", "--data", data, *SMALL, "--cache-dir", tmp_path / "cache", "--run-dir", run_dir)
    assert status == 2
    assert_one_error_line(stderr, "at least 2 classes")
    assert not run_dir.exists()


# 2. Arrays (.npz) ---------------------------------------------------------------------


def _npz(tmp_path, **arrays) -> str:
    path = str(tmp_path / "data.npz")
    np.savez(path, **arrays)
    return path


def _images(count: int, dtype="uint8", shape=(32, 32, 3)):
    return (np.random.default_rng(0).random((count, *shape)) * 200).astype(dtype)


@pytest.mark.parametrize(
    "arrays, fragment",
    [
        pytest.param({"x_train": _images(10), "y_train": np.arange(8) % 2}, "8 labels for 10 images", id="more-images-than-labels"),
        pytest.param({"x_train": _images(10).reshape(10, -1), "y_train": np.arange(10) % 2}, "reshape", id="flat-rows"),
        pytest.param({"x_train": np.moveaxis(_images(10), -1, 1), "y_train": np.arange(10) % 2}, "np.moveaxis", id="channels-first"),
        pytest.param({"x_train": _images(10), "y_train": np.arange(10) % 2 + 0.5}, "whole-number", id="non-integer-labels"),
    ],
)
def test_npz_arrays_that_are_not_images_and_labels_are_refused(tmp_path, arrays, fragment):
    with pytest.raises(DataError, match="x_train|y_train") as raised:
        read_source(DataConfig(source=_npz(tmp_path, **arrays)), skipped=[])
    assert fragment.lower() in str(raised.value).lower()
    assert "\n" not in str(raised.value)


def test_one_nan_pixel_in_float_images_is_refused(tmp_path):
    images = _images(6, dtype="float32") / 255.0
    images[3, 4, 5, 1] = np.nan
    with pytest.raises(DataError, match=r"non-finite.*\(3, 4, 5, 1\)"):
        read_source(DataConfig(source=_npz(tmp_path, x_train=images, y_train=np.arange(6) % 2)), skipped=[])


def test_float_images_in_0_1_are_scaled_by_one_rule_for_the_whole_array():
    images = np.zeros((2, 4, 4), dtype="float32")
    images[0, 0, 0], images[0, 1, 1] = 0.5, 0.25  # this image's brightest pixel is 0.5
    images[1, 0, 0], images[1, 1, 1] = 1.0, 0.5
    checked = check_images(images, name="x_train")
    assert checked.shape == (2, 4, 4, 3)
    assert checked[0, 0, 0, 0] == checked[1, 1, 1, 0] == 128  # 0.5 -> 128 in both images
    assert checked[1, 0, 0, 0] == 255 and checked[0, 1, 1, 0] == 64


def test_one_hot_labels_are_converted_to_class_indices(tmp_path):
    labels = np.eye(3, dtype="float32")[[2, 0, 1, 1, 0, 2]]
    assert check_labels(labels, name="y_train", count=6).tolist() == [2, 0, 1, 1, 0, 2]
    raw = read_source(DataConfig(source=_npz(tmp_path, x_train=_images(6), y_train=labels)), skipped=[])
    assert raw.splits["train"].labels == ["2", "0", "1", "1", "0", "2"]


# 3. Images as a viewer shows them ---------------------------------------------------------


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    values = np.full((8, 8), 65535, dtype=np.uint16)
    values[:, 4:] = 32768
    path = str(tmp_path / "grey16.png")
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    pixels = read_image(path, size=8, resize="stretch")
    assert pixels[0, 0].tolist() == [255, 255, 255]
    assert abs(int(pixels[0, 7, 0]) - 128) <= 1


def test_exif_orientation_is_applied(tmp_path):
    stored = Image.new("RGB", (40, 20), (0, 0, 0))
    stored.paste((255, 0, 0), (0, 0, 10, 20))  # a red band on the left of the stored pixels
    path = str(tmp_path / "rotated.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    stored.save(path, exif=exif, quality=95)
    assert image_size_of(path) == (20, 40)
    with Image.open(path) as image:
        shown = fit_image(image.transpose(Image.Transpose.ROTATE_270), size=32, resize="stretch")
        as_stored = fit_image(image, size=32, resize="stretch")
    decoded = read_image(path, size=32, resize="stretch")
    assert np.array_equal(decoded, shown)
    assert not np.array_equal(decoded, as_stored)
    assert decoded[0, 16, 0] > 200 and decoded[31, 16, 0] < 60  # the band is now at the top


@pytest.fixture
def low_pixel_limit(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)
    return 4000


@pytest.mark.parametrize("side", [70, 100], ids=["over-the-limit", "over-twice-the-limit"])
def test_image_over_pillows_limit_is_skipped_by_train_data_loading(tmp_path, low_pixel_limit, side):
    write_class_folders(str(tmp_path), per_class=(12, 12, 0))  # 50x64 at most: under the limit
    os.rmdir(tmp_path / "triangle")
    big = str(tmp_path / "circle" / "big.png")
    draw_shape("circle", np.random.default_rng(3), (side, side)).save(big)  # 4900 or 10000 pixels
    dataset = load_dataset(DataConfig(source=str(tmp_path), image_size=32))
    reasons = dict(dataset.skipped)
    assert list(reasons) == [big], dataset.skipped
    assert "limit" in reasons[big] and str(low_pixel_limit) in reasons[big]


@pytest.mark.slow
def test_image_over_pillows_limit_is_an_error_row_of_predict(trained, tmp_path, monkeypatch):
    from resnet_transfer.prediction import predict

    big = str(tmp_path / "big.png")
    small = str(tmp_path / "small.png")
    draw_shape("circle", np.random.default_rng(3), (80, 80)).save(big)
    draw_shape("circle", np.random.default_rng(4), (20, 20)).save(small)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)
    rows = predict(str(trained["run"]), [big, small], top_k=1)
    assert rows[0]["path"] == big and "limit" in rows[0]["error"]
    assert rows[1]["path"] == small and "error" not in rows[1]


# 4. CSV -------------------------------------------------------------------------------


def _csv_data(tmp_path) -> list:
    paths = write_class_folders(str(tmp_path / "images"), per_class=(3, 3, 0))
    return [os.path.relpath(path, tmp_path) for path in paths]


def test_csv_with_a_byte_order_mark_is_read(tmp_path):
    files = _csv_data(tmp_path)
    path = tmp_path / "labels.csv"
    path.write_text("path,label\n" + "".join(f"{name},{name.split(os.sep)[1]}\n" for name in files), encoding="utf-8-sig")
    raw = read_source(DataConfig(source=str(path)), skipped=[])
    assert sorted(set(raw.splits["train"].labels)) == ["circle", "square"]
    assert len(raw.splits["train"]) == len(files)


def test_cp1252_csv_needs_encoding_and_reads_with_it(tmp_path):
    files = _csv_data(tmp_path)
    path = tmp_path / "labels.csv"
    labels = ["café" if "circle" in name else "square" for name in files]
    path.write_bytes(("path,label\n" + "".join(f"{n},{l}\n" for n, l in zip(files, labels))).encode("cp1252"))
    with pytest.raises(DataError, match="--encoding"):
        read_source(DataConfig(source=str(path)), skipped=[])
    raw = read_source(DataConfig(source=str(path), encoding="cp1252"), skipped=[])
    assert sorted(set(raw.splits["train"].labels)) == ["café", "square"]


def test_csv_rows_without_a_label_or_too_short_are_skipped_and_listed(tmp_path):
    files = _csv_data(tmp_path)
    path = tmp_path / "labels.csv"
    rows = [f"{name},{name.split(os.sep)[1]}" for name in files] + [f"{files[0]},", files[1], ",circle"]
    path.write_text("path,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    skipped = []
    raw = read_source(DataConfig(source=str(path)), skipped=skipped)
    assert len(raw.splits["train"]) == len(files)
    where = {location: reason for location, reason in skipped}
    first_extra = len(files) + 2  # CSV line numbers count the header as line 1
    assert set(where) == {f"{path}:{line}" for line in range(first_extra, first_extra + 3)}, skipped
    assert "class name" in where[f"{path}:{first_extra}"] and "class name" in where[f"{path}:{first_extra + 1}"]
    assert "'path'" in where[f"{path}:{first_extra + 2}"]


# 5. Values checked where they are parsed --------------------------------------------------


def _config_file(tmp_path, content: bytes) -> str:
    path = tmp_path / "config.json"
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize(
    "flags, fragment",
    [
        pytest.param(["--image-size", "16"], "image_size", id="image-size-16"),
        pytest.param(["--learning-rate", "inf"], "learning_rate", id="learning-rate-inf"),
        pytest.param(["--learning-rate", "nan"], "learning_rate", id="learning-rate-nan"),
        pytest.param(["--config", b'{"train": [1, 2]}'], "'train'", id="train-section-a-list"),
        pytest.param(["--head", "linear", "--head-units", "64"], "--head-units changes nothing here", id="units-of-linear"),
        pytest.param(["--dropout", "0.5"], "only the mlp head has dropout", id="dropout-of-seed-head"),
        pytest.param(["--fine-tune-lr", "1e-4"], "--fine-tune-lr changes nothing here", id="fine-tune-lr-alone"),
        pytest.param(["--unfreeze", "conv5"], "add --fine-tune-epochs N", id="unfreeze-alone"),
        pytest.param(["--no-cache", "--extract-runtime", "openvino"], "leave out --no-cache", id="runtime-no-cache"),
        pytest.param(["--bn-images", "100"], "add --bn-recalibrate", id="bn-images-alone"),
        pytest.param(["--train-bn"], "add --fine-tune-epochs N, or leave out --train-bn", id="train-bn-alone"),
        pytest.param(["--no-cache", "--cache-dtype", "float16"], "leave out --no-cache", id="cache-dtype-no-cache"),
        pytest.param(["--augment-phase", "both"], "add --augment light", id="augment-phase-alone"),
        pytest.param(["--config", '{"train": {"epochs": 1}, "run_dir": "caf\xe9"}'.encode("cp1252")], "UTF-8",
                     id="config-not-utf8"),
    ],
)
def test_bad_values_exit_2_with_one_line_before_any_run_folder(tmp_path, capsys, flags, fragment):
    if flags[0] == "--config":
        flags = ["--config", _config_file(tmp_path, flags[1])]
    run_dir = tmp_path / "run"
    status, stderr = cli(capsys, "train", *flags, *MNIST_SMALL, "--cache-dir", tmp_path / "cache", "--run-dir", run_dir)
    assert status == 2
    assert_one_error_line(stderr, fragment)
    assert not run_dir.exists()


@pytest.mark.slow
def test_zero_epochs_evaluates_the_untrained_head(trained, tmp_path, capsys):
    run_dir = tmp_path / "run"
    status, stderr = cli(capsys, "train", "--data", trained["data"], *SMALL, "--epochs", "0",
                         "--cache-dir", trained["cache"], "--run-dir", run_dir)
    assert status == 0, stderr
    with open(run_dir / "history.csv", encoding="utf-8") as handle:
        assert handle.read().strip().splitlines() == ["epoch,phase,loss,accuracy,val_loss,val_accuracy,seconds"]

    def refuse(constant):
        raise AssertionError(f"metrics.json is not strict JSON: {constant}")

    with open(run_dir / "metrics.json", encoding="utf-8") as handle:
        metrics = json.loads(handle.read(), parse_constant=refuse)
    assert metrics["epochs"] == 0 and 0.0 <= metrics["test_accuracy"] <= 1.0
    with open(run_dir / "status.json", encoding="utf-8") as handle:
        assert json.load(handle)["state"] == "finished"


# 6. Class names shown literally ------------------------------------------------------------


@pytest.mark.slow
def test_a_class_named_like_math_text_trains_to_the_end_with_its_report(trained):
    for name in ("confusion_matrix.png", "misclassified.png", "report.html", "model.keras", "metrics.json"):
        assert (trained["run"] / name).is_file(), name
    with open(trained["run"] / "report.html", encoding="utf-8") as handle:
        assert LITERAL_CLASS in handle.read()
    with open(trained["run"] / "status.json", encoding="utf-8") as handle:
        assert json.load(handle)["state"] == "finished"


# 7. Nothing left behind ------------------------------------------------------------------


def _garbage_weights(tmp_path) -> str:
    path = tmp_path / "garbage.weights.h5"
    path.write_bytes(b"this is not an HDF5 file" * 100)
    return str(path)


@pytest.mark.slow
def test_garbage_weights_file_leaves_nothing_and_the_same_command_runs_after(trained, tmp_path, capsys):
    run_dir = tmp_path / "run"
    common = ["train", "--data", trained["data"], *SMALL, "--cache-dir", trained["cache"], "--run-dir", run_dir]
    status, stderr = cli(capsys, *common, "--weights", _garbage_weights(tmp_path))
    assert status == 2
    assert_one_error_line(stderr, "garbage.weights.h5")
    assert not run_dir.exists()
    status, stderr = cli(capsys, *common)  # SMALL's --weights none
    assert status == 0, stderr
    assert (run_dir / "model.keras").is_file()


def _blocked_by_a_file(tmp_path, what: str) -> str:
    """A path that cannot be a folder: an existing file, or a path through one."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return str(blocker) if what == "file" else str(blocker / "sub")


def _read_only_cache(tmp_path) -> str:
    if os.geteuid() == 0:  # root writes through chmod 0o555: go through a file instead
        return _blocked_by_a_file(tmp_path, "below")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return str(folder / "cache")


@pytest.mark.parametrize(
    "flag, make, fragment",
    [
        pytest.param("--cache-dir", lambda tmp: _blocked_by_a_file(tmp, "file"), "cache_dir", id="cache-dir-is-a-file"),
        pytest.param("--cache-dir", _read_only_cache, "cache_dir", id="cache-dir-not-writable"),
        pytest.param("--run-dir", lambda tmp: _blocked_by_a_file(tmp, "below"), "run directory", id="run-dir-under-a-file"),
    ],
)
def test_unusable_folders_exit_2_and_leave_no_run_folder(tmp_path, capsys, flag, make, fragment):
    data = tmp_path / "data"
    write_class_folders(str(data), per_class=(6, 6, 0))
    os.rmdir(data / "triangle")
    paths = {"--cache-dir": str(tmp_path / "cache"), "--run-dir": str(tmp_path / "run"), flag: make(tmp_path)}
    try:
        status, stderr = cli(capsys, "train", "--data", data, *SMALL, *[item for pair in paths.items() for item in pair])
    finally:
        if (tmp_path / "read-only").exists():
            (tmp_path / "read-only").chmod(0o755)
    assert status == 2
    assert_one_error_line(stderr, fragment)
    assert not (tmp_path / "run").exists()
    assert not os.path.isdir(paths["--run-dir"])


# 8. Feature cache ---------------------------------------------------------------------------


def _key(seed: int = 0) -> FeatureKey:
    images = np.random.default_rng(seed).integers(0, 255, (4, 8, 8, 3), dtype=np.uint8)
    return FeatureKey.create(backbone="resnet50", weights="random:seed=0", preprocess="seed", pooling="flatten", images=images, dtype="float32")


def _writer(values: np.ndarray):
    return lambda path: np.save(path, values)


def test_cache_entry_json_that_is_not_an_object_is_a_miss_and_storing_again_works(tmp_path):
    cache, key = FeatureCache(str(tmp_path)), _key()
    values = np.arange(8, dtype="float32").reshape(4, 2)
    cache.store(key, _writer(values))
    with open(os.path.join(cache.entry_path(key), "entry.json"), "w", encoding="utf-8") as handle:
        json.dump([1, 2, 3], handle)
    with pytest.warns(UserWarning, match="not a JSON object"):
        assert cache.load(key) is None
    assert np.array_equal(cache.store(key, _writer(values + 1)), values + 1)
    assert np.array_equal(cache.load(key), values + 1)


def test_two_stores_of_one_key_keep_one_complete_entry(tmp_path):
    key = _key(1)
    first, second = FeatureCache(str(tmp_path)), FeatureCache(str(tmp_path))
    values = np.arange(8, dtype="float32").reshape(4, 2)

    def write_after_another_store(path):
        second.store(key, _writer(values))  # the other run finishes first
        np.save(path, values)

    features = first.store(key, write_after_another_store)
    assert np.array_equal(features, values)
    assert np.array_equal(second.load(key), values)
    assert sorted(os.listdir(tmp_path)) == [key.digest]  # no partial folder left


# 9. Fingerprints ---------------------------------------------------------------------------


@pytest.fixture
def changed_data(trained):
    added = trained["data"] / "circle" / "added.png"
    draw_shape("circle", np.random.default_rng(7), (40, 30)).save(added)
    yield added
    added.unlink()


@pytest.mark.slow
def test_evaluate_and_export_refuse_changed_data_unless_allowed(trained, changed_data, capsys):
    run_dir = trained["run"]
    status, stderr = cli(capsys, "evaluate", run_dir)
    assert status == 2
    assert_one_error_line(stderr, "--allow-changed-data", str(trained["data"]))
    status, stderr = cli(capsys, "export", run_dir, "--format", "savedmodel")
    assert status == 2
    assert_one_error_line(stderr, "--allow-changed-data")
    assert not (run_dir / "export").exists() or not os.listdir(run_dir / "export")
    status, stderr = cli(capsys, "evaluate", run_dir, "--allow-changed-data")
    assert status == 0, stderr


# 10. Damaged run artifacts -------------------------------------------------------------------


@pytest.mark.slow
def test_truncated_model_is_one_line_from_evaluate(trained, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(trained["run"], copy)
    model = copy / "model.keras"
    with open(model, "r+b") as handle:
        handle.truncate(os.path.getsize(model) // 3)
    status, stderr = cli(capsys, "evaluate", copy)
    assert status == 2
    assert_one_error_line(stderr, "model.keras", "damaged")


@pytest.mark.slow
def test_export_into_an_existing_file_exits_2(trained, tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("keep me")
    status, stderr = cli(capsys, "export", trained["run"], "--format", "savedmodel", "--output", target)
    assert status == 2
    assert_one_error_line(stderr, str(target))
    assert target.read_text() == "keep me"


# 11. Ctrl-C ------------------------------------------------------------------------------------


def _read_lines(stream, lines: list) -> None:
    for line in iter(stream.readline, ""):
        lines.append(line.rstrip("\n"))


def _sigint_as_in_a_terminal() -> None:
    """A process started in the background of a shell script inherits SIGINT ignored, and
    Python then leaves it so (as it should); these tests play a terminal's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def ctrl_c_raises():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.slow
def test_ctrl_c_exits_2_with_one_line_and_leaves_nothing_that_blocks_a_rerun(tmp_path):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    arguments = ["train", *MNIST_SMALL, "--epochs", "50", "--run-dir", str(run_dir), "--cache-dir", str(cache)]
    process = subprocess.Popen(
        [sys.executable, "-m", "resnet_transfer.cli", *arguments],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=_sigint_as_in_a_terminal,
    )
    lines: list = []
    reader = threading.Thread(target=_read_lines, args=(process.stderr, lines), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while not any("run directory:" in line or "Epoch 1/" in line for line in lines):
        assert process.poll() is None, "\n".join(lines)
        assert time.monotonic() < deadline, "the run did not start within 2 minutes"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    status = process.wait(timeout=60)
    reader.join(timeout=10)
    process.stderr.close()
    stderr = "\n".join(lines)
    assert status == 2, stderr
    assert lines[-1].startswith("resnet-transfer: error: interrupted"), stderr
    assert "Traceback" not in stderr
    # Nothing blocks the same command: no folder (no epoch had finished), or one marked failed.
    if run_dir.exists():
        with open(run_dir / "status.json", encoding="utf-8") as handle:
            assert json.load(handle)["state"] == "failed"


class _InterruptSwallowedByNativeCode:
    """A Keras callback that gets Ctrl-C and lets a ``TypeError`` out instead, as TensorFlow's
    C++ code does when the KeyboardInterrupt arrives inside one of its Python callbacks."""

    def __new__(cls):
        import keras

        class Callback(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(5)
                except KeyboardInterrupt:
                    raise TypeError() from None

        return Callback()


@pytest.mark.slow
def test_ctrl_c_turned_into_another_error_by_native_code_still_ends_as_an_interrupt(trained, tmp_path, ctrl_c_raises):
    from resnet_transfer.config import RunConfig
    from resnet_transfer.training.train import train

    config = RunConfig.from_dict({
        "data": {"source": str(trained["data"]), "image_size": 32},
        "model": {"backbone": "resnet50", "weights": "none"},
        "train": {"epochs": 1, "cache_dir": str(trained["cache"])},
        "run_dir": str(tmp_path / "run"),
    })
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[_InterruptSwallowedByNativeCode()])
    assert not (tmp_path / "run").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# 12. --debug ------------------------------------------------------------------------------------


def test_debug_shows_the_traceback_that_the_default_hides(tmp_path, capsys):
    arguments = ["train", *MNIST_SMALL, "--weights", _garbage_weights(tmp_path), "--cache-dir", tmp_path / "cache",
                 "--run-dir", tmp_path / "run"]
    status, stderr = cli(capsys, *arguments)
    assert status == 2
    assert_one_error_line(stderr, "--debug")
    status, stderr = cli(capsys, "--debug", *arguments)
    assert status == 2
    assert "Traceback" in stderr
    assert stderr.strip().splitlines()[-1].startswith("resnet-transfer: error:")
    assert not (tmp_path / "run").exists()


# Round three: hand-edited run folders, predict with nothing to predict, resumed runs whose weights changed ------


def _edited_run(trained, tmp_path, edit) -> str:
    copy = tmp_path / "run"
    shutil.copytree(trained["run"], copy, ignore=shutil.ignore_patterns("model.keras"))
    os.symlink(os.path.join(trained["run"], "model.keras"), copy / "model.keras")  # (read only: not copied each time)
    record = json.loads((copy / "config.json").read_text())
    edit(record)
    (copy / "config.json").write_text(json.dumps(record))
    return str(copy)


@pytest.mark.parametrize("edit, fragments", [
    (lambda record: record.update(class_names=record["class_names"][:1]), ["names 1 classes", "2 outputs"]),
    (lambda record: record.update(class_names=[0, 1]), ["class_names=[0, 1]", "class names (text)"]),
    (lambda record: record["data_source"].update(image_size="32px"), ["image_size='32px'", "whole number"]),
    (lambda record: record["data_source"].update(image_size=64), ["image_size=64", "takes 32x32 images"]),
    (lambda record: record["data_source"].update(resize="squash"), ["resize='squash'", "pad, stretch, crop"]),
    (lambda record: record.update(class_names=record["class_names"][::-1]), ["labels.txt", "in the order"]),
    (lambda record: record.update(config={}), ["config.data=None"]),
    (lambda record: record.update(image_shape=[]), ["image_shape=[]"]),
])
@pytest.mark.parametrize("verb", ["evaluate", "predict", "export"])
def test_a_hand_edited_config_that_does_not_fit_the_model_is_refused_before_anything_is_computed(
        trained, tmp_path, capsys, edit, fragments, verb):
    run = _edited_run(trained, tmp_path, edit)
    before = {name: os.path.getmtime(os.path.join(run, name)) for name in os.listdir(run)}
    arguments = {"evaluate": [run], "predict": [run, trained["data"] / "circle"],
                 "export": [run, "--format", "savedmodel"]}[verb]
    status, stderr = cli(capsys, verb, *arguments)
    assert status == 2
    assert_one_error_line(stderr, "config.json", "edited", *fragments)
    assert {name: os.path.getmtime(os.path.join(run, name)) for name in os.listdir(run)} == before  # nothing written


def test_predict_with_nothing_to_predict_exits_2_and_says_so(trained, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    status, stderr = cli(capsys, "predict", trained["run"], empty, "--top-k", "1")
    assert status == 2
    assert_one_error_line(stderr, "no images found", str(empty), "no files there")
    (empty / "notes.txt").write_text("not an image")
    status, stderr = cli(capsys, "predict", trained["run"], empty, "--top-k", "1")
    assert status == 2
    assert_one_error_line(stderr, "no images found", "1 file(s), none readable", "notes.txt")
    shutil.copy(next((trained["data"] / "circle").iterdir()), empty / "circle.png")  # one good, one bad: a table
    status, _ = cli(capsys, "predict", trained["run"], empty, "--top-k", "1")
    assert status == 0


def test_resume_refuses_weights_replaced_since_the_run_started_naming_both(tmp_path):
    from resnet_transfer.config import RunConfig
    from resnet_transfer.errors import WeightsError
    from resnet_transfer.model.weights import weights_identity
    from resnet_transfer.training.setup import config_values
    from resnet_transfer.training.train import train

    weights = tmp_path / "backbone.weights.h5"
    weights.write_bytes(b"the file the run started from")
    run_dir = tmp_path / "run"
    config = RunConfig.from_dict({"model": {"backbone": "resnet50", "weights": str(weights)}, "run_dir": str(run_dir)})
    started_from = weights_identity("resnet50", str(weights), 0)
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({
        "config": config_values(config, str(run_dir)), "seed": 0, "class_names": ["a", "b"],
        "image_shape": [32, 32, 3], "data_source": {}, "weights": {"identity": started_from}}))
    (run_dir / "status.json").write_text('{"state": "failed"}')
    weights.write_bytes(b"another file at the same path")
    with pytest.raises(WeightsError, match="not those the run") as refused:
        train(config, resume=True)
    assert started_from in str(refused.value) and weights_identity("resnet50", str(weights), 0) in str(refused.value)
    assert json.loads((run_dir / "status.json").read_text()) == {"state": "failed"}


def test_a_full_disk_after_finished_epochs_keeps_the_run_and_says_how_to_resume(trained, tmp_path, capsys, monkeypatch):
    import errno

    from resnet_transfer.runs import Run

    run_dir = tmp_path / "run"

    def full_disk(self, model):
        raise OSError(errno.ENOSPC, "No space left on device", str(run_dir / "model.keras"))

    monkeypatch.setattr(Run, "save_model", full_disk)
    status, stderr = cli(capsys, "train", "--data", trained["data"], *SMALL, "--cache-dir", trained["cache"],
                         "--run-dir", run_dir)
    assert status == 2
    assert_one_error_line(stderr, "No space left on device", "free some space", "kept after 1 finished epochs",
                          f"--run-dir {run_dir} --resume")
    assert json.loads((run_dir / "status.json").read_text())["state"] == "failed"


def test_a_read_only_file_system_is_not_told_to_free_space():
    import errno

    from resnet_transfer.cli import _disk_problem

    assert _disk_problem(OSError(errno.EROFS, "Read-only file system", "/mnt/ro/x")) == (
        "Read-only file system (/mnt/ro/x): choose a folder you can write to (or make this one writable)")
    assert "free some space" in _disk_problem(OSError(errno.ENOSPC, "No space left on device"))


def test_evaluate_that_cannot_write_its_report_says_the_metrics_and_writes_it_elsewhere(trained, tmp_path, capsys,
                                                                                        monkeypatch):
    import errno

    import resnet_transfer.evaluation as evaluation

    real = evaluation.write_report

    def read_only(folder, **values):
        if str(folder) == str(trained["run"]):
            raise OSError(errno.EROFS, "Read-only file system", os.path.join(folder, "report.html"))
        return real(folder, **values)

    monkeypatch.setattr(evaluation, "write_report", read_only)
    status, stderr = cli(capsys, "evaluate", trained["run"])
    assert status == 2
    assert_one_error_line(stderr, "the test metrics are {\"test_loss\"", "Read-only file system", "--output DIR")
    status, _ = cli(capsys, "evaluate", trained["run"], "--output", tmp_path / "report")
    assert status == 0 and (tmp_path / "report" / "report.html").is_file()


@pytest.mark.slow
def test_sigterm_after_a_finished_epoch_ends_with_one_line_a_failed_status_and_the_resume_command(tmp_path):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    arguments = ["train", *MNIST_SMALL, "--epochs", "50", "--run-dir", str(run_dir), "--cache-dir", str(cache)]
    process = subprocess.Popen([sys.executable, "-m", "resnet_transfer.cli", *arguments], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list = []
    reader = threading.Thread(target=_read_lines, args=(process.stderr, lines), daemon=True)
    reader.start()
    deadline = time.monotonic() + 180
    while not (run_dir / "history.csv").exists():  # (written once an epoch's checkpoint is)
        assert process.poll() is None, "\n".join(lines)
        assert time.monotonic() < deadline, "no epoch finished within 3 minutes"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)  # what Slurm and Kubernetes send
    status = process.wait(timeout=60)
    reader.join(timeout=10)
    process.stderr.close()
    stderr = "\n".join(lines)
    assert status == 2 and "Traceback" not in stderr, stderr
    assert lines[-1].startswith("resnet-transfer: error: interrupted (SIGTERM) after"), stderr
    assert "--resume" in lines[-1]
    state = json.loads((run_dir / "status.json").read_text())
    assert state["state"] == "failed" and "SIGTERM" in json.dumps(state)


def test_evaluate_never_writes_its_report_over_another_folders_files(trained, tmp_path, capsys):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "report.html").write_text("another run's report")
    status, stderr = cli(capsys, "evaluate", trained["run"], "--output", tmp_path / "other")
    assert status == 2
    assert_one_error_line(stderr, "holds files", "never written over others")
    assert (tmp_path / "other" / "report.html").read_text() == "another run's report"


@pytest.mark.parametrize("arguments, fragments", [
    (["cache", "prune", "--cache-dir", ""], ["--cache-dir must name a folder"]),
    (["probe", "--bn-images", "100"], ["--bn-images changes nothing", "add --bn-recalibrate"]),
    (["evaluate", "runs/x", "--output", ""], ["--output must name a folder"]),
    (["train", "--head", "linear", "--head-units", "64", "--resume", "--run-dir", "no/such/run"],
     ["--resume: 'no/such/run' holds no run"]),  # a resumed run keeps what it recorded: no rule on its flags
    (["train", "--run-eagerly", "--jit-compile", "on"], ["--jit-compile changes nothing", "leave out --run-eagerly"]),
    (["train", "--bn-recalibrate", "--bn-images", "1"], ["bn_images must be an integer >= 16"]),
])
def test_settings_that_change_nothing_or_cannot_work_are_refused_at_once(tmp_path, capsys, arguments, fragments):
    status, stderr = cli(capsys, *arguments)
    assert status == 2
    assert_one_error_line(stderr, *fragments)


def test_sigterm_is_watched_even_where_sigint_is_ignored():
    from resnet_transfer.errors import Terminated
    from resnet_transfer.signals import watching_interrupts

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job of a script (sbatch's srun &)
    try:
        with watching_interrupts() as interrupts:
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            with pytest.raises(Terminated):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            assert interrupts.signal_name == "SIGTERM"
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, previous)
