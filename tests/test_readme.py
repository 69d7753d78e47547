"""The README's commands run as written: the small run and what it shows to do with it, the
own-images example, and the Python snippet (test_docs.py checks that every command of the guide
parses; these run). In this process, from a fresh folder, as the shell would run them there."""

import os
import re
import runpy
import shlex
import sys

import pytest
from conftest import requires_mnist

from resnet_transfer.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _blocks(language: str) -> list:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        return re.findall(rf"```{language}\n(.*?)```", handle.read(), flags=re.S)


@pytest.mark.slow
@requires_mnist
def test_the_readmes_commands_that_need_no_network_run_as_written(tmp_path, monkeypatch, capsys, offline_downloads):
    (tmp_path / "examples").mkdir()
    os.symlink(os.path.join(ROOT, "examples", "digits"), tmp_path / "examples" / "digits")
    monkeypatch.chdir(tmp_path)
    commands = [shlex.split(line) for block in _blocks("bash") for line in block.splitlines()
                if line.startswith(("resnet-transfer ", "python -m resnet_transfer"))]
    commands = [words for words in commands if words != ["resnet-transfer", "train"]]  # (needs ImageNet weights)
    assert len(commands) == 9, commands  # the small run's seven and the own images' two
    for words in commands:
        if words[0] == "resnet-transfer":
            assert main(words[1:]) == 0, (words, capsys.readouterr().err[-3000:])
        else:  # python -m MODULE ARGUMENTS
            monkeypatch.setattr(sys, "argv", [words[2], *words[3:]])
            monkeypatch.delitem(sys.modules, words[2], raising=False)  # (runpy runs it afresh, as python -m does)
            runpy.run_module(words[2], run_name="__main__")
    assert (tmp_path / "runs" / "quick" / "export" / "tflite").is_dir()
    assert (tmp_path / "runs" / "quick" / "explanations" / "test00-label7-gradcam.png").is_file()
    assert (tmp_path / "runs" / "quick" / "audit.html").is_file()
    assert (tmp_path / "runs" / "shapes" / "model.keras").is_file()
    capsys.readouterr()
    snippet, = _blocks("python")
    exec(compile(snippet, "README.md", "exec"), {})
    run_dir, accuracy = capsys.readouterr().out.splitlines()[-1].split()
    assert os.path.isdir(run_dir) and 0 <= float(accuracy) <= 1
