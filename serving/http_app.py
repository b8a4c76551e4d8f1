"""The HTTP and WebSocket API (FastAPI), built to the contract in docs/serving.md.

`create_app(service)` returns the ASGI app. Its lifespan loads the models in a background thread
(so `/healthz` answers at once and `/readyz` says when the models are warm), starts the gRPC
server in the same process when `--grpc-port` is set, and on shutdown stops gRPC with a grace
period and lets the batcher finish what it accepted. Every error is `{"error", "status"}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from perception.driving.planning import PlannerState
from perception.results import FrameResult
from serving.batcher import DeadlineExceeded
from serving.service import (
    DEFAULT_OUTPUTS,
    Options,
    RequestError,
    Service,
    key_ok,
    presented_key,
)

log = logging.getLogger("perception.serving")
STATIC = Path(__file__).with_name("static")
OPEN_PATHS = ("/healthz", "/readyz")
PROTECTED_PREFIXES = ("/v1/", "/metrics")


# --- schema (documentation of the JSON the handlers build) -----------------------------------

class ErrorBody(BaseModel):
    error: str = Field(examples=["image could not be decoded as an image (truncated or not "
                                 "JPEG/PNG)"])
    status: int = Field(examples=[400])


class Bev(BaseModel):
    png: str = Field(description="Bird's-eye picture, PNG base64")
    metres_per_pixel: float
    x_range: tuple[float, float] = Field(description="metres, x forward (vehicle frame)")
    y_range: tuple[float, float] = Field(description="metres, y left (vehicle frame)")


class PerceiveResponse(FrameResult):
    """The result schema, plus the bird's-eye picture when `outputs` has `bev`."""

    bev: Bev | None = None


class ModelInfo(BaseModel):
    name: str
    task: str
    classes: list[str]
    input: dict[str, Any]


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


RESPONSE_EXAMPLE = {
    "frame_index": 0, "source": "http", "timestamp": 1763870000.0, "width": 1280, "height": 720,
    "detections": [{"class_id": 2, "label": "car", "score": 0.87,
                    "box": [512.0, 380.5, 640.2, 470.0], "category": "car"}],
    "timings_ms": {"yolox-nano/inference": 18.2, "twinlitenet/inference": 95.1, "total": 120.4},
    "models": ["yolox-nano", "twinlitenet"],
    "masks": {"drivable": {"encoding": "rle", "width": 1280, "height": 720, "data": None,
                           "counts": [460800, 1280, 459520]}, "lanes": None},
    "plan": None, "bev": None,
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in codes}


IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "description": "A JPEG or PNG, as the raw body or as the multipart field `image`.",
        "content": {
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["image"],
                "properties": {"image": {"type": "string", "format": "binary"}}}},
        },
    }
}


# --- middleware: body limit, API keys, request metrics ---------------------------------------

class Guard:
    """Pure ASGI middleware: request metrics, API keys, and the body-size limit (413)."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}
        config = self.service.config

        async def send_recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            path = scope["path"]
            if (config.api_keys and path.startswith(PROTECTED_PREFIXES)
                    and not key_ok(presented_key(headers), config.api_keys)):
                await _send_error(send_recording, 401, "missing or wrong API key (send "
                                  "'Authorization: Bearer KEY' or 'x-api-key: KEY')",
                                  {"WWW-Authenticate": "Bearer"})
                return
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > config.max_body_bytes:
                await _send_error(send_recording, 413, f"body is {length} bytes; the limit is "
                                  f"{config.max_body_bytes}")
                return
            await self.app(scope, _limited(receive, config.max_body_bytes), send_recording)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", "unmatched")
            metrics = self.service.metrics
            metrics.requests.labels(route=label, code=str(status["code"])).inc()
            metrics.latency.labels(route=label).observe(time.perf_counter() - started)


def _limited(receive: Receive, limit: int) -> Receive:
    """Count body bytes as they arrive (chunked uploads have no Content-Length)."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HTTPException(413, f"body is over the limit of {limit} bytes")
        return message

    return wrapped


