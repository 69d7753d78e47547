"""--extract-runtime openvino-int8: the frozen pass in an INT8 backbone calibrated on the run's training
images, its distance from float recorded, its features kept apart from float ones, never chosen by auto."""

import os

import pytest
from conftest import requires_mnist

from resnet_transfer.cache.admin import list_entries
from resnet_transfer.cache.converted import past_checks
from resnet_transfer.runtimes.runner import cores


@pytest.mark.slow
@requires_mnist
def test_an_int8_pass_records_its_distance_from_float_and_auto_never_uses_its_features(small_config, tmp_path):
    from resnet_transfer.training.train import train

    cache = str(tmp_path / "cache")
    int8 = train(small_config(tmp_path / "int8", epochs=1, cache_dir=cache, extract_runtime="openvino-int8"))
    record = int8.metrics["int8_extraction"]
    assert int8.metrics["extract_runtime"] == "openvino-int8" and record["images"] == 64
    assert 0 < record["max_relative_feature_difference"] < 1  # (quantised: not within 1e-5, not unrelated)
    assert 0 <= record["val_accuracy_int8_features"] <= 1 and 0 <= record["val_accuracy_float_features"] <= 1
    runtimes = {(entry.key or {}).get("runtime") for entry in list_entries(cache)} - {None}
    assert len(runtimes) == 1 and next(iter(runtimes)).startswith("openvino-int8:")  # (its calibration's digest)
    assert past_checks(cache, "openvino", cores=cores()) == []  # (no INT8 speed-up feeds auto's estimate)

    again = train(small_config(tmp_path / "again", epochs=1, cache_dir=cache, extract_runtime="openvino-int8"))
    assert again.metrics["feature_cache"] == "hit"
    plain = train(small_config(tmp_path / "auto", epochs=1, cache_dir=cache))  # auto: INT8's features are not its
    assert plain.metrics["feature_cache"] == "miss" and plain.metrics["extract_runtime"] != "openvino-int8"
    assert plain.metrics["int8_extraction"] is None
    assert os.path.isfile(os.path.join(int8.run_dir, "model.keras"))
