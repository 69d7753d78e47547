import os
import subprocess
import sys

from resnet_transfer.data.stores import image_store_dir, remove_stale_stores


def _finished_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stores_of_killed_processes_are_removed_and_live_ones_kept(tmp_path):
    dead = tmp_path / f"resnet-transfer-images-{_finished_pid()}-abc"
    alive = tmp_path / f"resnet-transfer-images-{os.getppid()}-def"
    other = tmp_path / "someone-elses-folder"
    for folder in (dead, alive, other):
        folder.mkdir()
        (folder / "images.npy").write_bytes(b"x")
    assert remove_stale_stores(str(tmp_path)) == [str(dead)]
    assert not dead.exists() and alive.exists() and other.exists()


def test_this_process_has_one_store_named_after_it():
    folder = image_store_dir()
    assert os.path.isdir(folder) and image_store_dir() == folder
    assert os.path.basename(folder).startswith(f"resnet-transfer-images-{os.getpid()}-")
