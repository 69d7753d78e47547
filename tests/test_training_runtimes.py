import json
import os
import re

import keras
import numpy as np
import pytest
from conftest import requires_mnist

from resnet_transfer.cli import main
from resnet_transfer.errors import ConfigError
from resnet_transfer.signals import alternate_signal_stack
from resnet_transfer.cache.admin import list_entries, verify_entry
from resnet_transfer.cache.keys import FeatureKey
from resnet_transfer.cache.store import FeatureCache
from resnet_transfer.runtimes import choice as runtime_choice
from resnet_transfer.runtimes import conversion
from resnet_transfer.runtimes.choice import choose_runtime
from resnet_transfer.runtimes.conversion import relative_difference
from resnet_transfer.runtimes.keras_runtime import multiply_adds
from resnet_transfer.training.train import train


@pytest.fixture(scope="module")
def extractor():
    """A small real Keras model standing in for a backbone: fast to convert and to run."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    hidden = keras.layers.Conv2D(8, 3, activation="relu")(keras.layers.Rescaling(1 / 255)(inputs))
    hidden = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(hidden)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(hidden))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, size=(40, 16, 16, 3), dtype=np.uint8)


def make_key(images):
    return FeatureKey.create(backbone="resnet50", weights="random:seed=0", preprocess="seed", pooling="avg",
                             images=images, dtype="float32")


@pytest.mark.parametrize("runtime", ["openvino", "tflite", "onnx"])
def test_a_converted_backbone_gives_kerass_features_within_the_tolerance_and_is_converted_once(
        runtime, extractor, images, tmp_path, capsys):
    cache = FeatureCache(str(tmp_path))
    choice = choose_runtime(runtime, extractor, cache=cache, key=make_key(images), pending=[images], batch_size=16)
    assert choice.runtime == runtime and choice.conversion_seconds > 0 and choice.check["passed"]
    features = choice.runner.predict_chunk(images)  # 40 images in batches of 16: the last one short
    reference = extractor.predict(images.astype("float32"), verbose=0)
    assert features.shape == reference.shape
    assert relative_difference(features, reference) <= conversion.TOLERANCE
    assert not np.array_equal(features, np.zeros_like(features))

    again = choose_runtime(runtime, extractor, cache=cache, key=make_key(images[:10]), pending=[images[:10]])
    assert again.conversion_seconds == 0.0 and "reused from the cache" in again.reason
    entries = list_entries(str(tmp_path))
    assert [entry.state for entry in entries] == ["complete"] and verify_entry(entries[0]) is None
    assert main(["cache", "list", "--cache-dir", str(tmp_path)]) == 0
    assert re.search(rf" {runtime} +converted model ", capsys.readouterr().out)  # its own column, also "openvino"


def test_openvino_leaves_the_main_threads_signal_stack_as_it_found_it(extractor, images, tmp_path):
    # OpenVINO replaces it with a smaller stack of its own; Python's SIGINT handler runs there, and a later
    # Ctrl-C in the same process (the Ctrl-C tests of test_training_resume.py) crashed it.
    def stack():
        current = alternate_signal_stack()
        return current.ss_sp, current.ss_size, current.ss_flags

    before = stack()
    choice = choose_runtime("openvino", extractor, cache=FeatureCache(str(tmp_path)), key=make_key(images),
                            pending=[images])
    choice.runner.predict_chunk(images)
    assert stack() == before


def test_auto_falls_back_to_keras_with_the_reason_when_the_check_fails_and_remembers_the_verdict(
        extractor, images, tmp_path, monkeypatch, caplog):
    cache = FeatureCache(str(tmp_path))
    monkeypatch.setattr(runtime_choice, "worth_converting", lambda extractor, pending, cache: (True, "forced"))
    monkeypatch.setattr(conversion, "TOLERANCE", -1.0)  # no converted model can pass the check
    choice = choose_runtime("auto", extractor, cache=cache, key=make_key(images), pending=[images])
    assert choice.runtime == "keras" and choice.runner is extractor
    assert "differ from Keras's" in choice.reason and choice.conversion_seconds > 0
    assert any("Keras computes the features" in record.getMessage() for record in caplog.records)
    # The verdict is kept: the next run decides without converting again.
    again = choose_runtime("auto", extractor, cache=cache, key=make_key(images), pending=[images])
    assert again.runtime == "keras" and again.conversion_seconds == 0.0
    with pytest.raises(ConfigError, match="--extract-runtime tflite: LiteRT's features differ .* use --extract-runtime keras"):
        choose_runtime("tflite", extractor, cache=cache, key=make_key(images), pending=[images])


def test_a_converter_failure_leaves_auto_on_keras_and_stops_an_explicit_runtime_with_one_line(
        extractor, images, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("'tfl.custom_op' op is neither a custom op nor a flex op\nmore lines of MLIR")

    monkeypatch.setattr(extractor, "export", fail)
    monkeypatch.setattr(runtime_choice, "worth_converting", lambda extractor, pending, cache: (True, "forced"))
    choice = choose_runtime("auto", extractor, cache=FeatureCache(str(tmp_path)), key=make_key(images), pending=[images])
    assert choice.runtime == "keras" and "converting the backbone for OpenVINO failed (RuntimeError:" in choice.reason
    with pytest.raises(ConfigError, match=r"^--extract-runtime onnx: converting .* failed .*flex op\); use "
                                          r"--extract-runtime keras$"):
        choose_runtime("onnx", extractor, cache=FeatureCache(str(tmp_path)), key=make_key(images), pending=[images])
    assert list_entries(str(tmp_path)) == []  # nothing half-made left in the cache


def test_a_runtime_that_cannot_load_the_converted_backbone_leaves_auto_on_keras_and_stops_an_explicit_one(
        extractor, images, tmp_path, monkeypatch):
    class Unloadable:  # what OpenVINO raises on a CPU or file it cannot take
        def __init__(self, *args):
            raise RuntimeError("Exception from src/inference/src/cpp/core.cpp:112:\n"
                               "Exception from src/plugins/intel_cpu/src/plugin.cpp:30:\n[ CPU ] needs SSE4.2\n")

    monkeypatch.setitem(conversion._RUNNERS, "openvino", Unloadable)
    monkeypatch.setattr(runtime_choice, "worth_converting", lambda extractor, pending, cache: (True, "forced"))
    cache = FeatureCache(str(tmp_path))
    choice = choose_runtime("auto", extractor, cache=cache, key=make_key(images), pending=[images])
    assert choice.runtime == "keras" and choice.runner is extractor
    assert "OpenVINO could not load the converted backbone (RuntimeError: [ CPU ] needs SSE4.2)" in choice.reason
    expected = (r"^--extract-runtime openvino: OpenVINO could not load the converted backbone "
                r"\(RuntimeError: \[ CPU \] needs SSE4\.2\); use --extract-runtime keras$")
    with pytest.raises(ConfigError, match=expected):
        choose_runtime("openvino", extractor, cache=cache, key=make_key(images), pending=[images])
    assert list_entries(str(tmp_path)) == []


def test_auto_decides_from_what_was_measured_on_this_machine(extractor, images, tmp_path, monkeypatch):
    # Nothing converted here yet: a pass of 40 images through a small network is measured far below the first try.
    choice = choose_runtime("auto", extractor, cache=FeatureCache(str(tmp_path)), key=make_key(images), pending=[images])
    assert choice.runtime == "keras" and "has not been measured on this machine yet" in choice.reason
    assert choice.conversion_seconds is None and list_entries(str(tmp_path)) == []
    monkeypatch.setattr(runtime_choice, "FIRST_MEASUREMENT_AFTER_SECONDS", 0.0)
    worth, why = runtime_choice.worth_converting(extractor, [images], cache=FeatureCache(str(tmp_path)))
    assert worth and "converting measures it" in why
    # A backbone converted here (by an explicit run) leaves its check: speeds, seconds, parameters and cores.
    cache = FeatureCache(str(tmp_path / "stored"))
    choose_runtime("openvino", extractor, cache=cache, key=make_key(images), pending=[images])
    (entry,) = list_entries(cache.directory)
    record_path = os.path.join(entry.path, "entry.json")
    record = json.load(open(record_path))
    assert record["check"]["parameters"] == extractor.count_params() and record["check"]["cores"] >= 1

    def measured(speedup: float, convert_seconds: float) -> None:  # as if this machine had measured so
        record["check"].update(runtime_images_per_second=record["check"]["keras_images_per_second"] * speedup,
                               convert_seconds=convert_seconds, check_seconds=0.0)
        with open(record_path, "w") as handle:
            json.dump(record, handle)

    measured(2.0, 1.0)
    worth, why = runtime_choice.worth_converting(extractor, [images] * 10**6, cache=cache)  # a pass of 40 M images
    assert worth and "2.00x when last measured here" in why
    worth, why = runtime_choice.worth_converting(extractor, [images], cache=cache)
    assert not worth and "less than converting and checking the backbone take" in why
    measured(0.9, 1.0)
    worth, why = runtime_choice.worth_converting(extractor, [images] * 10**6, cache=cache)
    assert not worth and "ran 0.90x Keras's speed when last measured here" in why
    # The stored backbone's own verdict decides its pass at no cost.
    stored = choose_runtime("auto", extractor, cache=cache, key=make_key(images), pending=[images])
    assert stored.conversion_seconds == 0.0 and "Keras is as fast" in stored.reason
    nothing = choose_runtime("auto", extractor, cache=FeatureCache(str(tmp_path)), key=make_key(images), pending=[])
    assert nothing.runtime == "keras" and "nothing to compute" in nothing.reason


@pytest.mark.slow
@pytest.mark.parametrize("runtime, damaged", [("tflite", "backbone.tflite"), ("openvino", "backbone.bin")])
def test_a_damaged_converted_backbone_is_discarded_and_converted_again(runtime, damaged, extractor, images, tmp_path,
                                                                       caplog):
    cache = FeatureCache(str(tmp_path))
    choose_runtime(runtime, extractor, cache=cache, key=make_key(images), pending=[images])
    (entry,) = list_entries(str(tmp_path))
    with open(os.path.join(entry.path, damaged), "r+b") as handle:  # OpenVINO's weights, beside its backbone.xml
        handle.seek(100)
        handle.write(b"damaged")
    assert "does not match its recorded SHA-256" in verify_entry(entry)
    choice = choose_runtime(runtime, extractor, cache=cache, key=make_key(images), pending=[images])
    assert choice.conversion_seconds > 0 and "discarded and converted again" in caplog.text
    assert verify_entry(list_entries(str(tmp_path))[0]) is None


def test_openvinos_pass_batch_holds_about_256_images_of_32_px_and_the_others_keep_32(extractor):
    def sized(side):
        inputs = keras.Input((side, side, 3))
        return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))

    assert [runtime_choice.pass_batch_size("openvino", sized(side)) for side in (32, 64, 224, 512)] == [256, 64, 8, 8]
    assert runtime_choice.pass_batch_size("openvino", extractor) == 256  # 16 px: no more than 256
    assert runtime_choice.pass_batch_size("tflite", sized(224)) == runtime_choice.pass_batch_size("onnx", sized(32)) == 32


def test_multiply_adds_count_every_convolution_and_dense_layer():
    inputs = keras.Input((8, 8, 3))
    inner = keras.Sequential([keras.Input((6, 6, 4)), keras.layers.Flatten(), keras.layers.Dense(10)])
    model = keras.Model(inputs, inner(keras.layers.Conv2D(4, 3)(inputs)))
    assert multiply_adds(model) == 6 * 6 * (3 * 3 * 3 * 4) + 144 * 10


@requires_mnist
@pytest.mark.slow
def test_a_run_in_a_converted_runtime_records_it_and_learns_what_a_run_in_keras_learns(small_config, tmp_path):
    # The backbone cut after conv2: a small extractor, quick to convert. OpenVINO, auto's runtime; the others'
    # conversion and check are the tests above, and what a run records does not depend on the runtime.
    runtime = "openvino"
    cut = {"model": {"feature_layer": "conv2"}}
    cache_dir = str(tmp_path / "cache")
    converted = train(small_config(tmp_path / runtime, cache_dir=cache_dir, extract_runtime=runtime).updated(cut))
    plain = train(small_config(tmp_path / "keras", cache_dir=cache_dir, extract_runtime="keras").updated(cut))
    assert converted.metrics["extract_runtime"] == runtime and converted.metrics["conversion_seconds"] > 0
    assert plain.metrics["extract_runtime"] == "keras" and plain.metrics["conversion_seconds"] is None
    assert plain.metrics["feature_cache"] == "miss"  # Keras's features are keyed apart from the converted one's
    np.testing.assert_allclose(converted.history["loss"], plain.history["loss"], rtol=1e-4)
    np.testing.assert_allclose(converted.metrics["test_loss"], plain.metrics["test_loss"], rtol=1e-4)
    with open(os.path.join(converted.run_dir, "metrics.json")) as handle:
        assert json.load(handle)["phases"][0]["extract_runtime"] == runtime
    # Other images, the same backbone: the converted one is reused.
    fewer = train(small_config(tmp_path / "fewer", cache_dir=cache_dir, extract_runtime=runtime)
                  .updated({**cut, "data": {"limit": 128, "val_size": 32, "test_limit": 64}}))
    assert fewer.metrics["extract_runtime"] == runtime and fewer.metrics["conversion_seconds"] == 0.0
