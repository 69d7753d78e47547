"""Load on ``resnet-transfer serve``: one image at a time against dynamic batching, per runtime.

For each runtime (keras and openvino, and int8 where the run has ``export/openvino-int8``)
and each way of serving ((a) ``--max-batch 1``: one image at a time; (b) ``--max-batch 16
--max-wait-ms 5``: dynamic batching), the script starts ``serve`` on a free loopback port
in a subprocess, lets ``--clients`` threads post ``--requests`` images between them (one
image per request, as the raw body, over kept-alive connections; at most ``--seconds`` per
configuration), and measures the images answered per second and the latency of each
request (p50 and p99). Every answer's top class is compared with ``resnet_transfer.predict``'s
for the same image; the table counts the mismatches (0 expected for keras and openvino;
int8 is quantised). The server is stopped (SIGTERM) after each configuration, and on
Ctrl-C or any failure.

    python benchmarks/serve_load.py --run runs/quick --clients 16 --requests 400 --seconds 60

The images are the run's test images (encoded as PNG), or those of ``--images DIR``. The
clients run on the same machine as the server and take part of its cores: the figures are
those of a loopback test, not of a server with its machine to itself. Not a test.
"""

import argparse
import http.client
import io
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODES = {"one at a time": ("--max-batch", "1", "--max-wait-ms", "0"),
         "dynamic (16, 5 ms)": ("--max-batch", "16", "--max-wait-ms", "5")}
_START_LINE = re.compile(r"serving .+ at http://127\.0\.0\.1:(\d+) \(runtime (\w+),")
# Until the command line names "serve": the same command, started as cli.main starts it.
_LAUNCHER = """
import argparse, logging, sys
from resnet_transfer.signals import quiet_startup
quiet_startup()
from resnet_transfer.errors import ResnetTransferError
from resnet_transfer.serving.command import add_serve_parser, command_serve
parser = argparse.ArgumentParser(prog="resnet-transfer")
add_serve_parser(parser.add_subparsers(dest="command"))
logging.basicConfig(level=logging.WARNING, format="resnet-transfer: %(message)s", stream=sys.stderr)
try:
    sys.exit(command_serve(parser.parse_args(sys.argv[1:])))
except ResnetTransferError as error:
    print(f"resnet-transfer: error: {error}", file=sys.stderr)
    sys.exit(error.exit_status)
"""


def serve_command() -> list:
    """``resnet-transfer serve`` as a command: the CLI once it has the verb, else the launcher."""
    wired = subprocess.run([sys.executable, "-m", "resnet_transfer.cli", "serve", "--help"], capture_output=True)
    return ([sys.executable, "-m", "resnet_transfer.cli", "serve"] if wired.returncode == 0
            else [sys.executable, "-c", _LAUNCHER, "serve"])


def load_images(run_dir: str, folder, count: int) -> tuple:
    """(the bytes of each image: its file, or PNG; its top class by ``predict``) for up to ``count`` images."""
    import numpy as np
    from PIL import Image

    from resnet_transfer.prediction import expand_inputs, predict
    from resnet_transfer.runs import Run

    if folder:
        paths = expand_inputs([folder])[:count]
        results = [result for result in predict(run_dir, paths, top_k=1) if "error" not in result]
        return [open(r["path"], "rb").read() for r in results], [r["top"][0][0] for r in results]
    images = np.asarray(Run(run_dir).load_dataset(splits=("test",)).x_test[:count], dtype=np.uint8)
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    results = predict(run_dir, images, top_k=1)
    return encoded, [r["top"][0][0] for r in results]


class Server:
    """``serve RUN --port 0 FLAGS`` in a subprocess, stopped on leaving the block (SIGTERM, then kill)."""

    def __init__(self, command: list, run_dir: str, flags: tuple):
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen([*command, run_dir, "--port", "0", *flags], stdout=subprocess.PIPE,
                                        stderr=self.log, text=True)
        line = self.process.stdout.readline()
        match = _START_LINE.match(line)
        if not match:
            self.stop()
            self.log.seek(0)
            raise RuntimeError(f"serve did not start: {line!r} {self.log.read()[-2000:]}")
        self.port, self.runtime = int(match.group(1)), match.group(2)

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.stdout.read().strip()

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        self.stop()


