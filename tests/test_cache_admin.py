"""resnet-transfer cache list|verify|prune: entries with their key and last use, checksums re-checked, what killed
runs left removed, least recently used entries evicted to a size."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from resnet_transfer.cli import main
from resnet_transfer.cache.admin import list_entries, prune
from resnet_transfer.cache.folders import writer_tag
from resnet_transfer.cache.keys import FeatureKey
from resnet_transfer.cache.store import FeatureCache


def _key(images: str) -> FeatureKey:
    return FeatureKey(backbone="resnet50", weights="random:seed=0", preprocess="seed", pooling="avg",
                      input_shape=(32, 32, 3), images=images, dtype="float32", keras_backend="tensorflow")


def _store(cache: FeatureCache, images: str, rows: int) -> str:
    cache.store(_key(images), lambda path: np.save(path, np.ones((rows, 2048), "float32")))
    return cache.entry_path(_key(images))


def _dead_pid() -> int:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    return finished.pid


@pytest.fixture
def cache(tmp_path):
    """Three complete entries used 30, 20 and 10 days ago (the largest the oldest), the chunks of an extraction
    under way and of one killed two days ago, and what killed runs left: a partial entry of a process that is
    gone, one of this (live) process, and a removal cut short; and a folder that is not the cache's."""
    cache = FeatureCache(str(tmp_path / "cache"))
    now = time.time()
    for days, (images, rows) in zip((30, 20, 10), (("a" * 64, 1000), ("b" * 64, 500), ("c" * 64, 100))):
        folder = _store(cache, images, rows)
        os.utime(folder, (now - days * 86400,) * 2)
    host = writer_tag().partition("@")[2]
    for name in (f".{'d' * 32}.partial-{_dead_pid()}@{host}-x1", f".{'e' * 32}.partial-{writer_tag()}-x2",
                 f"{'f' * 32}.discarded-1-2", f".{'1' * 32}.chunks", f".{'2' * 32}.chunks"):
        os.makedirs(tmp_path / "cache" / name)
        np.save(tmp_path / "cache" / name / "features.npy", np.ones((10, 2048), "float32"))
    os.utime(tmp_path / "cache" / f".{'2' * 32}.chunks", (now - 2 * 86400,) * 2)
    for name in ("photos", "ab" * 16):  # not the cache's, even under an entry's kind of name
        (tmp_path / "cache" / name).mkdir()
        (tmp_path / "cache" / name / "a.jpg").write_bytes(b"not the cache's")
    return cache


