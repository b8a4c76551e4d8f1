"""The HTTP and WebSocket API (FastAPI), built to the contract in docs/serving.md.

`create_app(service)` returns the ASGI app. Its lifespan loads the models in a background thread
(so `/healthz` answers at once and `/readyz` says when the models are warm), starts the gRPC
server in the same process when `--grpc-port` is set, and on shutdown stops gRPC with a grace
period and lets the batcher finish what it accepted. Every error is `{"error", "status"}`.
With API keys, `/v1/*`, `/v2/*` (the KServe v2 protocol, routes/kserve.py) and `/metrics` need
one; health (`/healthz`, `/readyz`, `/v2/health/*`), the pages and the docs stay open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from serving.http.dependencies import require_api_key
from serving.http.errors import add_error_handlers
from serving.http.middleware import JsonCORS, RequestLimits, RequestMetrics
from serving.http.routes import health, kserve, metrics, models, perceive, stream
from serving.http.routes.viewer import viewer_router
from serving.service import Service

log = logging.getLogger("perception.serving")
STATIC = Path(__file__).resolve().parents[1] / "static"


def create_app(service: Service, static_dir: Path = STATIC) -> FastAPI:
    app = FastAPIOffline(
        title="Perception service",
        version="1.0",
        description="Camera frames in; detections, drivable-area and lane masks (and a plan) "
                    "out. See docs/serving.md.",
        lifespan=_lifespan,
    )
    app.state.service = service
    # The last added runs first: CORS (answers preflights), metrics (of every answer, 413s
    # included), then the request limits.
    config = service.config
    app.add_middleware(RequestLimits, max_body_bytes=config.max_body_bytes,
                       max_headers=config.max_headers, body_timeout_s=config.body_timeout_s)
    app.add_middleware(RequestMetrics, metrics=service.metrics)
    if config.cors_origins:
        app.add_middleware(JsonCORS, allow_origins=list(config.cors_origins),
                           allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "x-api-key", "content-type"])
    add_error_handlers(app)
    keyed = [Depends(require_api_key)]  # the WebSocket checks its key itself (`?api_key=`)
    app.include_router(health.router)
    app.include_router(metrics.router, dependencies=keyed)
    app.include_router(models.router, dependencies=keyed)
    app.include_router(perceive.router, dependencies=keyed)
    app.include_router(stream.router)
    app.include_router(kserve.health_router)
    app.include_router(kserve.router, dependencies=keyed)
    app.include_router(viewer_router(static_dir))
    app.mount("/static", StaticFiles(directory=static_dir, check_dir=False), name="static")
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    service: Service = app.state.service
    loader = threading.Thread(target=_load_logged, args=(service,), name="model-loader",
                              daemon=True)
    loader.start()
    grpc_server = None
    if service.config.grpc_port is not None:
        from serving.grpc_server import GrpcServer  # grpc is imported only when served

        grpc_server = app.state.grpc = GrpcServer(service, service.config.grpc_port)
    try:
        yield
    finally:
        if grpc_server is not None:
            await asyncio.to_thread(grpc_server.stop, 10.0)
        await asyncio.to_thread(loader.join)
        await asyncio.to_thread(service.close)


def _load_logged(service: Service) -> None:
    try:
        service.load()
        log.info("models loaded and warmed up: %s", ", ".join(service.config.models))
    except Exception:
        log.exception("loading the models failed; /readyz reports it")
