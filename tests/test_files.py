import hashlib
import json
import math
import os
import pathlib

import pytest

from resnet_transfer.files import (
    atomic_path,
    first_line,
    hash_file,
    json_safe,
    make_temporary_folder,
    reserve_space,
    write_json_atomic,
    write_text_atomic,
)


def test_hash_file_matches_hashlib_across_chunks(tmp_path):
    path = tmp_path / "data.bin"
    content = os.urandom((1 << 22) + 123)  # more than one read chunk
    path.write_bytes(content)
    assert hash_file(str(path)) == hashlib.sha256(content).hexdigest()
    assert hash_file(str(path), "md5") == hashlib.md5(content).hexdigest()


def test_atomic_path_keeps_the_extension_and_renames_on_success(tmp_path):
    target = tmp_path / "model.keras"
    with atomic_path(str(target)) as temporary:
        assert temporary.endswith(".keras") and os.path.dirname(temporary) == str(tmp_path)
        assert not target.exists()
        with open(temporary, "w") as handle:
            handle.write("complete")
    assert target.read_text() == "complete" and os.listdir(tmp_path) == ["model.keras"]


def test_atomic_path_leaves_nothing_on_an_exception_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "metrics.json"
    with pytest.raises(RuntimeError):
        with atomic_path(str(target)) as temporary:
            with open(temporary, "w") as handle:
                handle.write("half")
            raise RuntimeError("killed mid-write")
    assert os.listdir(tmp_path) == []
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(str(target)) as temporary:
            open(temporary, "w").close()
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["metrics.json"] and target.read_text() == "old"


def test_json_is_strict_with_non_finite_numbers_as_null(tmp_path):
    path = tmp_path / "metrics.json"
    write_json_atomic(str(path), {"loss": math.nan, "rates": [1.5, math.inf, -math.inf], "nested": {"value": (math.nan, 2)}})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    assert json.loads(text, parse_constant=refuse) == {"loss": None, "rates": [1.5, None, None], "nested": {"value": [None, 2]}}
    assert json_safe({"keep": 1.0, "text": "nan"}) == {"keep": 1.0, "text": "nan"}


def test_text_is_written_as_utf8_and_first_line_falls_back_to_the_type(tmp_path):
    write_text_atomic(str(tmp_path / "labels.txt"), "caf\u00e9\n")
    assert (tmp_path / "labels.txt").read_bytes() == "caf\u00e9\n".encode("utf-8")
    assert first_line(ValueError("first\nsecond")) == "first" and first_line(KeyError()) == "KeyError"


def test_reserve_space_allocates_a_sparse_files_blocks(tmp_path):
    # A new memory map's file is sparse: its blocks are only found when written, and on a
    # full disk a memory-mapped write is a SIGBUS. Reserved up front, a full disk is an OSError.
    path = tmp_path / "sparse.npy"
    with open(path, "wb") as handle:
        handle.truncate(1 << 20)
    reserve_space(str(path))
    assert os.stat(path).st_blocks * 512 >= 1 << 20
    with pytest.raises(OSError) as caught:
        reserve_space(str(tmp_path / "missing.npy"))
    assert "missing.npy" in str(caught.value)


def test_temporary_folders_and_atomic_files_get_the_modes_the_umask_gives(tmp_path):
    previous = os.umask(0o022)  # a shared machine's usual mask: others may read
    try:
        folder = make_temporary_folder(str(tmp_path), prefix=".entry.partial-")
        with atomic_path(str(tmp_path / "file.txt")) as temporary:
            pathlib.Path(temporary).write_text("x")
        assert os.stat(folder).st_mode & 0o777 == 0o755  # mkdtemp alone makes 0700
        assert os.stat(tmp_path / "file.txt").st_mode & 0o777 == 0o644
        assert os.umask(0o022) == 0o022  # reading the mask left it as it was
    finally:
        os.umask(previous)


def test_first_line_ending_in_a_colon_takes_the_next_line_with_it():
    error = ValueError("A total of 54 objects could not be loaded. Example error message for object <Conv2D>:\n\n"
                       "Layer 'conv' expected 1 variables, but received 2 variables.\n\nList of objects: [...]")
    assert first_line(error) == ("A total of 54 objects could not be loaded. Example error message for object "
                                 "<Conv2D>: Layer 'conv' expected 1 variables, but received 2 variables.")
    assert first_line(ValueError("one\ntwo")) == "one" and first_line(ValueError()) == "ValueError"
