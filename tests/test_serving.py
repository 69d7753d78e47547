"""``serve``: the HTTP service of a finished run (``resnet_transfer.serving``).

The request checks, the batcher and the page run against a stand-in model (fast); the real
run (``mnist_run``) is served in a subprocess, as ``resnet-transfer serve`` runs it, and its
answers are compared with ``predict``'s. Everything stays on the loopback interface.
"""

import asyncio
import contextlib
import http.client
import io
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import OFFLINE_ENV, requires_mnist
from imagesets import add_broken_files, draw_shape
from PIL import Image

from resnet_transfer.data.images import ImageReadError, decode_image, read_image
from resnet_transfer.errors import ConfigError, RunDirectoryError

pytest.importorskip("starlette", reason="serving needs starlette (pip install starlette)")
pytest.importorskip("uvicorn", reason="serving needs uvicorn (pip install uvicorn)")
pytest.importorskip("python_multipart", reason="serving needs python-multipart (pip install python-multipart)")

import uvicorn  # noqa: E402

from resnet_transfer.serving.app import ServedModel, ServingLimits, create_app  # noqa: E402
from resnet_transfer.serving.batching import DynamicBatcher  # noqa: E402
from resnet_transfer.serving.command import add_serve_parser, command_serve  # noqa: E402
from resnet_transfer.serving.predictors import SERVE_RUNTIMES, Predictor  # noqa: E402

DIGITS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "digits")
# A class name that is HTML: the page must show it as text, never run it.
CLASSES = ("cat", "dog", '<img src=x onerror="window.injected = 1">')


def _digit_files() -> list:
    return sorted(os.path.join(DIGITS, name) for name in os.listdir(DIGITS))


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _multipart(parts, boundary: str = "serving-test-boundary") -> tuple:
    """(body, content type) of multipart/form-data ``parts``: (field, file name or None for text, bytes)."""
    chunks = []
    for field, filename, data in parts:
        disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename is not None else "")
        kind = "Content-Type: application/octet-stream\r\n" if filename is not None else ""
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{kind}\r\n".encode() + data + b"\r\n")
    return b"".join(chunks) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _call(port: int, method: str, path: str, body=None, headers=None, *, chunked: bool = False, timeout: float = 120):
    """(status, headers, parsed JSON or text) of one request to the loopback server on ``port``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    is_json = (response.getheader("content-type") or "").startswith("application/json")
    return response.status, response.headers, json.loads(data) if is_json else data.decode("utf-8", "replace")


def _post_images(port: int, files: list, query: str = ""):
    body, content_type = _multipart([("image", os.path.basename(path), open(path, "rb").read()) for path in files])
    return _call(port, "POST", "/predict" + query, body, {"Content-Type": content_type})


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stand_in(class_names=CLASSES) -> ServedModel:
    """A model of three classes whose probabilities follow the images' mean brightness (no Keras)."""
    def predict(images: np.ndarray) -> np.ndarray:
        brightness = images.reshape(len(images), -1).mean(axis=1, dtype=np.float64)[:, None] / 255
        logits = np.concatenate([2 * brightness, np.full_like(brightness, 0.5), 1 - brightness], axis=1)
        exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (exponentials / exponentials.sum(axis=1, keepdims=True)).astype("float32")

    return ServedModel(run_id="stand-in", model_version="0123456789ab", class_names=list(class_names), image_size=32,
                       resize="pad", preprocessing={"mode": "seed", "backbone": "resnet50"},
                       predictor=Predictor("keras", predict, reason="a stand-in"))


