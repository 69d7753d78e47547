"""``serve``: a finished run behind HTTP, on uvicorn, until Ctrl-C or SIGTERM.

The run is loaded and its runtime chosen (``predictors.load_predictor``) before anything
listens, so a bad run folder or flag stops at once with the project's one-line errors. The
socket is bound here, not by uvicorn, so that a port in use is a ``ConfigError`` (one line,
exit status 2 from the command line) rather than uvicorn's log and exit, and so that
``port=0`` (a free port) is known before the start line names it.

Stopping is uvicorn's: on SIGINT or SIGTERM it stops accepting connections, lets the
requests in flight finish (at most ``GRACEFUL_SECONDS``), then runs the app's lifespan
shutdown, which drains the batcher. uvicorn then raises the signal again for the handler
it found; ``serve`` installs one that only notes it, so the process ends normally
(exit status 0) with the line "stopped (SIGTERM); N requests served".

Example:
    >>> serve("runs/quick", port=8000, runtime="keras")
    serving runs/quick at http://127.0.0.1:8000 (runtime keras, batches of up to 16 within 5 ms)
"""

import contextlib
import errno
import logging
import math
import os
import signal
import socket
import sys
import threading
from typing import Optional, TextIO

from PIL import Image

from resnet_transfer.errors import ConfigError, RunDirectoryError
from resnet_transfer.files import hash_file
from resnet_transfer.serving.app import ServedModel, ServingLimits, create_app
from resnet_transfer.serving.predictors import SERVE_RUNTIMES, load_predictor

__all__ = ["GRACEFUL_SECONDS", "load_served_model", "serve"]

logger = logging.getLogger(__name__)

GRACEFUL_SECONDS = 30  # how long a stop waits for the requests in flight
_SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


