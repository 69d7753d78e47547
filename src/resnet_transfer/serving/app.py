"""The HTTP application: routes, request checks and JSON errors, on Starlette.

Why Starlette and not FastAPI: the service has four routes and one upload format, and
needs neither request models, nor dependency injection, nor generated OpenAPI schemas;
FastAPI is Starlette plus those (and pydantic). Starlette alone is the smaller dependency
and still gives routing, multipart parsing (python-multipart), lifespan events and
uvicorn's graceful shutdown.

Routes:

    GET  /          the page (``page.PAGE``): choose or drop images, see their top classes
    POST /predict   images as multipart/form-data (field ``image``, repeatable, or ``images``)
                    or one image as the raw body (Content-Type image/* or application/octet-stream);
                    optional ``?top_k=N``; answers {"predictions": [{"name", "top": [{"class",
                    "probability"}]}], "run_id", "model_version", "runtime"}
    GET  /health    {"status": "ok"} and counters: requests served and refused, batches run,
                    images predicted
    GET  /metadata  classes, input size, resize mode, preprocessing, runtime, batching, limits

Every refused request gets one JSON body {"error": "..."} that says what was wrong and what
is allowed: 400 (empty body, not an image, malformed form), 404 (unknown route), 405 (wrong
method), 413 (body over the byte limit, image over the pixel limit: refused from its header,
before decoding), 415 (content type), 422 (wrong form field, too many images, bad
``top_k`` or query parameter), 503 (stopping). A failure of the server itself answers 500
with a one-line error and is logged server-side at warning level in one line; no traceback
reaches the client.

Images are decoded as ``resnet-transfer predict`` reads files (``data.images.decode_image``:
same orientation, 8-bit scaling and fit), in a worker thread, so with the Keras runtime an
answer equals ``predict``'s for the same file (probabilities rounded to 6 digits, as its JSON
lines); OpenVINO's are within 1e-4 of them, and an INT8 model's as close as its export's
accuracy gate allowed.

Example:
    >>> app = create_app(served, max_batch=16, max_wait_ms=5, limits=ServingLimits())
    >>> uvicorn.run(app)
"""

import asyncio
import contextlib
import io
import logging
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from resnet_transfer.data.images import ImageReadError, decode_image
from resnet_transfer.serving.batching import BatcherStopped, DynamicBatcher
from resnet_transfer.serving.page import render_page
from resnet_transfer.serving.predictors import Predictor

__all__ = ["IMAGE_FIELDS", "MAX_IMAGES_PER_REQUEST", "ServingLimits", "ServedModel", "create_app"]

logger = logging.getLogger(__name__)

IMAGE_FIELDS = ("image", "images")  # the multipart field names that carry images
MAX_IMAGES_PER_REQUEST = 64
_RAW_TYPES = "image/* or application/octet-stream"
_ROUTES = "GET /, GET /health, GET /metadata and POST /predict"


@dataclass(frozen=True)
class ServingLimits:
    """What one request may hold.

    Attributes:
        max_upload_bytes: the largest request body (checked from Content-Length, then counted).
        max_pixels: the largest image, width x height, read from its header before decoding.
        max_images: the most images in one request.
        top_k: classes per image when the request does not say (``?top_k=N``).
    """

    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_images: int = MAX_IMAGES_PER_REQUEST
    top_k: int = 3


@dataclass
class ServedModel:
    """What the service answers with: a run's identity, its image geometry and its runtime.

    Attributes:
        run_id: the run folder's name.
        model_version: the first 12 hex digits of model.keras's SHA-256.
        class_names: in the order of the model's outputs.
        image_size, resize: how images are fitted (the run's ``image_geometry``).
        preprocessing: the run's preprocessing and backbone (inside the model).
        predictor: the runtime (``predictors.Predictor``).
    """

    run_id: str
    model_version: str
    class_names: list
    image_size: int
    resize: str
    preprocessing: dict
    predictor: Predictor


@dataclass
class _Counters:
    requests_served: int = 0
    requests_refused: int = 0
    requests_failed: int = 0
    started: float = field(default_factory=time.time)


class _Refused(Exception):
    """A request that is answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _error(status: int, message: str, headers=None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _megabytes(count: int) -> str:
    return f"{count / 1024 / 1024:g} MB"


async def _read_bounded(request: Request, limit: int):
    """The body's chunks, refusing (413) a declared or counted size over ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _Refused(413, f"the request body is {_megabytes(int(declared))} ({declared} bytes) and at most "
                            f"{_megabytes(limit)} is allowed; send fewer or smaller images")
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise _Refused(413, f"the request body is over the limit of {_megabytes(limit)}; send fewer or smaller images")
        yield chunk


