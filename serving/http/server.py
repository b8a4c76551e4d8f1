"""The uvicorn server of `perception serve`, with limits on what one connection may hold.

uvicorn's pure-Python h11 protocol is used, since it bounds the request line and headers
together (`max_header_bytes`, h11's incomplete-event limit; past it: 431). `GuardedH11Protocol`
adds what uvicorn lacks: a deadline for the request head (`header_timeout_s`, from the
connection's first byte or the end of the previous response: a slow-header client is cut
off with 408), a cap on open connections (`max_connections`: one more is answered 503 and
closed), and JSON for the errors answered below the ASGI app; `JsonWebSocketProtocol` does
the same for refused WebSocket handshakes. The header count and the body's read time are
checked in the app (serving/http/middleware.py); idle keep-alive connections close after
`keep_alive_s`.
"""

from __future__ import annotations

import asyncio
import json
from functools import partial
from http import HTTPStatus
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.http11 import Response

from serving.service import ServeConfig


def server_config(app: Any, config: ServeConfig, log_level: str = "info") -> uvicorn.Config:
    """The uvicorn configuration for `app` with the limits of `config`."""
    protocol = partial(GuardedH11Protocol, max_connections=config.max_connections,
                       header_timeout_s=config.header_timeout_s,
                       max_header_bytes=config.max_header_bytes)
    return uvicorn.Config(app, host=config.host, port=config.port, http=protocol,
                          ws=JsonWebSocketProtocol,
                          h11_max_incomplete_event_size=config.max_header_bytes,
                          timeout_keep_alive=config.keep_alive_s,
                          ws_max_size=config.max_body_bytes, timeout_graceful_shutdown=30,
                          log_level=log_level)


def raw_error(status: int, message: str, headers: dict[str, str] | None = None) -> bytes:
    """A complete HTTP/1.1 error response with the API's JSON body, closing the connection."""
    body = json.dumps({"error": message, "status": status}).encode()
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "content-type: application/json",
             f"content-length: {len(body)}", "connection: close",
             *(f"{name}: {value}" for name, value in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class GuardedH11Protocol(H11Protocol):
    def __init__(self, *args: Any, max_connections: int, header_timeout_s: float,
                 max_header_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.max_header_bytes = max_header_bytes
        self.header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refuse(503, f"too many open connections (limit {self.max_connections}); "
                              "retry shortly", {"retry-after": "1"})
            return
        self._start_header_deadline()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # bytes of a new request: its head is timed
            self._start_header_deadline()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is in (or the connection failed)
            self._stop_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_deadline()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """h11 refused the request: too large a head (431), or malformed (400)."""
        if len(self.conn.trailing_data[0]) > self.max_header_bytes:
            self._refuse(431, f"request line and headers are over {self.max_header_bytes} bytes")
        else:
            self._refuse(400, "invalid HTTP request")

    def _start_header_deadline(self) -> None:
        if self.header_deadline is None:
            self.header_deadline = self.loop.call_later(self.header_timeout_s,
                                                        self._header_timed_out)

    def _stop_header_deadline(self) -> None:
        if self.header_deadline is not None:
            self.header_deadline.cancel()
            self.header_deadline = None

    def _header_timed_out(self) -> None:
        self.header_deadline = None
        if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
            return
        if self.conn.trailing_data[0]:  # part of a request head came: say why it ends
            self._refuse(408, f"request headers not received within {self.header_timeout_s:g} s")
        else:  # a connection that sent nothing (more): close it quietly
            self.transport.close()

    def _refuse(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._stop_header_deadline()
        if not self.transport.is_closing():
            self.transport.write(raw_error(status, message, headers))
            self.transport.close()


class JsonWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol (websockets, sans-I/O) with refused handshakes (400 a
    malformed upgrade, 403 a refused key or an unknown path, 500) answered in the API's JSON:
    websockets builds every refusal with its connection's `reject`, wrapped here."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        plain_reject = self.conn.reject

        def reject(status: int, text: str) -> Response:
            plain = plain_reject(status, text)
            body = json.dumps({"error": text.strip() or plain.reason_phrase,
                               "status": plain.status_code}).encode()
            headers = Headers([(k, v) for k, v in plain.headers.raw_items()
                               if k.lower() not in ("content-type", "content-length")])
            headers["Content-Type"] = "application/json"
            headers["Content-Length"] = str(len(body))
            return Response(plain.status_code, plain.reason_phrase, headers, body)

        self.conn.reject = reject
