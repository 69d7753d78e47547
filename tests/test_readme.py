"""The README's commands run as written: the small run and what it shows to do with it, the
own-images example, and the Python snippet (test_docs.py checks that every command of the guide
parses; these run)."""

import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import OFFLINE_ENV, requires_mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _blocks(language: str) -> list:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        return re.findall(rf"```{language}\n(.*?)```", handle.read(), flags=re.S)


def _run(command: list, folder) -> subprocess.CompletedProcess:
    completed = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=900,
                               env={**os.environ, **OFFLINE_ENV})
    assert completed.returncode == 0, f"{shlex.join(command)}\n{completed.stderr[-3000:]}"
    return completed


@pytest.mark.slow
@requires_mnist
def test_the_readmes_commands_that_need_no_network_run_as_written(tmp_path):
    (tmp_path / "examples").mkdir()
    os.symlink(os.path.join(ROOT, "examples", "digits"), tmp_path / "examples" / "digits")
    commands = [line for block in _blocks("bash") for line in block.splitlines()
                if line.startswith(("resnet-transfer ", "python -m resnet_transfer"))]
    commands = [line for line in commands if line != "resnet-transfer train"]  # (the seed recipe needs ImageNet weights)
    assert len(commands) == 7, commands  # the small run's five and the own images' two
    for line in commands:
        words = shlex.split(line)
        program = [sys.executable, "-m", "resnet_transfer.cli"] if words[0] == "resnet-transfer" else [sys.executable]
        _run(program + words[1:], tmp_path)
    assert (tmp_path / "runs" / "quick" / "export" / "tflite").is_dir()
    assert (tmp_path / "runs" / "shapes" / "model.keras").is_file()
    snippet, = _blocks("python")
    printed = _run([sys.executable, "-c", snippet], tmp_path).stdout.split()
    assert os.path.isdir(tmp_path / printed[0]) and 0 <= float(printed[1]) <= 1
