"""Dynamic batching: many callers, one `perceive(frames)` call per batch.

Callers `submit()` a frame and get a `concurrent.futures.Future`. Batching never waits for
nothing: when the models are idle, a request is run at once, alone; requests that arrive while
the models are busy wait in the queue, and the next batch takes all of them (up to
`max_batch`). Only with `max_delay_ms` > 0 does a batch wait that long after its first request
for company. Up to `workers` batches run at once, each on its own thread (a model call runs
on one core, so a second batch keeps a second core busy); batches are gathered one at a time.

The queue is bounded: when it is full `submit()` raises `QueueFull` at once (HTTP 503, gRPC
RESOURCE_EXHAUSTED) instead of letting latency grow without limit. A request whose deadline
passes while it waits is failed with `DeadlineExceeded` and never run. `close()` stops
accepting and finishes everything already accepted. Batching off is `max_batch=1`.

One bad frame never fails its neighbours: when a batch fails, its frames are run again one by
one, so each caller gets its own result or its own error. A frame that fails alone while the
models still answer a known-good `probe` frame is the input's fault: its caller gets
`InputRejected` (HTTP 400, gRPC INVALID_ARGUMENT) with a readable message; otherwise the
models themselves failed and the caller gets the error as it was (HTTP 500, logged).

All transports share one batcher: FastAPI awaits the future with `asyncio.wrap_future`, the
gRPC handlers block on `future.result()` in their own threads.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from perception.frames import Frame
from perception.results import FrameResult

log = logging.getLogger("perception.serving")


class QueueFull(Exception):
    """The request queue is full; retry later."""


class ShuttingDown(Exception):
    """The server is stopping and takes no new requests."""


class DeadlineExceeded(Exception):
    """The request waited past its deadline and was not run."""


class InputRejected(Exception):
    """The models failed on this frame alone while they still process others: a bad input."""


@dataclass
class _Request:
    frame: Frame
    deadline: float  # time.monotonic() after which the request is not worth running
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)


@dataclass
class BatchStats:
    """What one batch looked like, reported to the `on_batch` hook (metrics)."""

    size: int
    queue_wait_s: list[float]
    run_s: float
    expired: int


class Batcher:
    def __init__(self, perceive: Callable[[list[Frame]], list[FrameResult]], max_batch: int = 8,
                 max_delay_ms: float = 0.0, queue_size: int = 64,
                 on_batch: Callable[[BatchStats], None] | None = None,
                 probe: Frame | None = None, workers: int = 1) -> None:
        if max_batch < 1 or queue_size < 1 or workers < 1 or max_delay_ms < 0:
            raise ValueError("max_batch, queue_size and workers must be >= 1, "
                             "max_delay_ms >= 0")
        self.perceive = perceive
        self.probe = probe  # a frame the models are known to process (the warm-up frame)
        self.max_batch = max_batch
        self.max_delay_s = max_delay_ms / 1000.0
        self.on_batch = on_batch
        self._queue: queue.Queue[_Request] = queue.Queue(maxsize=queue_size)
        self._accepting = True
        self._lock = threading.Lock()  # orders submit() against close()
        self._gathering = threading.Lock()  # one worker gathers a batch at a time
        self._workers = [threading.Thread(target=self._run, name=f"batcher-{i}", daemon=True)
                         for i in range(workers)]
        for worker in self._workers:
            worker.start()

    @property
    def depth(self) -> int:
        """Requests waiting (not counting the batch being run)."""
        return self._queue.qsize()

    def submit(self, frame: Frame, timeout_s: float = 30.0) -> Future:
        """Queue one frame; the future resolves to its FrameResult or raises."""
        request = _Request(frame, deadline=time.monotonic() + timeout_s)
        with self._lock:
            if not self._accepting:
                raise ShuttingDown("the server is shutting down")
            try:
                self._queue.put_nowait(request)
            except queue.Full:
                raise QueueFull(f"request queue is full ({self._queue.maxsize} waiting)") from None
        return request.future

    def close(self) -> None:
        """Stop accepting, run everything already queued, then stop the workers."""
        with self._lock:
            self._accepting = False
        for worker in self._workers:
            worker.join()

    def _run(self) -> None:
        while True:
            batch = self._collect()
            if batch is None:
                return
            if batch:
                self._run_batch(batch)

    def _collect(self) -> list[_Request] | None:
        """The next batch: the first request to come, with all that wait behind it (up to
        `max_batch`), and those that come within `max_delay_s` if asked to wait; None once
        closed and drained."""
        with self._gathering:
            try:
                first = self._queue.get(timeout=0.05)
            except queue.Empty:
                return None if not self._accepting else []
            batch = [first]
            until = time.monotonic() + self.max_delay_s
            while len(batch) < self.max_batch:
                left = until - time.monotonic()
                try:
                    batch.append(self._queue.get(timeout=left) if left > 0 else
                                 self._queue.get_nowait())
                except queue.Empty:
                    break
            return batch

    def _run_batch(self, batch: list[_Request]) -> None:
        now = time.monotonic()
        live: list[_Request] = []
        expired = 0
        for request in batch:
            if not request.future.set_running_or_notify_cancel():
                continue  # the caller gave up (cancelled) while it waited
            if now > request.deadline:
                request.future.set_exception(DeadlineExceeded(
                    f"request waited {now - request.enqueued:.2f} s in the queue, past its "
                    "deadline"))
                expired += 1
                continue
            live.append(request)
        if not live:
            return
        started = time.monotonic()
        try:
            results = self._perceive([request.frame for request in live])
        except Exception as error:
            self._isolate(live, error)
        else:
            for request, result in zip(live, results, strict=True):
                request.future.set_result(result)
        if self.on_batch is not None:
            self.on_batch(BatchStats(size=len(live),
                                     queue_wait_s=[started - r.enqueued for r in live],
                                     run_s=time.monotonic() - started, expired=expired))

    def _perceive(self, frames: list[Frame]) -> list[FrameResult]:
        results = self.perceive(frames)
        if len(results) != len(frames):
            raise RuntimeError(f"perceive returned {len(results)} results for {len(frames)} "
                               "frames")
        return results

    def _isolate(self, batch: list[_Request], error: Exception) -> None:
        """After a failed batch: run its frames one by one; each failure is its own caller's."""
        failed: list[tuple[_Request, Exception]] = []
        if len(batch) == 1:
            failed.append((batch[0], error))
        else:
            for request in batch:
                try:
                    (result,) = self._perceive([request.frame])
                except Exception as alone:
                    failed.append((request, alone))
                else:
                    request.future.set_result(result)
        if not failed:
            return
        models_work = self._probe_passes()
        for request, alone in failed:
            frame = request.frame
            log.warning("frame %dx%d failed in the models: %s: %s", frame.width, frame.height,
                        type(alone).__name__, str(alone).splitlines()[0] if str(alone) else "")
            if models_work:
                request.future.set_exception(InputRejected(
                    f"the models cannot process this {frame.width}x{frame.height} image"))
            else:
                request.future.set_exception(alone)

    def _probe_passes(self) -> bool:
        """Whether the models still process the known-good probe frame."""
        if self.probe is None:
            return False
        try:
            self._perceive([self.probe])
        except Exception:
            log.exception("the models fail on the probe frame too")
            return False
        return True