async def _multipart_images(request: Request, limits: ServingLimits) -> list:
    """(name, bytes) of every image of a multipart/form-data body."""
    try:
        form = await MultiPartParser(request.headers, _read_bounded(request, limits.max_upload_bytes)).parse()
    except MultiPartException as error:
        raise _Refused(400, f"the multipart/form-data body cannot be parsed ({error.message}); send the images as "
                            f"form fields named {' or '.join(IMAGE_FIELDS)}") from None
    try:
        items = form.multi_items()
        wrong = sorted({name for name, _ in items if name not in IMAGE_FIELDS})
        if wrong:
            raise _Refused(422, f"unknown form field {', '.join(map(repr, wrong))}: images go in fields named "
                                f"{' or '.join(map(repr, IMAGE_FIELDS))} (repeat the field for several images)")
        if len(items) > limits.max_images:
            raise _Refused(422, f"{len(items)} images in one request and at most {limits.max_images} are allowed; "
                                "send them in several requests")
        images = []
        for index, (name, value) in enumerate(items):
            if not isinstance(value, UploadFile):
                raise _Refused(400, f"form field {name!r} number {index + 1} holds text, not a file: send the image "
                                    "as a file upload (curl -F image=@photo.jpg)")
            images.append((value.filename or index, await value.read()))
        return images
    finally:
        await form.close()


async def _request_images(request: Request, limits: ServingLimits) -> list:
    """(name, bytes) of every image of a /predict request, by its content type."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        images = await _multipart_images(request, limits)
    elif media_type.startswith("image/") or media_type == "application/octet-stream":
        images = [(0, b"".join([chunk async for chunk in _read_bounded(request, limits.max_upload_bytes)]))]
    else:
        received = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
        raise _Refused(415, f"{received}: send images as multipart/form-data (fields "
                            f"{' or '.join(IMAGE_FIELDS)}) or one image as the body with Content-Type {_RAW_TYPES}")
    if not images:
        raise _Refused(400, f"the request holds no image: send files in form fields named {' or '.join(IMAGE_FIELDS)}")
    empty = [name for name, data in images if not data]
    if empty:
        raise _Refused(400, f"the request body is empty: send an image's bytes (Content-Type {_RAW_TYPES})"
                       if media_type != "multipart/form-data" else f"image {empty[0]!r} is empty (0 bytes)")
    return images


def _decode_all(images: list, served: ServedModel, limits: ServingLimits) -> np.ndarray:
    """The fitted pixels of every image; each image's size is checked from its header first (413)."""
    pixels = []
    for name, data in images:
        try:
            with warnings.catch_warnings():  # (Pillow warns of large images; the limit below is ours)
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as header:
                    width, height = header.size
        except Image.DecompressionBombError:  # over twice Pillow's own limit
            raise _Refused(413, f"image {name!r} is over {2 * Image.MAX_IMAGE_PIXELS} pixels and at most "
                                f"{limits.max_pixels} are allowed; downscale it") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            raise _Refused(400, f"image {name!r} is not an image Pillow can read: send PNG, JPEG, WebP, GIF, BMP, TIFF, ... "
                                "files") from None
        if width * height > limits.max_pixels:
            raise _Refused(413, f"image {name!r} is {width}x{height} = {width * height} pixels and at most "
                                f"{limits.max_pixels} are allowed; downscale it")
        try:
            pixels.append(decode_image(data, size=served.image_size, resize=served.resize, name=name))
        except ImageReadError as error:
            raise _Refused(400, f"image {name!r} cannot be read: {error.reason}") from None
    return np.stack(pixels)


def _top_k(request: Request, served: ServedModel, limits: ServingLimits) -> int:
    unknown = sorted(set(request.query_params) - {"top_k"})
    if unknown:
        raise _Refused(422, f"unknown query parameter {', '.join(map(repr, unknown))}: /predict takes only top_k")
    text, classes = request.query_params.get("top_k"), len(served.class_names)
    if text is None:
        return min(limits.top_k, classes)
    if not text.strip().isdigit() or not 1 <= int(text) <= classes:
        raise _Refused(422, f"top_k must be a whole number from 1 to {classes} (the number of classes). Received: "
                            f"top_k={text!r}")
    return int(text)


def _answer(names: list, probabilities: np.ndarray, served: ServedModel, top_k: int) -> dict:
    predictions = []
    for name, row in zip(names, probabilities):
        order = np.argsort(-row)[:top_k]  # (as prediction.predict ranks them)
        predictions.append({"name": name, "top": [{"class": served.class_names[index],
                                                    "probability": round(float(row[index]), 6)} for index in order]})
    return {"predictions": predictions, "run_id": served.run_id, "model_version": served.model_version,
            "runtime": served.predictor.runtime}