@contextlib.contextmanager
def _serving_in_thread(app):
    """``app`` on uvicorn in a thread of this process, on a free loopback port (yields the port)."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, log_level="warning",
                                           access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


# --- decoding uploads --------------------------------------------------------------------------------------------


def test_decoded_bytes_equal_the_file_read_as_predict_reads_it(tmp_path):
    rng = np.random.default_rng(3)
    files = _digit_files()
    photo = draw_shape("triangle", rng, (40, 24))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to show"
    photo.save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    Image.fromarray(rng.integers(0, 65536, (20, 30), dtype=np.uint16)).save(tmp_path / "wide.png")  # 16-bit grey
    photo.convert("RGBA").save(tmp_path / "alpha.png")
    photo.convert("P").save(tmp_path / "palette.gif")
    files += [str(tmp_path / name) for name in ("rotated.jpg", "wide.png", "alpha.png", "palette.gif")]
    for path in files:
        data = open(path, "rb").read()
        for resize in ("pad", "stretch", "crop"):
            np.testing.assert_array_equal(decode_image(data, size=24, resize=resize, name=path),
                                          read_image(path, size=24, resize=resize))
    broken = add_broken_files(tmp_path)
    for key, reason in (("empty", "empty file"), ("text", "not an image"), ("truncated", "truncated")):
        with pytest.raises(ImageReadError, match=reason):
            decode_image(open(broken[key], "rb").read(), size=24, resize="pad", name=key)
    with pytest.raises(TypeError, match="Received: data of type str"):
        decode_image("image.png", size=24, resize="pad")


# --- the batcher -------------------------------------------------------------------------------------------------


def test_batcher_groups_concurrent_requests_splits_large_ones_and_drains_on_stop():
    sizes, threads = [], set()

    def predict(images):
        sizes.append(len(images))
        threads.add(threading.get_ident())
        return images.reshape(len(images), -1)[:, :1].astype("float32")  # each image's own number back

    async def scenario():
        batcher = DynamicBatcher(predict, max_batch=4, max_wait_ms=100)
        await batcher.start()
        requests = [np.full((count, 2, 2, 3), start, np.uint8) + np.arange(count, dtype=np.uint8)[:, None, None, None]
                    for start, count in ((0, 1), (10, 2), (20, 7))]
        answers = await asyncio.gather(*(batcher.predict(images) for images in requests))
        late = asyncio.ensure_future(batcher.predict(np.full((1, 2, 2, 3), 99, np.uint8)))
        await asyncio.sleep(0)  # queued; stop must still answer it
        await batcher.stop()
        return requests, answers, await late, batcher

    requests, answers, late, batcher = asyncio.run(scenario())
    for images, answer in zip(requests, answers):
        np.testing.assert_array_equal(answer[:, 0], images[:, 0, 0, 0])  # each request gets its own rows, in order
    assert sizes[:3] == [4, 4, 2]  # 10 images, batches of at most 4: the 7-image request is split
    assert late[0, 0] == 99 and sizes[3:] == [1]
    assert batcher.batches_run == 4 and batcher.images_predicted == 11 and batcher.images_pending == 0
    assert len(threads) == 1  # the model is only ever called from one thread
    with pytest.raises(ValueError, match="max_batch=0"):
        DynamicBatcher(predict, max_batch=0, max_wait_ms=5)
    with pytest.raises(ValueError, match="max_wait_ms=-1"):
        DynamicBatcher(predict, max_batch=1, max_wait_ms=-1)


def test_a_failing_batch_fails_its_requests_and_the_batcher_goes_on():
    calls = []

    def predict(images):
        calls.append(len(images))
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return np.zeros((len(images), 2), "float32")

    async def scenario():
        batcher = DynamicBatcher(predict, max_batch=8, max_wait_ms=0)
        await batcher.start()
        with pytest.raises(RuntimeError, match="out of memory"):
            await batcher.predict(np.zeros((2, 2, 2, 3), np.uint8))
        answer = await batcher.predict(np.zeros((3, 2, 2, 3), np.uint8))
        await batcher.stop()
        return answer

    assert asyncio.run(scenario()).shape == (3, 2)


# --- the app: routes and refusals --------------------------------------------------------------------------------


def test_every_malformed_request_gets_its_status_and_one_json_error_and_the_server_goes_on():
    limits = ServingLimits(max_upload_bytes=100_000, max_pixels=100 * 100, top_k=2)
    app = create_app(_stand_in(), max_batch=4, max_wait_ms=5, limits=limits)
    digit = open(_digit_files()[0], "rb").read()
    png = {"Content-Type": "image/png"}
    many, many_type = _multipart([("image", f"{index}.png", digit) for index in range(65)])
    wrong_field, wrong_type = _multipart([("file", "a.png", digit)])
    text_field, text_type = _multipart([("image", None, b"hello")])
    broken, broken_type = _multipart([("image", "a.png", digit)], boundary="one")
    cases = [
        ("POST", "/predict", digit, {"Content-Type": "text/plain"}, 415, "Content-Type 'text/plain'"),
        ("POST", "/predict", digit, {}, 415, "no Content-Type"),
        ("POST", "/predict", b"", png, 400, "body is empty"),
        ("POST", "/predict", b"GIF89a but not really", png, 400, "not an image"),
        ("POST", "/predict", digit[: len(digit) // 2], png, 400, "cannot be read"),
        ("POST", "/predict", _png(np.zeros((101, 100), np.uint8)), png, 413, "10100 pixels and at most 10000"),
        ("POST", "/predict", bytes(200_000), {"Content-Type": "application/octet-stream"}, 413, "at most 0.0953674 MB"),
        ("POST", "/predict", iter([bytes(60_000), bytes(60_000)]), png, 413, "over the limit"),  # chunked: counted
        ("POST", "/predict", wrong_field, {"Content-Type": wrong_type}, 422, "'image' or 'images'"),
        ("POST", "/predict", many, {"Content-Type": many_type}, 422, "65 images in one request and at most 64"),
        ("POST", "/predict", text_field, {"Content-Type": text_type}, 400, "holds text, not a file"),
        ("POST", "/predict", broken, {"Content-Type": broken_type.replace("one", "two")}, 400, "cannot be parsed"),
        ("POST", "/predict?top_k=0", digit, png, 422, "from 1 to 3"),
        ("POST", "/predict?top_k=two", digit, png, 422, "top_k='two'"),
        ("POST", "/predict?top_k=4", digit, png, 422, "from 1 to 3"),
        ("POST", "/predict?limit=1", digit, png, 422, "unknown query parameter 'limit'"),
        ("GET", "/nowhere", None, {}, 404, "the routes are GET /, GET /health"),
        ("DELETE", "/predict", None, {}, 405, "use POST"),
        ("POST", "/health", b"", {}, 405, "use GET"),
    ]
    with _serving_in_thread(app) as port:
        for method, path, body, headers, status, message in cases:
            received, response_headers, answer = _call(port, method, path, body, headers,
                                                       chunked=not isinstance(body, (bytes, type(None))))
            assert (received, message) == (status, message) and isinstance(answer, dict), (path, answer)
            assert list(answer) == ["error"] and message in answer["error"], (path, answer)
            assert "Traceback" not in answer["error"]
        status, _, health = _call(port, "GET", "/health")
        assert status == 200 and health["status"] == "ok" and health["requests_refused"] == len(cases)
        status, _, answer = _call(port, "POST", "/predict", digit, png)
        assert status == 200 and answer["predictions"][0]["name"] == 0 and len(answer["predictions"][0]["top"]) == 2
        status, _, metadata = _call(port, "GET", "/metadata")
        assert metadata["classes"] == list(CLASSES) and metadata["input_size"] == [32, 32, 3]
        assert metadata["limits"]["max_pixels"] == 10_000 and metadata["max_batch"] == 4
        status, headers, page = _call(port, "GET", "/")
        assert status == 200 and headers["content-type"].startswith("text/html") and "<title>resnet-transfer: stand-in" in page


def test_a_failing_model_answers_500_in_one_line_and_logs_it(caplog):
    served = _stand_in()
    served.predictor = Predictor("keras", lambda images: 1 / 0)
    with _serving_in_thread(create_app(served, max_batch=4, max_wait_ms=0)) as port:
        status, _, answer = _call(port, "POST", "/predict", open(_digit_files()[0], "rb").read(),
                                  {"Content-Type": "image/png"})
        assert status == 500 and list(answer) == ["error"] and "ZeroDivisionError" not in answer["error"]
        assert _call(port, "GET", "/health")[2]["requests_failed"] == 1
    warnings = [record for record in caplog.records if record.levelname == "WARNING"]
    assert warnings and all("\n" not in record.getMessage() for record in warnings)
    assert any("ZeroDivisionError" in record.getMessage() for record in warnings)


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (apt-get install chromium)")
def test_the_page_shows_bars_with_the_class_names_as_text_in_headless_chromium():
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    problems = []
    with _serving_in_thread(create_app(_stand_in(), max_batch=4, max_wait_ms=5)) as port:
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(
                executable_path=_chromium(), headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                      "--no-first-run"],
            )
            page = browser.new_page()
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('about').textContent.includes('3 classes')")
            page.set_input_files("#files", _digit_files()[:2])
            page.wait_for_function("document.querySelectorAll('.card').length === 2")
            page.wait_for_function("document.querySelectorAll('.card img').length === 2 && "
                                   "Array.from(document.querySelectorAll('.card img')).every(image => image.complete)")
            names = page.locator(".card .name").all_inner_texts()
            labels = page.locator(".bar .label").all_inner_texts()
            percents = page.locator(".bar .percent").all_inner_texts()
            injected = page.evaluate("window.injected === undefined && document.querySelectorAll('.bars img').length")
            status = page.locator("#status").inner_text()
            browser.close()
    assert problems == []
    assert names == [os.path.basename(path) for path in _digit_files()[:2]]
    assert len(labels) == 6 and set(labels) == set(CLASSES)  # top 3 of 3 classes per image, names as plain text
    assert injected == 0  # the HTML class name was not turned into an element
    assert all(re.fullmatch(r"\d+\.\d %", percent) for percent in percents)
    assert status == "2 images predicted (runtime keras)."


# --- serve and its command ---------------------------------------------------------------------------------------


def _parse(*argv):
    import argparse

    parser = argparse.ArgumentParser(prog="resnet-transfer")
    add_serve_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *map(str, argv)])


def test_serve_refuses_bad_settings_a_missing_run_and_a_busy_port_in_one_line(tmp_path):
    arguments = _parse(tmp_path / "nothing", "--port", "0")
    assert (arguments.host, arguments.runtime, arguments.max_batch, arguments.max_wait_ms, arguments.max_upload_mb,
            arguments.max_pixels, arguments.top_k) == ("127.0.0.1", "auto", 16, 5.0, 10.0, 40_000_000, None)
    with pytest.raises(RunDirectoryError, match="no run folder at .*nothing"):
        command_serve(arguments)
    assert [_parse(tmp_path, "--runtime", name).runtime for name in SERVE_RUNTIMES] == list(SERVE_RUNTIMES)
    for flags, message in ((("--max-batch", "0"), "max_batch=0"), (("--max-wait-ms", "-1"), "max_wait_ms=-1.0"),
                           (("--max-upload-mb", "0"), "max_upload_mb=0.0"), (("--top-k", "0"), "top_k=0"),
                           (("--port", "70000"), "port=70000"), (("--max-pixels", "0"), "max_pixels=0")):
        with pytest.raises(ConfigError, match=message):
            command_serve(_parse(tmp_path, *flags))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ConfigError, match=f"port {busy.getsockname()[1]} on 127.0.0.1 is already in use"):
            command_serve(_parse(tmp_path, "--port", busy.getsockname()[1]))
    with pytest.raises(ConfigError, match="--host 'no such host.invalid' cannot be resolved"):
        command_serve(_parse(tmp_path, "--host", "no such host.invalid", "--port", "0"))


# The command line as `resnet-transfer serve` runs it (cli.main: quiet start-up, one-line errors, exit status 2).
_LAUNCHER = """
import argparse, logging, sys
from resnet_transfer.signals import quiet_startup
quiet_startup()
from resnet_transfer.errors import ResnetTransferError
from resnet_transfer.serving.command import add_serve_parser, command_serve
parser = argparse.ArgumentParser(prog="resnet-transfer")
add_serve_parser(parser.add_subparsers(dest="command"))
logging.basicConfig(level=logging.WARNING, format="resnet-transfer: %(message)s", stream=sys.stderr)
logging.getLogger("resnet_transfer").setLevel(logging.INFO)
try:
    sys.exit(command_serve(parser.parse_args(sys.argv[1:])))