def call(connection: http.client.HTTPConnection, method: str, path: str, body=None, headers=None) -> tuple:
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def load(port: int, images: list, expected: list, *, clients: int, requests: int, seconds: float) -> dict:
    """``clients`` threads post ``requests`` images between them (at most ``seconds``)."""
    next_request, lock, stop = [0], threading.Lock(), threading.Event()
    latencies, mismatches, failures = [], [0], []
    deadline = time.monotonic() + seconds

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                with lock:
                    index = next_request[0]
                    if index >= requests:
                        return
                    next_request[0] += 1
                image = index % len(images)
                started = time.perf_counter()
                try:
                    status, answer = call(connection, "POST", "/predict?top_k=1", images[image],
                                          {"Content-Type": "image/png"})
                except (OSError, http.client.HTTPException, ValueError) as error:
                    failures.append(repr(error))
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                    continue
                elapsed = time.perf_counter() - started
                with lock:
                    if status != 200:
                        failures.append(f"{status}: {answer}")
                        continue
                    latencies.append(elapsed)
                    mismatches[0] += answer["predictions"][0]["top"][0]["class"] != expected[image]
        finally:
            connection.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    started = time.perf_counter()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        stop.set()
    wall = time.perf_counter() - started
    import numpy as np

    milliseconds = np.asarray(latencies) * 1000
    return {"answered": len(latencies), "failed": len(failures), "first_failure": failures[0] if failures else None,
            "seconds": wall, "images_per_second": len(latencies) / wall,
            "p50_ms": float(np.percentile(milliseconds, 50)) if len(milliseconds) else float("nan"),
            "p99_ms": float(np.percentile(milliseconds, 99)) if len(milliseconds) else float("nan"),
            "mismatches": mismatches[0]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, metavar="RUN_DIR", help="a finished run")
    parser.add_argument("--images", metavar="DIR", help="image files to post (default: the run's test images)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent client threads (default: 16)")
    parser.add_argument("--requests", type=int, default=400, help="requests per configuration (default: 400)")
    parser.add_argument("--seconds", type=float, default=60, help="at most this long per configuration (default: 60)")
    parser.add_argument("--modes", default="one,dynamic", help="comma-separated, of: one (one image at a time), "
                        "dynamic (dynamic batching) (default: both)")
    parser.add_argument("--runtimes", default=None, help="comma-separated (default: keras,openvino, and int8 where "
                        "the run has its export)")
    arguments = parser.parse_args()
    if arguments.clients < 1 or arguments.requests < 1 or arguments.seconds <= 0:
        parser.error("--clients and --requests must be at least 1, --seconds above 0")
    runtimes = (arguments.runtimes.split(",") if arguments.runtimes else
                ["keras", "openvino"] + (["int8"] if os.path.isfile(
                    os.path.join(arguments.run, "export", "openvino-int8", "model.xml")) else []))
    images, expected = load_images(arguments.run, arguments.images, arguments.requests)
    command = serve_command()
    rows = []
    for runtime in runtimes:
        chosen = [mode for mode, short in zip(MODES, ("one", "dynamic")) if short in arguments.modes.split(",")]
        for mode, flags in ((mode, MODES[mode]) for mode in chosen):
            with Server(command, arguments.run, ("--runtime", runtime, *flags)) as server:
                connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
                for image in images[: min(len(images), 8)]:  # warm-up: traced, compiled, caches filled
                    call(connection, "POST", "/predict", image, {"Content-Type": "image/png"})
                before = call(connection, "GET", "/health")[1]
                connection.close()  # (idle through the load, it would pass uvicorn's keep-alive timeout)
                figures = load(server.port, images, expected, clients=arguments.clients, requests=arguments.requests,
                               seconds=arguments.seconds)
                connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
                after = call(connection, "GET", "/health")[1]
                connection.close()
                figures["batches"] = after["batches_run"] - before["batches_run"]
                rows.append((runtime, mode, figures))
                print(json.dumps({"runtime": runtime, "mode": mode, **figures}), file=sys.stderr, flush=True)
    print(f"\n{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{datetime.now(timezone.utc):%Y-%m-%d}; {arguments.clients} clients, {len(images)} distinct images, "
          f"{arguments.requests} requests of one image per configuration (at most {arguments.seconds:g} s)\n")
    print("| runtime | serving | images/s | p50 latency | p99 latency | batches | answered | failed | top-class "
          "mismatches |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for runtime, mode, f in rows:
        print(f"| {runtime} | {mode} | {f['images_per_second']:.1f} | {f['p50_ms']:.1f} ms | {f['p99_ms']:.1f} ms | "
              f"{f['batches']} | {f['answered']} | {f['failed']} | {f['mismatches']} |")
    for runtime, mode, f in rows:
        if f["first_failure"]:
            print(f"\n{runtime}, {mode}: first failure: {f['first_failure']}")


if __name__ == "__main__":
    main()