def test_list_shows_every_entry_with_its_key_and_a_read_marks_it_used(cache, capsys):
    entries = list_entries(cache.directory)
    assert [entry.state for entry in entries] == ["complete"] * 3 + ["chunks"] * 2 + ["partial"] * 2 + ["discarded"]
    assert [entry.key["images"][0] for entry in entries[:3]] == ["a", "b", "c"]  # least recently used first
    assert entries[0].shape == [1000, 2048] and entries[0].size > 1000 * 2048 * 4

    assert cache.load(_key("a" * 64)) is not None  # a run reads the oldest entry...
    assert list_entries(cache.directory)[2].key["images"][0] == "a"  # ...and it is now the most recently used

    assert main(["cache", "list", "--cache-dir", cache.directory]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("8 folders, ") and lines[0].endswith(f"in {cache.directory}")
    assert sum(line.startswith("complete") and "resnet50" in line and "1000x2048" in line for line in lines) == 1


def test_verify_discards_an_entry_whose_features_changed(cache, capsys):
    damaged = cache.entry_path(_key("b" * 64))
    with open(os.path.join(damaged, "features.npy"), "r+b") as handle:
        handle.seek(-4, os.SEEK_END)
        handle.write(b"\x00\x00\x00\x00")
    assert main(["cache", "verify", "--cache-dir", cache.directory]) == 0
    out = capsys.readouterr().out
    assert f"bad  {os.path.basename(damaged)}: its features do not match their recorded SHA-256; discarded" in out
    assert out.count("ok   ") == 2 and out.count("skip ") == 5 and "8 folders in" in out and "1 damaged entries" in out
    assert not os.path.exists(damaged) and cache.load(_key("a" * 64)) is not None


def test_prune_removes_what_killed_runs_left_and_keeps_complete_entries_and_live_extractions(cache):
    removed = prune(cache.directory)
    assert sorted(os.path.basename(entry.path)[:3] for entry in removed) == [".22", ".dd", "fff"]
    left = list_entries(cache.directory)
    assert [entry.state for entry in left] == ["complete"] * 3 + ["chunks", "partial"]
    assert left[-1].writer == os.getpid()  # an entry still being assembled is left alone
    for name in ("photos", "ab" * 16):  # and so is what is not the cache's
        assert os.path.exists(os.path.join(cache.directory, name, "a.jpg"))
    assert os.path.basename(left[-2].path) == f".{'1' * 32}.chunks"  # and so are the chunks of a recent extraction


def test_prune_evicts_entries_unused_for_days_then_the_least_recently_used_to_a_size(cache, capsys):
    assert [entry.key["images"][0] for entry in prune(cache.directory, older_than_days=25) if entry.key] == ["a"]
    sizes = {entry.key["images"][0]: entry.size for entry in list_entries(cache.directory) if entry.key}
    # Room for "c" and the live partial entry, not for "b" too: "b", the less recently used, goes.
    limit = (sizes["c"] + sizes["b"]) / 1e9 * 0.99
    assert main(["cache", "prune", "--cache-dir", cache.directory, "--max-size", str(limit)]) == 0
    assert [entry.key["images"][0] for entry in list_entries(cache.directory) if entry.key] == ["c"]
    assert "1 removed" in capsys.readouterr().out
    prune(cache.directory, older_than_days=0)  # every entry; chunks added to today and the live partial entry stay
    assert [entry.state for entry in list_entries(cache.directory)] == ["chunks", "partial"]


@pytest.mark.parametrize("arguments, message", [
    (["cache", "list", "--max-size", "1"], "--older-than and --max-size go with 'cache prune', not 'cache list'"),
    (["cache", "prune", "--max-size", "-1"], "argument --max-size: expected a finite number >= 0, got '-1'"),
    (["cache", "prune", "--older-than", "soon"], "argument --older-than: expected a number, got 'soon'"),
])
def test_cache_flags_out_of_place_are_one_line_errors(arguments, message, capsys):
    try:
        status = main(arguments)
    except SystemExit as exit:  # argparse's own errors
        status = exit.code
    stderr = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(stderr) == 1 and message in stderr[0]


def test_a_cache_dir_that_is_a_file_is_named(tmp_path, capsys):
    (tmp_path / "file").write_text("not a cache")
    assert main(["cache", "list", "--cache-dir", str(tmp_path / "file")]) == 2
    assert "is a file, not a cache folder" in capsys.readouterr().err
    assert main(["cache", "list", "--cache-dir", str(tmp_path / "nothing")]) == 0
    assert capsys.readouterr().out.strip().endswith("(no such folder: is --cache-dir right?)")


@pytest.mark.parametrize("action", ["prune", "verify"])
def test_prune_or_verify_of_a_cache_dir_that_does_not_exist_is_a_typo_to_name(tmp_path, capsys, action):
    assert main(["cache", action, "--cache-dir", str(tmp_path / "cahce")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "'cache list --cache-dir DIR'" in error[0] and str(tmp_path / "cahce") in error[0]
    assert not os.path.exists(tmp_path / "cahce")


def test_past_conversion_checks_pass_over_entries_that_are_not_records(tmp_path):
    from resnet_transfer.cache.converted import past_checks

    for name, text in (("a", "null"), ("b", "[]"), ("c", "{not json"), ("d", '{"file": "backbone.xml", "check": 3}')):
        (tmp_path / name).mkdir()
        (tmp_path / name / "entry.json").write_text(text)
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "entry.json").write_text(json.dumps({"file": "backbone.xml", "created": 1.0, "check": {
        "passed": True, "cores": 2, "keras_images_per_second": 10.0, "runtime_images_per_second": 12.0}}))
    (tmp_path / "f").mkdir()  # an INT8 backbone's: the same file name, and never one of OpenVINO's checks
    (tmp_path / "f" / "entry.json").write_text(json.dumps({"file": "backbone.xml", "created": 2.0, "key": {
        "converted_for": "openvino-int8"}, "check": {"passed": True, "cores": 2, "keras_images_per_second": 10.0,
                                                    "runtime_images_per_second": 40.0}}))
    assert past_checks(str(tmp_path), "openvino", cores=2) == [{
        "passed": True, "cores": 2, "keras_images_per_second": 10.0, "runtime_images_per_second": 12.0}]
    assert past_checks(str(tmp_path), "openvino-int8", cores=2)[0]["runtime_images_per_second"] == 40.0
    assert past_checks(str(tmp_path), "openvino", cores=4) == [] and past_checks(str(tmp_path / "none"), "onnx", cores=2) == []
