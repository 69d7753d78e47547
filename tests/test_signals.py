"""signals: the first screen (no TensorFlow start-up lines, and nothing else is hidden)."""

import os
import subprocess
import sys

import pytest

from resnet_transfer.signals import STARTUP_LINES, is_startup_line

KNOWN = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796038520.005322    2210 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.",
    "E0000 00:00:1796038527.452430    2210 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: (303)",
    "I0000 00:00:1796090594.231632    4214 port.cc:153] oneDNN custom operations are on. You may see slightly different "
    "numerical results due to floating-point round-off errors from different computation orders. To turn them off, "
    "set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796621453.108946    2705 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
]
REAL = [
    "E0000 00:00:1796038527.452430    2210 op_kernel.cc:1830] OP_REQUIRES failed at conv_ops.cc: out of memory",
    "Traceback (most recent call last):",
    "resnet-transfer: error: unknown backbone 'resnet18'",
]


def test_only_the_known_startup_lines_are_filtered():
    assert all(is_startup_line(line) for line in KNOWN)
    assert not any(is_startup_line(line) for line in REAL)
    # and no pattern is dead: each one matches a line TensorFlow or LiteRT was seen printing
    assert all(any(pattern.search(line) for line in KNOWN) for pattern in STARTUP_LINES)


def test_the_filter_drops_startup_lines_and_passes_everything_else_in_order():
    script = (
        "import os, sys\n"
        "from resnet_transfer.signals import quiet_startup\n"
        "quiet_startup()\n"
        f"lines = {KNOWN + REAL!r}\n"
        "os.write(2, ('\\n'.join(lines) + '\\n').encode())\n"
        "print('last words', file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stderr.splitlines() == REAL + ["last words"]


def _command(*arguments):
    script = "import sys; from resnet_transfer.cli import _entry_point; sys.argv[0] = 'resnet-transfer'; _entry_point()"
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-c", script, *arguments], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_info_and_help_show_no_startup_lines():
    info = _command("info")
    assert info.returncode == 0, info.stderr
    assert info.stderr.strip() == "", info.stderr
    assert "keras_backend" in info.stdout and "weights resnet152" in info.stdout
    helped = _command("train", "--help")
    assert helped.returncode == 0 and "--learning-rate" in helped.stdout and "--no-cache" in helped.stdout
    assert helped.stderr == ""
