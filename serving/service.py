"""What both transports share: the settings, the models and batcher, input checks, rendering.

HTTP, WebSocket and gRPC handlers all go through one `Service`: `options()` reads the output
choices, `check_header()` reads the image's size from its header, `admit()` takes its pixels
from the decoded-pixel budget (each raises a `RequestError` with the HTTP status to answer
when it must), `perceive()` decodes it within the request's deadline and queues it on the
shared batcher, and `render()` turns the `FrameResult` into the JSON of the API contract. The
transports only translate; each gives the admitted request's pixels back
(`Admitted.release()`) once its answer is made.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from perception.driving.bev import BirdsEye
from perception.driving.camera import CameraModel, load_camera
from perception.driving.planning import Planner
from perception.errors import PerceptionError
from perception.frames import Frame, SourceError, image_size
from perception.lane_lines import fit_lane_boundaries
from perception.modelspec import ModelSpec
from perception.overlay import render_bev
from perception.results import FrameResult, LaneBoundary, Plan
from perception.zoo.registry import default_models
from serving.batcher import (
    Batcher,
    BatchStats,
    DeadlineExceeded,
    InputRejected,
    QueueFull,
    ShuttingDown,
)
from serving.decoding import Decoded, decode, reduction, to_frame_pixels
from serving.metrics import Metrics
from serving.pixel_budget import Lease, PixelBudget

OUTPUTS = ("detections", "masks", "lanes", "plan", "bev")
DEFAULT_OUTPUTS = ("detections", "masks")
MASK_ENCODINGS = ("png", "rle")
MASK_SIZES = ("model", "frame")
LANE_OUTPUTS = frozenset({"lanes", "plan", "bev"})  # the outputs with fitted lane boundaries
HEADER_SCAN_BYTES = 16 * 1024  # where `check_header_quickly` looks for the image's size


class PerceiverLike(Protocol):
    specs: list[ModelSpec]

    def perceive(self, frames: list[Frame]) -> list[FrameResult]: ...

    def close(self) -> None: ...


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = None
    models: list[str] = field(default_factory=default_models)
    cameras: dict[str, Path] = field(default_factory=dict)  # name -> camera.yaml, first = default
    max_batch: int = 8
    max_delay_ms: float = 0.0  # 0: a batch never waits for company (see serving/batcher.py)
    batch_workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # batches at once
    queue_size: int = 64
    request_timeout_s: float = 30.0
    api_keys: tuple[str, ...] = ()  # empty: no authentication
    cors_origins: tuple[str, ...] = ()  # empty: no CORS headers at all
    max_body_bytes: int = 16 * 1024 * 1024
    max_pixels: int = 7680 * 4320  # 8K; larger headers are refused before decoding
    max_pixels_in_flight: int = 2 * 7680 * 4320  # all admitted requests' frames together
    # HTTP connections (serving/http/server.py)
    max_header_bytes: int = 16 * 1024  # request line and headers together
    max_headers: int = 100
    header_timeout_s: float = 10.0  # from a connection's (or a request's) first byte
    body_timeout_s: float = 60.0  # for the whole body, once the headers are in
    keep_alive_s: float = 5.0
    max_connections: int = 1000
    # gRPC (serving/grpc_limits.py)
    grpc_max_calls: int = 32  # concurrent calls, streams included; health checks never count
    grpc_max_streams: int = 8  # concurrent streaming calls (StreamPerceive, reflection)
    grpc_stream_idle_s: float = 60.0  # a stream with no message either way for this long ends
    grpc_open_reflection: bool = False  # with API keys, reflection needs a key unless opened


class RequestError(Exception):
    """A request the client must change; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class Overloaded(RequestError):
    """The server is busy (queue or pixel budget full): 503 with Retry-After, gRPC
    RESOURCE_EXHAUSTED."""

    def __init__(self, message: str) -> None:
        super().__init__(503, message, {"Retry-After": "1"})


