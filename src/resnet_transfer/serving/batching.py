"""Dynamic batching: the images of concurrent requests share one call of the model.

Every image of a request goes into one ``asyncio.Queue`` with a future of its own. One
task, the batcher, takes the first image that waits, then keeps taking images until it
holds ``max_batch`` of them or ``max_wait_ms`` have passed since the first, stacks them
and runs the model on the batch in its one worker thread (so the model never runs
twice at once, and the event loop keeps accepting requests meanwhile), and gives each
image's future its row of probabilities. A request of more images than ``max_batch``
is spread over consecutive batches (its images are queued in order, one entry each).
``max_batch=1`` is one-image-at-a-time serving; ``max_wait_ms=0`` batches only the
images already waiting.

Why a future per image rather than per request: a request's images then split across
batches with no bookkeeping, and a batch is always exactly the first ``max_batch``
waiting images, whatever the requests' sizes.

``stop`` drains: the images queued before it are still run and answered, then the
worker thread ends.

Example:
    >>> batcher = DynamicBatcher(predictor.predict, max_batch=16, max_wait_ms=5)
    >>> await batcher.start()
    >>> probabilities = await batcher.predict(pixels)  # (N, H, W, 3) uint8 -> (N, classes)
    >>> await batcher.stop()
"""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import numpy as np

__all__ = ["BatcherStopped", "DynamicBatcher"]

logger = logging.getLogger(__name__)

_STOP = object()  # the queue's last entry: everything before it is run, then the batcher ends


class BatcherStopped(RuntimeError):
    """The batcher is not running (not started yet, or stopping): no image is accepted."""


class DynamicBatcher:
    """Groups the images of concurrent requests into batches for one model.

    Args:
        predict: called with a stacked batch, (n, H, W, 3), n <= ``max_batch``; returns an
            array of n rows (the model's probabilities). Always called from the same single
            worker thread, never concurrently.
        max_batch: the most images in one call of ``predict`` (>= 1).
        max_wait_ms: how long the first image of a batch waits for others (>= 0).

    Attributes:
        batches_run: calls of ``predict`` so far.
        images_predicted: images answered so far.
        images_pending: images accepted and not answered yet (queued, or in the batch being formed or run).
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], *, max_batch: int, max_wait_ms: float):
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a whole number of images, at least 1. Received: max_batch={max_batch!r}")
        if isinstance(max_wait_ms, bool) or not isinstance(max_wait_ms, (int, float)) or not max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms must be a number of milliseconds, at least 0. Received: "
                             f"max_wait_ms={max_wait_ms!r}")
        self.predict_batch, self.max_batch, self.max_wait_ms = predict, max_batch, float(max_wait_ms)
        self.batches_run = 0
        self.images_predicted = 0
        self._queue: Optional[asyncio.Queue] = None
        self._task: Optional[asyncio.Task] = None
        self._executor: Optional[ThreadPoolExecutor] = None
        self._accepting = False
        self._in_batch = 0

    @property
    def images_pending(self) -> int:
        """Images accepted and not answered yet."""
        return (self._queue.qsize() if self._queue is not None else 0) + self._in_batch

    @property
    def running(self) -> bool:
        """Whether images are accepted (between ``start`` and ``stop``)."""
        return self._accepting

    async def start(self) -> None:
        """Starts the batcher task and its worker thread, in the running event loop."""
        if self._task is not None:
            raise RuntimeError("the batcher is already started; stop it first")
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._task = asyncio.create_task(self._run(), name="batcher")
        self._accepting = True

    async def stop(self) -> None:
        """Stops accepting images, runs those already queued, then ends the task and its thread."""
        if self._task is None:
            return
        self._accepting = False
        self._queue.put_nowait(_STOP)
        try:
            await self._task
        finally:
            self._fail_waiting(BatcherStopped("the server is stopping"))
            self._executor.shutdown(wait=True)
            self._task = self._executor = None

    async def predict(self, images: np.ndarray) -> np.ndarray:
        """The rows of ``predict`` for ``images`` (N, H, W, 3), in order, computed in the batches
        the batcher forms with other requests' images.

        Raises:
            BatcherStopped: the batcher is not running.
            Exception: what ``predict`` raised on a batch holding one of these images.
        """
        if not self._accepting:
            raise BatcherStopped("the server is not accepting images (starting or stopping)")
        loop = asyncio.get_running_loop()
        futures = []
        for image in images:
            future = loop.create_future()
            self._queue.put_nowait((image, future))
            futures.append(future)
        rows = await asyncio.gather(*futures)
        return np.stack(rows) if rows else np.zeros((0, 0), "float32")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is _STOP:
                break
            batch, deadline = [first], loop.time() + self.max_wait_ms / 1000
            self._in_batch = 1
            while len(batch) < self.max_batch:
                entry = await self._next_entry(deadline - loop.time())
                if entry is None:
                    break
                if entry is _STOP:
                    stopping = True  # run this batch, then end
                    break
                batch.append(entry)
                self._in_batch = len(batch)
            await self._run_batch(batch, loop)
            self._in_batch = 0

    async def _next_entry(self, seconds_left: float):
        """The next queued entry, waiting at most ``seconds_left``; None when none came."""
        if seconds_left <= 0:
            try:
                return self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return None
        try:  # (asyncio.wait_for: asyncio.timeout is Python 3.11's, and we support 3.10)
            return await asyncio.wait_for(self._queue.get(), seconds_left)
        except asyncio.TimeoutError:
            return None

    async def _run_batch(self, batch: list, loop: asyncio.AbstractEventLoop) -> None:
        batch = [(image, future) for image, future in batch if not future.done()]  # a client that left
        if not batch:
            return
        stacked = np.stack([image for image, _ in batch])
        try:
            rows = await loop.run_in_executor(self._executor, self.predict_batch, stacked)
            if len(rows) != len(batch):
                raise RuntimeError(f"the model returned {len(rows)} rows for a batch of {len(batch)} images")
        except Exception as error:  # the model's own failure: every request of the batch gets it
            logger.warning("the model failed on a batch of %d images (%s: %s)", len(batch), type(error).__name__,
                           str(error).splitlines()[0] if str(error) else "")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        self.batches_run += 1
        self.images_predicted += len(batch)
        for (_, future), row in zip(batch, rows):
            if not future.done():
                future.set_result(row)

    def _fail_waiting(self, error: BaseException) -> None:
        """Answers entries left in the queue (none after a clean drain) with ``error``."""
        while self._queue is not None and not self._queue.empty():
            entry = self._queue.get_nowait()
            if entry is not _STOP and not entry[1].done():
                entry[1].set_exception(error)
