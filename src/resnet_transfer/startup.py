"""A quiet first screen: TensorFlow's start-up lines kept off the terminal.

On a CPU-only machine TensorFlow's C++ runtime prints lines such as "Could not find
cuda drivers" and "failed call to cuInit" before its logging is configured, so
``TF_CPP_MIN_LOG_LEVEL`` cannot silence them. ``quiet_startup`` sets TensorFlow's
logging variables (before TensorFlow is imported) and passes the process's stderr
through a filter that drops exactly those known start-up lines, and nothing else:
warnings, errors and tracebacks pass unchanged.

Only the command line calls it; importing the library changes nothing.
"""

import atexit
import contextlib
import os
import re
import sys
import threading
import time

__all__ = ["STARTUP_LINES", "quiet_startup", "is_startup_line", "unfiltered"]

STARTUP_LINES = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"),
    re.compile(r"^[IWE]\d{4} [\d:. ]+\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine"),
    re.compile(r"^[IWE]\d{4} [\d:. ]+\d+ cuda_platform\.cc:\d+\] failed call to cuInit"),
    re.compile(r"^[IWE]\d{4} [\d:. ]+\d+ cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized"),
    re.compile(r"^To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\.$"),
    # On CPUs with AVX-512 or AMX, once per process that starts TensorFlow (twice for `info`).
    re.compile(r"^[IWE]\d{4} [\d:. ]+\d+ port\.cc:\d+\] oneDNN custom operations are on\. "),
    # LiteRT, once per interpreter (--extract-runtime): its default CPU delegate.
    re.compile(r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$"),
)
_installed = False
_terminal = None  # the process's own stderr, behind the filter


def is_startup_line(line: str) -> bool:
    """Whether ``line`` is one of TensorFlow's known start-up lines on a CPU-only machine."""
    return any(pattern.search(line.rstrip("\n")) for pattern in STARTUP_LINES)


def _pump(read_end: int, target: int) -> None:
    with os.fdopen(read_end, "rb", buffering=0) as source:
        pending = b""
        while chunk := source.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = [line + b"\n" for line in lines if not is_startup_line(line.decode("utf-8", "replace"))]
            if kept:
                os.write(target, b"".join(kept))
        if pending:
            os.write(target, pending)


def quiet_startup() -> None:
    """Sets TensorFlow's logging variables and filters its start-up lines from stderr (once)."""
    global _installed, _terminal
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if _installed:
        return
    _installed = True
    sys.stderr.flush()
    original = _terminal = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(target=_pump, args=(read_end, original), name="stderr-filter", daemon=True)
    pump.start()

    def drain() -> None:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end: the pump reads to the end and stops
        pump.join(timeout=5)

    atexit.register(drain)


@contextlib.contextmanager
def unfiltered():
    """stderr straight to the terminal for a while: around a call into TensorFlow that
    holds Python's lock for long (a cluster's wait for its workers), during which the
    filter's thread could not pass a line on."""
    if _terminal is None:
        yield
        return
    sys.stderr.flush()
    time.sleep(0.2)  # the filter passes on what it holds
    filtered = os.dup(2)
    os.dup2(_terminal, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(filtered, 2)
        os.close(filtered)
