"""The documentation: README.md and the user guide in docs/ (built with MkDocs).

Fast (a few seconds): nothing here trains, downloads or imports Keras.
"""

import glob
import os
import re
import shlex
import subprocess
import sys

import pytest

from resnet_transfer.cli import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(ROOT, "README.md"), *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]
FENCED_BLOCK = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHELL_SEPARATORS = {";", "&", "&&", "|", "||", "(", ")", "do", "then"}
ENVIRONMENT_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _cli_commands(text: str) -> list:
    """The arguments of every ``resnet-transfer`` command in the fenced code blocks of ``text``: lines
    continued with a backslash are joined, comments dropped, and a command ends at ``;``, ``&&``, ``|`` or ``&``."""
    commands = []
    for block in FENCED_BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            if "resnet-transfer" not in line:
                continue
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            tokens, arguments, at_start = list(lexer), None, True
            for token in tokens + [";"]:
                if arguments is not None and token in SHELL_SEPARATORS:
                    commands.append(arguments)
                    arguments = None
                if arguments is not None:
                    arguments.append(token)
                elif token in SHELL_SEPARATORS:
                    at_start = True
                elif at_start and ENVIRONMENT_ASSIGNMENT.match(token):
                    continue  # TF_CONFIG='...' resnet-transfer ...
                else:
                    arguments = [] if at_start and token == "resnet-transfer" else None
                    at_start = False
    return commands


def test_user_guide_builds_with_mkdocs_strict(tmp_path):
    """mkdocs.yml and docs/ build without a warning: every page in the nav, no broken link or anchor."""
    pytest.importorskip("mkdocs")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_is_short_and_holds_no_test_timings():
    """The README is the front door: at most 1,600 words, and no test-suite timings (they go stale)."""
    text = _read(os.path.join(ROOT, "README.md"))
    assert len(text.split()) <= 1600
    assert not re.search(r"\bpassed in\b|\d+ passed\b", text)
    for line in text.splitlines():
        if "pytest" in line:
            assert not re.search(r"\d\s*(s|sec|seconds?|min|minutes?)\b", line), line


def test_every_documented_command_parses():
    """Every ``resnet-transfer`` command in the README and the guide's code blocks is accepted by the CLI's
    parser as written: no removed or misspelt flag, no bad value (nothing is run)."""
    parser = build_parser()
    checked, refused = 0, []
    for page in PAGES:
        for arguments in _cli_commands(_read(page)):
            if not arguments or "--help" in arguments or "-h" in arguments:
                continue
            checked += 1
            try:
                parser.parse_args(arguments)
            except SystemExit:
                refused.append(f"{os.path.relpath(page, ROOT)}: resnet-transfer {shlex.join(arguments)}")
    assert not refused, "\n".join(refused)
    assert checked >= 20, f"only {checked} commands found: is the code-block parsing broken?"


def test_command_finder_sees_commands_in_shell_lines():
    """The finder behind the previous test reads environment assignments, continued lines, loops and
    background jobs, so a documented command cannot slip past it."""
    text = ("```bash\nTF_CONFIG='{\"a\": 1}' \\\n  resnet-transfer train --epochs 2 &\n"
            "for i in 0 1; do resnet-transfer extract --shard 0/2; done  # comment\n"
            "echo resnet-transfer\n```\n")
    assert _cli_commands(text) == [["train", "--epochs", "2"], ["extract", "--shard", "0/2"]]