def _whole(name: str, value, low: int, high: Optional[int] = None, *, fix: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        allowed = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise ConfigError(f"{name} must be a whole number {allowed}{fix}. Received: {name}={value!r}")
    return value


def _number(name: str, value, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or (
            positive and value == 0):
        raise ConfigError(f"{name} must be a number {'above' if positive else 'at least'} 0. Received: {name}={value!r}")
    return float(value)


def load_served_model(run_dir: str, *, runtime: str = "auto", max_batch: int = 16) -> ServedModel:
    """Loads a finished run and its runtime, ready for ``create_app``.

    Raises:
        RunDirectoryError: no finished run at ``run_dir`` (or a damaged one).
        ConfigError, ExportCheckError: as ``predictors.load_predictor``.
    """
    if not os.path.isdir(run_dir):
        raise RunDirectoryError(f"no run folder at {run_dir!r}: give the folder of a finished run (it holds model.keras)")
    from resnet_transfer.runs import Run  # (imports Keras: once the settings and the folder are checked)

    run = Run(run_dir)
    model = run.load_model()
    size, resize = run.image_geometry
    model_settings = run.record["config"]["model"]
    predictor = load_predictor(run, model, runtime=runtime, max_batch=max_batch)
    return ServedModel(
        run_id=os.path.basename(os.path.abspath(run_dir)), model_version=hash_file(run.file("model.keras"))[:12],
        class_names=run.labels, image_size=size, resize=resize, predictor=predictor,
        preprocessing={"mode": model_settings.get("preprocess"), "backbone": model_settings.get("backbone"),
                       "in_model": True, "input": "RGB pixels in [0, 255]; the model scales them itself"})


def _bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (0: a free port), not listening yet: the port is
    taken at once (a port in use stops ``serve`` before the model loads).

    Raises:
        ConfigError: the host is not an address of this machine, or the port is in use or not allowed.
    """
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                                flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as error:
        raise ConfigError(f"--host {host!r} cannot be resolved ({error}); give an address of this machine: 127.0.0.1 "
                          "(this machine only) or 0.0.0.0 (every interface)") from None
    listener = socket.socket(family, kind, protocol)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # (a port left in TIME_WAIT is free)
        listener.bind(address)
    except OSError as error:
        listener.close()
        if error.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use (another server?); stop that one, choose "
                              "another --port, or --port 0 for a free one") from None
        if error.errno in (errno.EACCES, errno.EPERM):
            raise ConfigError(f"no permission to listen on port {port} (ports below 1024 need privileges); choose "
                              "--port 1024 or above, or --port 0 for a free one") from None
        raise ConfigError(f"cannot listen on {host} port {port} ({error.strerror}); check --host and --port") from None
    return listener


@contextlib.contextmanager
def _noting_signals():
    """SIGINT and SIGTERM only noted (in the list it yields): uvicorn takes them while it
    serves and raises them again afterwards, for this handler, once it has stopped."""
    received = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def note(number, frame):
        received.append(_SIGNAL_NAMES.get(number, str(number)))

    previous = {number: signal.signal(number, note) for number in _SIGNAL_NAMES}
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _url(host: str, port: int) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def serve(run_dir: str, *, host: str = "127.0.0.1", port: int = 8000, runtime: str = "auto", max_batch: int = 16,
          max_wait_ms: float = 5.0, max_upload_mb: float = 10.0, max_pixels: int = 40_000_000, top_k: Optional[int] = None,
          output: Optional[TextIO] = None) -> dict:
    """Serves a finished run over HTTP until Ctrl-C or SIGTERM (routes: ``serving.app``).

    Prints "serving RUN at http://HOST:PORT (runtime R, batches of up to N within M ms)"
    once it listens, and "stopped (SIGTERM); N requests served" when it has stopped.

    Args:
        run_dir: a finished run's folder.
        host, port: where to listen (``port=0``: a free port, named in the start line).
        runtime: "auto", "keras", "openvino" or "int8" (``predictors``).
        max_batch: the most images in one call of the model (1: one at a time).
        max_wait_ms: how long the first image of a batch waits for others.
        max_upload_mb: the largest request body, in megabytes (2**20 bytes).
        max_pixels: the largest image (width x height), refused from its header before decoding.
        top_k: classes per image when a request does not give ``?top_k=`` (None: 3, or every
            class of a run with fewer).
        output: where the two lines go (default: stdout).

    Returns:
        {"requests_served", "batches_run", "images_predicted", "signal"} once stopped.

    Raises:
        ConfigError: a setting out of range, an unknown runtime, a host or port that cannot be used.
        RunDirectoryError: no finished run at ``run_dir``, or "int8" without its export.
        ExportCheckError: the OpenVINO model does not reproduce Keras (``runtime="openvino"``).

    Example:
        >>> serve("runs/quick", port=0, runtime="keras", max_batch=16, max_wait_ms=5)
    """
    if runtime not in SERVE_RUNTIMES:
        raise ConfigError(f"runtime must be one of: {', '.join(SERVE_RUNTIMES)}. Received: runtime={runtime!r}")
    _whole("port", port, 0, 65535, fix=" (0: a free port)")
    _whole("max_batch", max_batch, 1)
    max_wait_ms = _number("max_wait_ms", max_wait_ms, positive=False)
    upload_bytes = int(_number("max_upload_mb", max_upload_mb, positive=True) * 1024 * 1024)
    _whole("max_pixels", max_pixels, 1, Image.MAX_IMAGE_PIXELS or None,
           fix=" (Pillow's safety limit, PIL.Image.MAX_IMAGE_PIXELS, is the most: raise it from Python to allow more)")
    if top_k is not None:
        _whole("top_k", top_k, 1)
    if not isinstance(host, str) or not host:
        raise ConfigError(f"host must be an address such as 127.0.0.1. Received: host={host!r}")
    listener = _bind(host, port)
    try:
        served = load_served_model(run_dir, runtime=runtime, max_batch=max_batch)
        top_k = min(3, len(served.class_names)) if top_k is None else top_k
        _whole("top_k", top_k, 1, len(served.class_names), fix=" (the number of classes)")
        listener.listen(2048)  # (connections wait in the backlog until uvicorn accepts them)
    except BaseException:
        listener.close()
        raise
    import uvicorn

    limits = ServingLimits(max_upload_bytes=max(upload_bytes, 1), max_pixels=max_pixels, top_k=top_k)
    app = create_app(served, max_batch=max_batch, max_wait_ms=max_wait_ms, limits=limits)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="on",
                                           timeout_graceful_shutdown=GRACEFUL_SECONDS))
    output = output or sys.stdout
    logger.info("%s", served.predictor.reason)
    print(f"serving {run_dir} at {_url(host, listener.getsockname()[1])} (runtime {served.predictor.runtime}, batches "
          f"of up to {max_batch} within {max_wait_ms:g} ms)", file=output, flush=True)
    with _noting_signals() as received:
        try:
            server.run(sockets=[listener])
        finally:
            listener.close()
    counters, batcher = app.state.counters, app.state.batcher
    stop = received[0] if received else None
    print(f"stopped{f' ({stop})' if stop else ''}; {counters.requests_served} requests served", file=output, flush=True)
    return {"requests_served": counters.requests_served, "batches_run": batcher.batches_run,
            "images_predicted": batcher.images_predicted, "signal": stop}
