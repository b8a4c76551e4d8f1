"""Pure ASGI middleware: request metrics, and the body-size limit (413).

Both are plain ASGI rather than FastAPI dependencies: the metrics must see every answer
(404s and errors included), and the limit must count the body's bytes as they arrive (a
chunked upload has no Content-Length), which only a wrapped `receive` can do.
"""

from __future__ import annotations

import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.http.errors import error_response
from serving.metrics import Metrics


class RequestMetrics:
    """Count each HTTP request by route and status code, and time it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        finally:
            label = getattr(scope.get("route"), "path", "unmatched")  # set by the router
            self.metrics.requests.labels(route=label, code=str(status["code"])).inc()
            self.metrics.latency.labels(route=label).observe(time.perf_counter() - started)


class BodyLimit:
    """Refuse a body over `limit` bytes: at once from its Content-Length, else (chunked) as
    soon as the bytes read so far pass it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v.decode("latin-1") for k, v in scope["headers"][::-1]
                       if k == b"content-length"), "")
        if length.isdigit() and int(length) > self.limit:
            response = error_response(413, f"body is {length} bytes; the limit is {self.limit}")
            await response(scope, receive, send)
            return
        await self.app(scope, _limited(receive, self.limit), send)


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