async def _send_error(send: Send, status: int, message: str,
                      headers: dict[str, str] | None = None) -> None:
    response = error_response(status, message, headers)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def error_response(status: int, message: str, headers: dict[str, str] | None = None
                   ) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status,
                        headers=headers)


def _validation_message(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item.get("loc", ()))
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


# --- the app -------------------------------------------------------------------------------

def create_app(service: Service, static_dir: Path = STATIC) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = threading.Thread(target=_load_logged, args=(service,), name="model-loader",
                                  daemon=True)
        loader.start()
        grpc_server = None
        if service.config.grpc_port is not None:
            from serving.grpc_server import start_grpc

            grpc_server = start_grpc(service, service.config.grpc_port)
            app.state.grpc = grpc_server
        try:
            yield
        finally:
            if grpc_server is not None:
                await asyncio.to_thread(grpc_server.stop, 10.0)
            await asyncio.to_thread(loader.join)
            await asyncio.to_thread(service.close)

    app = FastAPIOffline(
        title="Perception service",
        version="1.0",
        description="Camera frames in; detections, drivable-area and lane masks (and a plan) "
                    "out. See docs/serving.md.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(Guard, service=service)
    if service.config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(service.config.cors_origins),
                           allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "x-api-key", "content-type"])

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return error_response(error.status_code, str(error.detail), error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(422, _validation_message(error))

    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError) -> JSONResponse:
        return error_response(error.status, error.message, error.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        log.exception("internal error on %s", request.url.path)
        return error_response(500, "internal server error (see the server log)")

    @app.get("/healthz", summary="The process is alive",
             responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}})
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Models loaded and warmed up", responses={
        200: {"content": {"application/json": {"example": {"status": "ready"}}}},
        503: {"content": {"application/json": {"example": {"status": "loading"}}}}})
    async def readyz() -> JSONResponse:
        if service.ready:
            return JSONResponse({"status": "ready"})
        if service.load_error:
            return JSONResponse({"status": "failed", "error": service.load_error}, 503)
        return JSONResponse({"status": "loading"}, 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}}}, **_errors(401)})
    async def metrics() -> Response:
        service.metrics.queue_depth.set(service.batcher.depth if service.batcher else 0)
        body, content_type = service.metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get("/v1/models", response_model=ModelsResponse, summary="The loaded models",
             responses=_errors(401, 503))
    async def models() -> dict[str, Any]:
        if not service.ready:
            raise RequestError(503, "models are loading", {"Retry-After": "1"})
        return {"models": [{"name": spec.name, "task": spec.task, "classes": list(spec.classes),
                            "input": {"width": spec.input.width, "height": spec.input.height,
                                      "resize": spec.input.resize, "color": spec.input.color}}
                           for spec in service.model_specs()]}

    @app.post(
        "/v1/perceive", summary="Perceive one image",
        openapi_extra=IMAGE_BODY,
        responses={200: {"model": PerceiveResponse,
                         "content": {"application/json": {"example": RESPONSE_EXAMPLE}}},
                   **_errors(400, 401, 413, 415, 422, 503, 504)},
    )
    async def perceive(
        request: Request,
        outputs: str = Query(",".join(DEFAULT_OUTPUTS), description="Comma list of "
                             "detections, masks, plan, bev", examples=["detections,masks"]),
        mask_encoding: Literal["png", "rle"] = Query("png", description="How masks are encoded"),
        camera: str | None = Query(None, description="A camera the server was started with "
                                   "(--camera NAME=camera.yaml); default: the first"),
    ) -> JSONResponse:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in ("image/jpeg", "image/png", "multipart/form-data"):
            raise RequestError(415, f"content type {content_type or '(none)'!r} is not "
                                    "image/jpeg, image/png or multipart/form-data")
        options = service.options(outputs, mask_encoding, camera)
        data = await _read_image_bytes(request, content_type)
        body, _ = await _perceive(service, data, options, "http")
        return JSONResponse(body)

    @app.websocket("/v1/stream")
    async def stream(websocket: WebSocket, outputs: str = ",".join(DEFAULT_OUTPUTS),
                     mask_encoding: str = "png", camera: str | None = None,
                     api_key: str | None = None) -> None:
        if service.config.api_keys:
            key = presented_key(dict(websocket.headers)) or api_key
            if not key_ok(key, service.config.api_keys):
                await websocket.close(code=1008, reason="missing or wrong API key")
                return
        await websocket.accept()
        try:
            options = service.options(outputs, mask_encoding, camera)
        except RequestError as error:
            await websocket.send_json({"error": error.message, "status": error.status})
            await websocket.close(code=1008)
            return
        await _serve_stream(service, websocket, options)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        page = static_dir / "index.html"
        if not page.is_file():
            raise HTTPException(404, "no web page installed (serving/static/index.html)")
        return FileResponse(page)

    app.mount("/static", StaticFiles(directory=static_dir, check_dir=False), name="static")
    return app