def create_app(served: ServedModel, *, max_batch: int, max_wait_ms: float, limits: ServingLimits = ServingLimits()
               ) -> Starlette:
    """The Starlette application that serves ``served``.

    Its lifespan starts the dynamic batcher (``batching.DynamicBatcher``) and, at shutdown,
    drains it: images already queued are still answered.

    Args:
        served: the model and what describes it.
        max_batch, max_wait_ms: the batcher's settings.
        limits: what one request may hold.

    Returns:
        The app; ``app.state.batcher`` and ``app.state.counters`` hold the batcher and the
        request counters (``/health`` shows them).
    """
    batcher = DynamicBatcher(served.predictor.predict, max_batch=max_batch, max_wait_ms=max_wait_ms)
    counters = _Counters()

    async def predict(request: Request):
        try:
            top_k = _top_k(request, served, limits)
            images = await _request_images(request, limits)
            pixels = await run_in_threadpool(_decode_all, images, served, limits)
            probabilities = await batcher.predict(pixels)
        except _Refused as refused:
            counters.requests_refused += 1
            return _error(refused.status, refused.message)
        except ClientDisconnect:
            counters.requests_refused += 1
            return _error(400, "the client closed the connection before the body was sent")
        except BatcherStopped:
            counters.requests_refused += 1
            return _error(503, "the server is stopping and takes no new images; try again later")
        counters.requests_served += 1
        return JSONResponse(_answer([name for name, _ in images], probabilities, served, top_k))

    async def health(request: Request):
        return JSONResponse({"status": "ok" if batcher.running else "stopping", **_counts(counters, batcher)})

    async def metadata(request: Request):
        return JSONResponse({
            "run_id": served.run_id, "model_version": served.model_version, "classes": list(served.class_names),
            "input_size": [served.image_size, served.image_size, 3], "resize": served.resize,
            "preprocessing": served.preprocessing, "runtime": served.predictor.runtime,
            "runtime_reason": served.predictor.reason, "max_batch": max_batch, "max_wait_ms": max_wait_ms,
            "limits": {**asdict(limits), "image_fields": list(IMAGE_FIELDS), "content_types": [
                "multipart/form-data", "image/*", "application/octet-stream"]},
        })

    async def page(request: Request):
        return HTMLResponse(render_page(served.run_id))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    routes = [Route("/", _guarded(page, counters), methods=["GET"]),
              Route("/predict", _guarded(predict, counters), methods=["POST"]),
              Route("/health", _guarded(health, counters), methods=["GET"]),
              Route("/metadata", _guarded(metadata, counters), methods=["GET"])]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error(counters)})
    app.state.batcher, app.state.counters = batcher, counters
    return app


def _counts(counters: _Counters, batcher: DynamicBatcher) -> dict:
    return {"requests_served": counters.requests_served, "requests_refused": counters.requests_refused,
            "requests_failed": counters.requests_failed, "batches_run": batcher.batches_run,
            "images_predicted": batcher.images_predicted, "images_pending": batcher.images_pending,
            "uptime_seconds": round(time.time() - counters.started, 3)}


def _guarded(endpoint, counters: _Counters):
    """``endpoint``, answering any failure of the server with 500 and a one-line error (logged, no traceback)."""
    async def guarded(request: Request):
        try:
            return await endpoint(request)
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as error:
            counters.requests_failed += 1
            logger.warning("%s %s failed: %s: %s", request.method, request.url.path, type(error).__name__,
                           " ".join(str(error).split())[:300])
            return _error(500, "the server failed on this request (it is logged); try again, or report it if it persists")

    return guarded


def _http_error(counters: _Counters):
    """Starlette's own refusals (unknown route, wrong method) as JSON errors."""
    async def handle(request: Request, error: HTTPException):
        counters.requests_refused += 1
        if error.status_code == 404:
            message = f"no route {request.method} {request.url.path}; the routes are {_ROUTES}"
        elif error.status_code == 405:
            allowed = ", ".join(sorted(method.strip() for method in (error.headers or {}).get("Allow", "").split(",")
                                       if method.strip() and method.strip() != "HEAD"))  # (Starlette's order varies)
            message = f"method {request.method} is not allowed on {request.url.path}; use {allowed or 'another method'}"
        else:
            message = str(error.detail)
        return _error(error.status_code, message, headers=error.headers)

    return handle
