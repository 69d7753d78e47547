"""The one module that handles the process's signals and its stderr.

- **Ctrl-C and SIGTERM during a run** (``watching_interrupts``). Python raises
  ``KeyboardInterrupt`` in the main thread when the signal's handler runs. When that
  happens inside TensorFlow's C++ code running a Python callback, the exception can come
  out as another one (a bare ``TypeError``) or be swallowed, and a run would then crash
  with a traceback, or carry on as if nothing happened. ``watching_interrupts`` notes
  every signal, so that the run's lifecycle (``runs.RunContext``) treats any later error
  as the interrupt, and ``training.callbacks.StopOnInterrupt`` stops at the next batch.
  With ``deferred`` set (``train``, whose epochs end in a checkpoint), the first Ctrl-C
  during an epoch lets that epoch finish and its checkpoint be written; a second stops
  at once. SIGTERM (what Slurm and Kubernetes send before they kill a job) stops at once,
  with ``errors.Terminated``: a scheduler's grace period is rarely an epoch long.
- **Native waits** (``with_default_signals``): a call into C++ that holds Python's lock
  for long (a cluster's join) gets the default actions of SIGINT and SIGTERM back.
- **Native threads** (``native_threads_without_sigint``): a runtime's own threads
  (OpenVINO's) never take SIGINT, and the main thread's alternate signal stack is put
  back after them.
- **TensorFlow's start-up lines** (``quiet_startup``, the command line only): on a
  CPU-only machine TensorFlow's C++ runtime prints lines such as "Could not find cuda
  drivers" before its logging is configured, so ``TF_CPP_MIN_LOG_LEVEL`` cannot silence
  them; the process's stderr passes through a filter that drops exactly those known
  lines, and nothing else. Importing the library changes nothing.

Imports no Keras and no TensorFlow (the command line calls ``quiet_startup`` before them).

Example:
    >>> with watching_interrupts() as interrupts:
    ...     model.fit(..., callbacks=[StopOnInterrupt(interrupts)])
"""

import atexit
import contextlib
import ctypes
import functools
import logging
import os
import re
import signal
import sys
import threading
import time
from typing import Optional

from resnet_transfer.errors import Terminated

__all__ = [
    "STARTUP_LINES", "Interrupts", "alternate_signal_stack", "is_startup_line", "native_threads_without_sigint",
    "quiet_startup", "unfiltered", "watching_interrupts", "with_default_signals", "without_retracing_notices",
]

logger = logging.getLogger(__name__)


class Interrupts:
    """Whether Ctrl-C arrived while it was watched (``deferred``: while set, the first
    Ctrl-C only asks to stop at the end of the epoch)."""

    def __init__(self):
        self.count = 0
        self.deferred = False
        self.signal_name = "Ctrl-C"  # or "SIGTERM"

    def __bool__(self) -> bool:
        return self.count > 0

    def stop(self) -> BaseException:
        """The exception that ends a block during which a signal arrived: the signal's own
        (``KeyboardInterrupt`` for Ctrl-C, ``errors.Terminated`` for SIGTERM), whatever
        TensorFlow's C++ code made of it (raise it ``from`` that, which keeps it in the chain)."""
        return Terminated() if self.signal_name == "SIGTERM" else KeyboardInterrupt()


@contextlib.contextmanager
def watching_interrupts():
    """Yields an ``Interrupts`` that counts every SIGINT while the block runs; the previous
    handler still runs (raising ``KeyboardInterrupt`` by default). SIGTERM, where its
    handler is the default, raises ``Terminated`` instead of ending the process. Only the
    main thread may set handlers; elsewhere nothing changes, and an ignored SIGINT (a
    background job of a script) or a SIGTERM handler someone else set stays as it is."""
    interrupts = Interrupts()
    if threading.current_thread() is not threading.main_thread():
        yield interrupts
        return
    previous = signal.getsignal(signal.SIGINT)
    watch_interrupt = callable(previous)
    watch_terminate = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

    def note_and_interrupt(number, frame):
        interrupts.count += 1
        if interrupts.deferred and interrupts.count == 1:
            logger.warning("Ctrl-C: stopping at the end of this epoch, once its checkpoint is written "
                           "(Ctrl-C again stops at once and loses the epoch)")
            return
        previous(number, frame)

    def note_and_terminate(number, frame):
        interrupts.count += 1
        interrupts.signal_name = "SIGTERM"
        raise Terminated()

    if watch_interrupt:
        signal.signal(signal.SIGINT, note_and_interrupt)
    if watch_terminate:
        signal.signal(signal.SIGTERM, note_and_terminate)
    try:
        yield interrupts
    finally:
        if watch_interrupt:
            signal.signal(signal.SIGINT, previous)
        if watch_terminate:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def with_default_signals(create):
    """``create()``, during which Ctrl-C still ends the process.

    TensorFlow waits for the cluster's other workers inside its C++ code, holding
    Python's lock: no Python signal handler (nor any other thread) runs until every
    worker has started, so a worker started without the others ignored Ctrl-C. During
    the wait SIGINT and SIGTERM get their default action back: the kernel ends the
    process (exit status 130). SIGTERM is then caught by TensorFlow's own preemption
    watcher all the same (measured: ``kill`` does not end the wait; ``kill -9`` does).
    Nothing is written before the wait ends.
    """
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.getsignal(number) for number in handled}
    for number in handled:
        signal.signal(number, signal.SIG_DFL)
    try:
        return create()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class _SignalStack(ctypes.Structure):
    """sigaltstack(2)'s stack_t."""
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@functools.cache
def _sigaltstack():
    """libc's sigaltstack, or None (looked up once: the guard runs around every batch)."""
    return getattr(ctypes.CDLL(None), "sigaltstack", None)


def alternate_signal_stack(new: Optional[_SignalStack] = None) -> Optional[_SignalStack]:
    """This thread's alternate signal stack (and sets ``new`` if given); None where libc has no sigaltstack."""
    sigaltstack = _sigaltstack()
    if sigaltstack is None:
        return None
    current = _SignalStack()
    sigaltstack(ctypes.byref(new) if new is not None else None, ctypes.byref(current))
    return current


@contextlib.contextmanager
def native_threads_without_sigint():
    """Runs a runtime's own code so that Ctrl-C still ends the run cleanly afterwards.

    OpenVINO replaces the calling thread's alternate signal stack (sigaltstack) with a smaller one
    of its own (measured: Python's 16,880-byte stack became an 11,568-byte one at another address);
    Python runs its SIGINT handler on that stack, and a Ctrl-C in a later stage of the same process
    (a run's head epochs, in the test suite) ended in a segmentation fault. So the stack is put back
    when the block ends. SIGINT is blocked meanwhile, so that the threads the runtime starts
    (they inherit the mask) never take it; a Ctrl-C that arrives meanwhile waits and is raised as
    the block ends, in the main thread."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    stack = alternate_signal_stack()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        if stack is not None:
            alternate_signal_stack(stack)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


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


class _RetracingNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def without_retracing_notices():
    """For a verb that builds one model after another on purpose (probe: one per backbone and
    cut; tune: one per trial), each with its own traced functions: TensorFlow's notice that
    functions were traced again is expected there, not advice, and is dropped in the block."""
    notice, tensorflow_logger = _RetracingNotice(), logging.getLogger("tensorflow")
    tensorflow_logger.addFilter(notice)
    try:
        yield
    finally:
        tensorflow_logger.removeFilter(notice)