except ResnetTransferError as error:
    print(f"resnet-transfer: error: {error}", file=sys.stderr)
    sys.exit(error.exit_status)
"""


@contextlib.contextmanager
def _serving_process(run_dir, *flags):
    """``serve RUN_DIR --port 0 FLAGS`` in a subprocess; yields (process, port, lines of stdout so far)."""
    process = subprocess.Popen([sys.executable, "-c", _LAUNCHER, "serve", str(run_dir), "--port", "0", *flags],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **OFFLINE_ENV, "TF_CPP_MIN_LOG_LEVEL": "2"})
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout] + [lines.put(None)], daemon=True).start()
    try:
        first = lines.get(timeout=180)
        assert first is not None, process.stderr.read()
        match = re.fullmatch(r"serving (.+) at http://127\.0\.0\.1:(\d+) \(runtime (\w+), batches of up to (\d+) "
                             r"within ([\d.]+) ms\)\n", first)
        assert match, first
        yield process, int(match.group(2)), lines
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
@requires_mnist
def test_served_answers_equal_predict_concurrent_requests_share_batches_and_sigterm_drains(mnist_run):
    from resnet_transfer.prediction import predict
    from resnet_transfer.runs import Run

    files, labels = _digit_files(), Run(mnist_run.run_dir).labels
    expected = predict(mnist_run.run_dir, files, top_k=3)
    with _serving_process(mnist_run.run_dir, "--runtime", "keras", "--max-wait-ms", "500") as (process, port, lines):
        status, _, answer = _post_images(port, files)
        assert status == 200 and answer["runtime"] == "keras" and len(answer["model_version"]) == 12
        assert answer["run_id"] == os.path.basename(mnist_run.run_dir)
        for prediction, reference in zip(answer["predictions"], expected):
            assert prediction["name"] == os.path.basename(reference["path"])
            probabilities = [entry["probability"] for entry in prediction["top"]]
            assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
            for entry in prediction["top"]:
                assert abs(entry["probability"] - reference["probabilities"][labels.index(entry["class"])]) <= 1e-5
            assert prediction["top"][0]["class"] == reference["top"][0][0] or \
                abs(reference["top"][0][1] - reference["top"][1][1]) <= 1e-5

        before = _call(port, "GET", "/health")[2]
        start = threading.Barrier(16)
        answers = [None] * 16

        def post_one(index):
            start.wait()
            answers[index] = _post_images(port, [files[index % len(files)]])

        clients = [threading.Thread(target=post_one, args=(index,)) for index in range(16)]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
        after = _call(port, "GET", "/health")[2]
        assert all(status == 200 for status, _, _ in answers)
        assert after["images_predicted"] - before["images_predicted"] == 16
        assert after["batches_run"] - before["batches_run"] < 16  # batched: fewer model calls than requests

        in_flight = []
        client = threading.Thread(target=lambda: in_flight.append(_post_images(port, files[:1])))
        client.start()
        deadline = time.monotonic() + 60
        while _call(port, "GET", "/health")[2]["images_pending"] == 0:  # waiting in the batcher (500 ms)
            assert time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        client.join(timeout=60)
        assert process.wait(timeout=60) == 0, process.stderr.read()
        assert in_flight and in_flight[0][0] == 200 and in_flight[0][2]["predictions"][0]["name"] == "test00-label7.png"
        rest = []
        while (line := lines.get(timeout=10)) is not None:
            rest.append(line)
        assert rest == ["stopped (SIGTERM); 18 requests served\n"]
        assert "Traceback" not in process.stderr.read()


@pytest.mark.slow
@requires_mnist
def test_openvino_and_int8_runtimes_reproduce_keras_and_auto_picks_a_checked_one(mnist_run, tmp_path):
    import keras

    from resnet_transfer.inference import predict_probabilities
    from resnet_transfer.runs import Run
    from resnet_transfer.serving.predictors import int8_export_path, load_predictor

    run_dir = tmp_path / "run"  # the shared run, seen through links, with an INT8 export of its own
    run_dir.mkdir()
    for name in ("config.json", "labels.txt", "model.keras", "status.json"):
        os.symlink(os.path.join(mnist_run.run_dir, name), run_dir / name)
    run = Run(str(run_dir))
    model = run.load_model()
    size, resize = run.image_geometry
    images = np.stack([read_image(path, size=size, resize=resize) for path in _digit_files()])
    reference = predict_probabilities(model, images.astype("float32"))
    with pytest.raises(RunDirectoryError, match="--runtime int8 needs the run's INT8 export"):
        load_predictor(run, model, runtime="int8", max_batch=4)

    openvino = load_predictor(run, model, runtime="openvino", max_batch=4)
    assert openvino.runtime == "openvino" and openvino.max_abs_difference <= 1e-4
    assert np.max(np.abs(openvino.predict(images) - reference)) <= 1e-4

    # What `export --format openvino --int8` leaves (here unquantised): uint8 images in, probabilities out.
    inputs = keras.Input(shape=(size, size, 3), dtype="uint8")
    os.makedirs(os.path.dirname(int8_export_path(str(run_dir))))
    keras.Model(inputs, model(inputs)).export(int8_export_path(str(run_dir)), format="openvino", verbose=False)
    shutil.copy(run.file("labels.txt"), os.path.join(os.path.dirname(int8_export_path(str(run_dir))), "labels.txt"))
    int8 = load_predictor(run, model, runtime="int8", max_batch=4)
    assert int8.runtime == "int8" and np.max(np.abs(int8.predict(images) - reference)) <= 1e-4

    chosen = load_predictor(run, model, runtime="auto", max_batch=4)  # (never the lossy INT8 by itself)
    assert chosen.runtime in ("keras", "openvino") and chosen.images_per_second > 0
    assert re.search(r"runtime auto chose \w+: .*keras \d+, openvino \d+.*int8 left out", chosen.reason)

    with open(os.path.join(os.path.dirname(int8_export_path(str(run_dir))), "labels.txt"), "w") as handle:
        handle.write("".join(f"other{index}\n" for index in range(len(run.labels))))
    with pytest.raises(RunDirectoryError, match="is not this run's"):
        load_predictor(run, model, runtime="int8", max_batch=4)