def _load_logged(service: Service) -> None:
    try:
        service.load()
        log.info("models loaded and warmed up: %s", ", ".join(service.config.models))
    except Exception:
        log.exception("loading the models failed; /readyz reports it")


async def _read_image_bytes(request: Request, content_type: str) -> bytes:
    if content_type != "multipart/form-data":
        return await request.body()
    form = await request.form(max_files=1, max_fields=8)
    try:
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise RequestError(400, "multipart body has no file field 'image'")
        return await upload.read()
    finally:
        await form.close()


async def _perceive(service: Service, data: bytes, options: Options, source: str,
                    index: int | None = None, planner: PlannerState | None = None
                    ) -> tuple[dict[str, Any], PlannerState | None]:
    """Check, decode, batch, render (and plan): one image through the shared batcher."""
    t0 = time.perf_counter()
    image = await run_in_threadpool(service.check_image, data)
    t1 = time.perf_counter()
    future = service.submit(image, source, index)
    try:
        result = await asyncio.wait_for(asyncio.wrap_future(future),
                                        service.config.request_timeout_s)
    except (TimeoutError, DeadlineExceeded):
        service.metrics.dropped.labels(reason="deadline").inc()
        raise RequestError(504, f"no result within {service.config.request_timeout_s:g} s") \
            from None
    t2 = time.perf_counter()
    body, planner = await run_in_threadpool(service.render, result, options, planner)
    t3 = time.perf_counter()
    body["timings_ms"]["image_decode"] = (t1 - t0) * 1e3
    body["timings_ms"]["render"] = (t3 - t2) * 1e3
    service.metrics.stage_seconds.labels(stage="image_decode").observe(t1 - t0)
    service.metrics.stage_seconds.labels(stage="render").observe(t3 - t2)
    return body, planner


async def _serve_stream(service: Service, websocket: WebSocket, options: Options) -> None:
    """Answer frames in order; while one is processed only the newest waiting frame is kept."""
    latest: tuple[int, bytes | None] | None = None  # (sequence, payload); None payload = text
    dropped = 0
    arrived = asyncio.Event()
    closed = False
    planner: PlannerState | None = None  # the plan of one stream carries over frame to frame

    async def receive() -> None:
        nonlocal latest, dropped, closed
        sequence = 0
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if latest is not None:
                    dropped += 1
                    service.metrics.dropped.labels(reason="stream_newest_wins").inc()
                latest = (sequence, message.get("bytes"))
                sequence += 1
                arrived.set()
        finally:
            closed = True
            arrived.set()

    receiver = asyncio.create_task(receive())
    try:
        while True:
            await arrived.wait()
            arrived.clear()
            if closed or latest is None:
                if closed:
                    return
                continue
            (sequence, payload), latest = latest, None
            skipped, dropped = dropped, 0
            try:
                if payload is None:
                    raise RequestError(400, "send frames as binary JPEG/PNG messages")
                answer, planner = await _perceive(service, payload, options, "ws", sequence,
                                                  planner)
                answer.update(sequence=sequence, dropped=skipped)
            except RequestError as error:
                answer = {"error": error.message, "status": error.status, "sequence": sequence,
                          "dropped": skipped}
            await websocket.send_json(answer)
    except WebSocketDisconnect:
        return
    finally:
        receiver.cancel()
