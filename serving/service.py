"""What both transports share: the settings, the models and batcher, input checks, rendering.

HTTP, WebSocket and gRPC handlers all go through one `Service`: `check_image()` turns request
bytes into a BGR image (or a `RequestError` with the HTTP status to answer), `options()` reads
the output choices, `submit()` queues the frame on the shared batcher and `render()` turns a
`FrameResult` into the JSON of the API contract. The transports only translate.
"""

from __future__ import annotations

import base64
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
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
from perception.frames import Frame, SourceError, decode_image
from perception.modelspec import ModelSpec
from perception.overlay import render_bev
from perception.results import FrameResult, Plan
from perception.zoo.registry import default_models
from serving.batcher import Batcher, BatchStats, QueueFull, ShuttingDown
from serving.metrics import Metrics

OUTPUTS = ("detections", "masks", "plan", "bev")
DEFAULT_OUTPUTS = ("detections", "masks")
MASK_ENCODINGS = ("png", "rle")


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
    max_delay_ms: float = 5.0
    queue_size: int = 64
    request_timeout_s: float = 30.0
    api_keys: tuple[str, ...] = ()  # empty: no authentication
    cors_origins: tuple[str, ...] = ()  # empty: no CORS headers at all
    max_body_bytes: int = 16 * 1024 * 1024
    max_pixels: int = 7680 * 4320  # 8K; larger headers are refused before decoding


class RequestError(Exception):
    """A request the client must change; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True)
class Options:
    outputs: frozenset[str]
    mask_encoding: str
    camera: str | None


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG or JPEG header, without decoding the pixels."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise RequestError(400, "PNG header is truncated")
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    raise RequestError(400, "body is not a JPEG or PNG image")


_JPEG_FRAME_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                       0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """Walk the JPEG marker segments to the start-of-frame, which holds the dimensions."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            break
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            break
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in _JPEG_FRAME_MARKERS:
            if i + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + length
    raise RequestError(400, "JPEG header is truncated or has no frame header")


class Service:
    """The models, the batcher and the limits of one server process."""

    def __init__(self, config: ServeConfig, make_perceiver: Callable[[], PerceiverLike],
                 metrics: Metrics | None = None) -> None:
        self.config = config
        self.make_perceiver = make_perceiver
        self.metrics = metrics or Metrics()
        self.cameras: dict[str, CameraModel] = {  # a bad camera file fails here, at startup
            name: load_camera(path) for name, path in config.cameras.items()}
        self.perceiver: PerceiverLike | None = None
        self.batcher: Batcher | None = None
        self.load_error: str | None = None
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
                               queue_size=self.config.queue_size, on_batch=self._on_batch)
        self._ready.set()

    def wait_ready(self, timeout_s: float | None = None) -> bool:
        return self._ready.wait(timeout_s)

    def close(self) -> None:
        """Stop taking requests, finish the queued ones, release the models."""
        self._ready.clear()
        if self.batcher is not None:
            self.batcher.close()
        if self.perceiver is not None:
            self.perceiver.close()

    def model_specs(self) -> list[ModelSpec]:
        return self.perceiver.specs if self.perceiver is not None else []

    # --- one request ------------------------------------------------------------------------

    def options(self, outputs: str | list[str] | None, mask_encoding: str | None,
                camera: str | None) -> Options:
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
        if camera and camera not in self.cameras:
            known = ", ".join(self.cameras) or "none were configured"
            raise RequestError(400, f"unknown camera {camera!r} (cameras: {known})")
        if chosen & {"plan", "bev"} and not self.cameras:
            raise RequestError(400, "plan and bev outputs need a camera: start the server with "
                                    "--camera NAME=camera.yaml")
        return Options(frozenset(chosen), encoding, camera or next(iter(self.cameras), None))

    def check_image(self, data: bytes) -> np.ndarray:
        """Bytes -> BGR image, refusing oversized dimensions before the pixels are decoded."""
        if not data:
            raise RequestError(400, "image is empty (0 bytes)")
        if len(data) > self.config.max_body_bytes:
            raise RequestError(413, f"image is {len(data)} bytes; the limit is "
                                    f"{self.config.max_body_bytes}")
        width, height = image_size(data)
        if width == 0 or height == 0:
            raise RequestError(400, f"image header says {width}x{height} pixels")
        if width * height > self.config.max_pixels:
            raise RequestError(413, f"image is {width}x{height} pixels; the limit is "
                                    f"{self.config.max_pixels} pixels")
        try:
            return decode_image(data)
        except SourceError as error:
            raise RequestError(400, str(error)) from None

    def submit(self, image: np.ndarray, source: str, index: int | None = None) -> Future:
        """Queue one image on the batcher; the future resolves to its FrameResult."""
        if self.batcher is None:  # created once the models are loaded and warm
            raise RequestError(503, "models are loading", {"Retry-After": "1"})
        frame = Frame(image, timestamp=time.time(),
                      index=next(self._ids) if index is None else index, source=source)
        try:
            future = self.batcher.submit(frame, self.config.request_timeout_s)
        except QueueFull as error:
            self.metrics.dropped.labels(reason="queue_full").inc()
            raise RequestError(503, str(error), {"Retry-After": "1"}) from None
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
        A stream passes its planner (see `planner`); a single request gets a fresh one.
        """
        bev = None
        if options.outputs & {"plan", "bev"}:
            planner = planner or self.planner(options)
            try:
                planner.step(result, now=time.time())
            except PerceptionError as error:  # e.g. the frame size is not the camera's
                raise RequestError(400, f"camera {options.camera!r}: {error}") from None
            if "bev" in options.outputs and planner.bev is not None:
                bev = bev_payload(planner.bev, result.plan)
        data = result.model_dump(mode="json")
        if "detections" not in options.outputs:
            data["detections"] = []
        data["masks"] = (result.encode_masks(options.mask_encoding).model_dump(mode="json")
                         if "masks" in options.outputs else None)
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


def bev_payload(bev: BirdsEye, plan: Plan | None = None, scale: int = 2) -> dict:
    """The `bev` output: the bird's-eye picture as base64 PNG and where it lies in metres."""
    ok, png = cv2.imencode(".png", render_bev(bev, plan, scale))
    assert ok
    g = bev.grid
    return {"png": base64.b64encode(png.tobytes()).decode("ascii"),
            "metres_per_pixel": g.metres_per_pixel / scale,
            "x_range": [g.x_min, g.x_max], "y_range": [g.y_min, g.y_max]}
