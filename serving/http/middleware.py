"""Pure ASGI middleware: request metrics, the request limits, and CORS with JSON refusals.

Metrics and limits are plain ASGI rather than FastAPI dependencies: the metrics must see every
answer (404s and errors included), and the limits must count the body's bytes and time as they
arrive (a chunked upload has no Content-Length), which only a wrapped `receive` can do.
"""

from __future__ import annotations

import asyncio
import time

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
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


class RequestLimits:
    """Refuse a request with over `max_headers` headers (431); a body over `max_body_bytes`
    (413: at once from its Content-Length, else, when chunked, as soon as the bytes read so
    far pass it); and a body not in within `body_timeout_s` of the request's start (408)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_headers: int,
                 body_timeout_s: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_headers = max_headers
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if len(scope["headers"]) > self.max_headers:
            response = error_response(431, f"request has {len(scope['headers'])} headers; the "
                                            f"limit is {self.max_headers}")
            await response(scope, receive, send)
            return
        length = next((v.decode("latin-1") for k, v in scope["headers"][::-1]
                       if k == b"content-length"), "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            response = error_response(413, f"body is {length} bytes; the limit is "
                                           f"{self.max_body_bytes}")
            await response(scope, receive, send)
            return
        await self.app(scope, self._limited(receive), send)

    def _limited(self, receive: Receive) -> Receive:
        """Count body bytes and time as they arrive, until the body is complete."""
        seen = 0
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s
        complete = False

        async def wrapped() -> Message:
            nonlocal seen, complete
            if complete:  # e.g. waiting for the client to disconnect: not the body's time
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(408, f"request body not received within "
                                         f"{self.body_timeout_s:g} s",
                                    headers={"connection": "close"}) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if seen > self.max_body_bytes:
                    raise HTTPException(413, f"body is over the limit of {self.max_body_bytes} "
                                             "bytes", headers={"connection": "close"})
            return message

        return wrapped


class JsonCORS(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered in the API's JSON, not plain text."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        headers = {k: v for k, v in response.headers.items()
                   if k not in ("content-length", "content-type")}
        return error_response(response.status_code, bytes(response.body).decode(), headers)