@dataclass
class Admitted:
    """A request whose image header passed the checks and whose pixels are leased."""

    data: bytes
    width: int  # as the header says
    height: int
    deadline: float  # time.monotonic() by which its result must be there
    lease: Lease
    decoding: Future | None = None  # the decode job, once started
    queued: Future | None = None  # the frame on the batcher, once the decode queued it

    def remaining_s(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def release(self) -> None:
        """Give the pixels back once nothing holds them any more: now, or when the decode
        and then the batcher (a request that timed out may still wait there) are done."""
        if self.decoding is None:
            self.lease.release()
            return

        def decoded(_: Future) -> None:
            if self.queued is None:
                self.lease.release()
            else:
                self.queued.add_done_callback(lambda _: self.lease.release())

        self.decoding.add_done_callback(decoded)


@dataclass
class Perceived:
    result: FrameResult  # in the frame's own pixels
    decode_s: float  # decoding the image


@dataclass(frozen=True)
class Options:
    outputs: frozenset[str]
    mask_encoding: str
    camera: str | None
    mask_size: str = "model"

    @property
    def costly(self) -> bool:
        """Whether rendering the answer takes milliseconds (fitting lanes, planning, frame-size
        masks): worth a thread off the event loop. Detections and model-size masks are not."""
        return bool(self.outputs & LANE_OUTPUTS) or (
            "masks" in self.outputs and self.mask_size == "frame")


class Service:
    """The models, the batcher and the limits of one server process."""

    def __init__(self, config: ServeConfig, make_perceiver: Callable[[], PerceiverLike],
                 metrics: Metrics | None = None,
                 on_perceived: Callable[[Frame, FrameResult], None] | None = None) -> None:
        """`on_perceived` sees every perceived frame and its result (as decoded, before they
        are scaled to the request's frame), on the batch's thread: it must not block (the live
        Foxglove publisher drops frames for its viewer instead)."""
        self.config = config
        self.make_perceiver = make_perceiver
        self.on_perceived = on_perceived
        self.metrics = metrics or Metrics()
        self.cameras: dict[str, CameraModel] = {  # a bad camera file fails here, at startup
            name: load_camera(path) for name, path in config.cameras.items()}
        self.perceiver: PerceiverLike | None = None
        self.batcher: Batcher | None = None
        self.load_error: str | None = None
        self.pixels = PixelBudget(config.max_pixels_in_flight)
        self._decoders = ThreadPoolExecutor(max_workers=os.cpu_count() or 1,
                                            thread_name_prefix="decode")
        self._ready = threading.Event()
        self._ids = count()

    # --- life cycle -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def load(self) -> None:
        """Load the models, warm them up on one frame, start the batcher; then ready."""
        try:
            perceiver = self.make_perceiver()
            warm = Frame(np.zeros((360, 640, 3), np.uint8), 0.0, 0, "warm-up")
            perceiver.perceive([warm])
        except Exception as error:  # reported by /readyz; the process stays up to say so
            self.load_error = f"{type(error).__name__}: {error}"
            raise
        self.perceiver = perceiver
        self.batcher = Batcher(self._perceive, max_batch=self.config.max_batch,
                               max_delay_ms=self.config.max_delay_ms,
                               queue_size=self.config.queue_size, on_batch=self._on_batch,
                               probe=warm, workers=self.config.batch_workers)
        self._ready.set()

    def wait_ready(self, timeout_s: float | None = None) -> bool:
        return self._ready.wait(timeout_s)

    def close(self) -> None:
        """Stop taking requests, finish the queued ones, release the models."""
        self._ready.clear()
        self._decoders.shutdown(wait=True)  # decodes in progress still queue their frames
        if self.batcher is not None:
            self.batcher.close()
        if self.perceiver is not None:
            self.perceiver.close()

    def model_specs(self) -> list[ModelSpec]:
        return self.perceiver.specs if self.perceiver is not None else []

    def check_ready(self) -> None:
        """503 until the models are loaded: with Retry-After while they load; without it,
        and with the reason, when loading failed (e.g. a model failed its sha256 check),
        since retrying cannot help until the server is restarted with good models."""
        if self.batcher is not None:
            return
        if self.load_error:
            raise RequestError(503, f"the models failed to load: {self.load_error}")
        raise RequestError(503, "models are loading", {"Retry-After": "1"})

    # --- one request ------------------------------------------------------------------------

    def options(self, outputs: str | list[str] | None, mask_encoding: str | None,
                camera: str | None, mask_size: str | None = None) -> Options:
        if outputs is None or outputs == []:
            chosen = set(DEFAULT_OUTPUTS)
        else:
            items = outputs.split(",") if isinstance(outputs, str) else outputs
            chosen = {item.strip() for item in items if item.strip()}
            unknown = sorted(chosen - set(OUTPUTS))
            if unknown or not chosen:
                raise RequestError(400, f"unknown outputs {unknown or [outputs]}; choose from "
                                        f"{', '.join(OUTPUTS)}")
        encoding = mask_encoding or "png"
        if encoding not in MASK_ENCODINGS:
            raise RequestError(400, f"mask_encoding {encoding!r} is not one of "
                                    f"{', '.join(MASK_ENCODINGS)}")
        size = mask_size or "model"
        if size not in MASK_SIZES:
            raise RequestError(400, f"mask_size {size!r} is not one of {', '.join(MASK_SIZES)}")
        if camera and camera not in self.cameras:
            known = ", ".join(self.cameras) or "none were configured"
            raise RequestError(400, f"unknown camera {camera!r} (cameras: {known})")
        if chosen & {"plan", "bev"} and not self.cameras:
            raise RequestError(400, "plan and bev outputs need a camera: start the server with "
                                    "--camera NAME=camera.yaml")
        return Options(frozenset(chosen), encoding, camera or next(iter(self.cameras), None),
                       size)

    def check_header(self, data: bytes) -> tuple[int, int]:
        """The image's (width, height) from its header, before any pixel is decoded: 400
        empty, not an image or no pixels; 413 over `max_body_bytes` or `max_pixels`."""
        self._check_length(data)
        try:
            width, height = image_size(data, "image")
        except SourceError as error:
            raise RequestError(400, str(error)) from None
        return self._check_size(width, height)

    def check_header_quickly(self, data: bytes) -> tuple[int, int] | None:
        """`check_header` for a header in the first `HEADER_SCAN_BYTES` (any real image's: a
        few microseconds, fit for the event loop); None when it is not there, or the data is
        no image: `check_header` then says which, off the loop (walking a crafted 16 MB JPEG
        of tiny segments takes seconds)."""
        self._check_length(data)
        try:
            width, height = image_size(data[:HEADER_SCAN_BYTES], "image")
        except SourceError:
            return None
        return self._check_size(width, height)

    def _check_length(self, data: bytes) -> None:
        if not data:
            raise RequestError(400, "image is empty (0 bytes)")
        if len(data) > self.config.max_body_bytes:
            raise RequestError(413, f"image is {len(data)} bytes; the limit is "
                                    f"{self.config.max_body_bytes}")

    def _check_size(self, width: int, height: int) -> tuple[int, int]:
        if width <= 0 or height <= 0:
            raise RequestError(400, f"image header says {width}x{height} pixels")
        if width * height > self.config.max_pixels:
            raise RequestError(413, f"image is {width}x{height} pixels; the limit is "
                                    f"{self.config.max_pixels} pixels")
        return width, height

    def admit(self, data: bytes, size: tuple[int, int], timeout_s: float | None = None
              ) -> Admitted:
        """Lease the pixels of an image of `size` (from `check_header`): 503 when not ready
        or the decoded-pixel budget is full. The deadline (`timeout_s`, at most the request
        timeout) starts here and covers decoding, queueing and the models. Cheap and
        non-blocking, so that the event loop calls it: a lease is never lost in between."""
        self.check_ready()
        width, height = size
        lease = self.pixels.lease(width * height)
        if lease is None:
            self.metrics.dropped.labels(reason="pixel_budget").inc()
            raise Overloaded(f"too many image pixels in flight ({self.pixels.in_use} of "
                             f"{self.pixels.limit}); retry shortly")
        timeout = self.config.request_timeout_s
        if timeout_s is not None:
            timeout = min(timeout, timeout_s)
        return Admitted(data, width, height, time.monotonic() + timeout, lease)

    def perceive(self, admitted: Admitted, source: str, index: int | None = None
                 ) -> Future[Perceived]:
        """Decode the admitted image (on the decode threads) and queue it on the batcher; the
        future resolves to its result in frame pixels, or raises a RequestError (400 the
        models cannot process it, 503, 504) or, for a bug, the error itself."""
        answer: Future[Perceived] = Future()
        try:
            admitted.decoding = self._decoders.submit(self._decode_and_queue, admitted, source,
                                                      index, answer)
        except RuntimeError:  # the decode threads are stopped: the server is shutting down
            raise RequestError(503, "the server is shutting down") from None
        return answer

    def wait(self, answer: Future[Perceived], admitted: Admitted) -> Perceived:
        """Block until the answer is there, within the admitted request's deadline (504)."""
        try:
            return answer.result(admitted.remaining_s())
        except TimeoutError:
            answer.cancel()
            raise self.timed_out() from None

    def timed_out(self) -> RequestError:
        self.metrics.dropped.labels(reason="deadline").inc()
        return RequestError(504, f"no result within {self.config.request_timeout_s:g} s")

    def _decode_and_queue(self, admitted: Admitted, source: str, index: int | None,
                          answer: Future[Perceived]) -> None:
        if not answer.set_running_or_notify_cancel():
            return  # the caller gave up before its turn came
        try:
            started = time.perf_counter()
            factor = reduction(admitted.width, admitted.height, self.model_specs())
            try:
                decoded = decode(admitted.data, admitted.width, admitted.height, factor,
                                 self.config.max_pixels)
            except SourceError as error:
                raise RequestError(400, str(error)) from None
            decode_s = time.perf_counter() - started
            if admitted.remaining_s() <= 0:
                raise RequestError(504, f"decoding took past the request's deadline "
                                        f"({self.config.request_timeout_s:g} s)")
            admitted.queued = self._queue(decoded.image, source, index, admitted.remaining_s())
        except Exception as error:  # RequestError, or a bug the transport reports
            answer.set_exception(error)
            return
        admitted.queued.add_done_callback(lambda done: _settle(answer, done, decoded, decode_s))

    def _queue(self, image: np.ndarray, source: str, index: int | None, timeout_s: float
               ) -> Future[FrameResult]:
        """Queue one image on the batcher; the future resolves to its FrameResult."""
        self.check_ready()
        assert self.batcher is not None
        frame = Frame(image, timestamp=time.time(),
                      index=next(self._ids) if index is None else index, source=source)
        try:
            future = self.batcher.submit(frame, timeout_s)
        except QueueFull as error:
            self.metrics.dropped.labels(reason="queue_full").inc()
            raise Overloaded(str(error)) from None
        except ShuttingDown as error:  # after SIGTERM: in-flight requests finish, new ones not
            raise RequestError(503, str(error)) from None
        self.metrics.queue_depth.set(self.batcher.depth)
        return future

    def planner(self, options: Options, current: Planner | None = None) -> Planner | None:
        """The planner for one frame's answer, when its outputs need a plan.

        A single request gets a fresh one. A stream passes the planner it holds (`current`,
        None at first) and keeps what comes back, so its plan carries from frame to frame: it
        is made for the first frame that asks for a plan (once the models are loaded, since
        the planner needs to know them) and again only if the stream names another camera.
        """
        if not options.outputs & {"plan", "bev"}:
            return current
        camera = self.cameras[options.camera]
        if current is not None and current.camera is camera:
            return current
        try:
            return Planner.for_models(camera, self.model_specs())
        except PerceptionError as error:  # e.g. no segmentation model to plan on
            raise RequestError(400, f"camera {options.camera!r}: {error}") from None

    def render(self, result: FrameResult, options: Options, planner: Planner | None = None
               ) -> dict[str, Any]:
        """The API's JSON for one result, with only the outputs asked for.

        With `plan` or `bev`, the planner runs here, at answer time: a frame that waited past
        the planner's deadline gets a safe stop ("perception is stale"), never a late guess.
        A stream passes its planner (see `planner`); a single request gets a fresh one. Lane
        boundaries are fitted here too, only for the outputs that have them (the planner fits
        them itself).
        """
        bev = None
        if options.outputs & {"plan", "bev"}:
            if planner is None:  # a single request is a still, judged alone
                planner = self.planner(options)
                planner.reset(still=True)
            try:
                planner.step(result, now=time.time())
            except PerceptionError as error:  # e.g. the frame size is not the camera's
                raise RequestError(400, f"camera {options.camera!r}: {error}") from None
            if "bev" in options.outputs and planner.bev is not None:
                bev = bev_payload(planner.bev, result.plan,
                                  lane_boundaries=result.lane_boundaries)
        elif "lanes" in options.outputs and result.lanes is not None \
                and not result.lane_boundaries:
            result.lane_boundaries = fit_lane_boundaries(result.lanes, result.width,
                                                         result.height)
        data = result.model_dump(mode="json")
        if "detections" not in options.outputs:
            data["detections"] = []
        data["masks"] = (result.encode_masks(options.mask_encoding, options.mask_size)
                         .model_dump(mode="json") if "masks" in options.outputs else None)
        if not options.outputs & LANE_OUTPUTS:
            data["lane_boundaries"] = []
        if "plan" not in options.outputs:
            data["plan"] = None
        data["bev"] = bev
        return data

    def _perceive(self, frames: list[Frame]) -> list[FrameResult]:
        assert self.perceiver is not None
        results = self.perceiver.perceive(frames)
        for result in results[:1]:  # stage times are per batch: count each batch once
            for stage, ms in result.timings_ms.items():
                self.metrics.stage_seconds.labels(stage=stage).observe(ms / 1e3)
        if self.on_perceived is not None:
            for frame, result in zip(frames, results, strict=True):
                self.on_perceived(frame, result)
        return results

    def _on_batch(self, stats: BatchStats) -> None:
        self.metrics.batch_size.observe(stats.size)
        for wait in stats.queue_wait_s:
            self.metrics.stage_seconds.labels(stage="queue").observe(wait)
        self.metrics.stage_seconds.labels(stage="batch").observe(stats.run_s)
        if stats.expired:
            self.metrics.dropped.labels(reason="deadline").inc(stats.expired)
        if self.batcher is not None:
            self.metrics.queue_depth.set(self.batcher.depth)

    # --- decoded pixels and raw tensors (the v2 protocol, serving/kserve/) ------------------

    def admit_pixels(self, image: np.ndarray, timeout_s: float | None = None) -> Admitted:
        """`admit` for an image already decoded (BGR): its size is checked as a header's."""
        height, width = image.shape[:2]
        return self.admit(b"", self._check_size(width, height), timeout_s)

    def perceive_pixels(self, admitted: Admitted, image: np.ndarray, source: str
                        ) -> Future[Perceived]:
        """`perceive` for that image: queued on the batcher as it is, with nothing to decode
        (503 at once when the queue is full)."""
        answer: Future[Perceived] = Future()
        answer.set_running_or_notify_cancel()
        admitted.decoding = Future()  # done: `release` then waits for the batcher alone
        admitted.decoding.set_result(None)
        admitted.queued = self._queue(image, source, None, admitted.remaining_s())
        decoded = Decoded(image, image.shape[1], image.shape[0])
        admitted.queued.add_done_callback(lambda done: _settle(answer, done, decoded, 0.0))
        return answer

    def lease_tensor_bytes(self, nbytes: int) -> Lease:
        """A raw tensor's memory from the decoded-pixel budget (a decoded pixel is 3 bytes):
        503 when not ready or the budget is full. Release it once the tensor is answered."""
        self.check_ready()
        lease = self.pixels.lease(max(1, nbytes // 3))
        if lease is None:
            self.metrics.dropped.labels(reason="pixel_budget").inc()
            raise Overloaded(f"too many image pixels in flight ({self.pixels.in_use} of "
                             f"{self.pixels.limit}); retry shortly")
        return lease


def _settle(answer: Future[Perceived], done: Future[FrameResult], decoded: Decoded,
            decode_s: float) -> None:
    """The batcher's outcome for one frame -> the service's answer for its request."""
    try:
        result = done.result()
    except DeadlineExceeded as error:
        answer.set_exception(RequestError(504, str(error)))
    except InputRejected as error:
        answer.set_exception(RequestError(400, str(error)))
    except Exception as error:  # the models failed: the transport reports an internal error
        answer.set_exception(error)
    else:
        answer.set_result(Perceived(to_frame_pixels(result, decoded), decode_s))


def bev_payload(bev: BirdsEye, plan: Plan | None = None, scale: int = 2,
                lane_boundaries: Sequence[LaneBoundary] = ()) -> dict:
    """The `bev` output: the bird's-eye picture as base64 PNG and where it lies in metres."""
    ok, png = cv2.imencode(".png", render_bev(bev, plan, scale, lane_boundaries=lane_boundaries))
    assert ok
    g = bev.grid
    return {"png": base64.b64encode(png.tobytes()).decode("ascii"),
            "metres_per_pixel": g.metres_per_pixel / scale,
            "x_range": [g.x_min, g.x_max], "y_range": [g.y_min, g.y_max]}
