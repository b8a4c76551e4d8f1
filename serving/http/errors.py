"""Every HTTP error is JSON `{"error": "<message>", "status": <code>}`, never a stack trace.

Errors answered below the app (a malformed or oversized request head, a slow one, too many
connections) are JSON too: serving/http/server.py writes them.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from serving.service import RequestError

log = logging.getLogger("perception.serving")

CLIENT_CLOSED = 499  # nginx's "client closed request": counted in /metrics, sent to nobody


def error_response(status: int, message: str, headers: dict[str, str] | None = None
                   ) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status,
                        headers=headers)


def add_error_handlers(app: FastAPI) -> None:
    """Starlette's errors (404, 405, 413 ...), query validation (422), the service's
    `RequestError`s, and a bug (500, traceback to the log) all answer the same JSON. A client
    that goes away mid-body is one log line and a 499 in the metrics, not an error."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return error_response(error.status_code, str(error.detail), error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(422, _validation_message(error))

    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError) -> JSONResponse:
        return error_response(error.status, error.message, error.headers)

    @app.exception_handler(ClientDisconnect)
    async def client_disconnect(request: Request, error: ClientDisconnect) -> JSONResponse:
        log.info("client closed the connection before sending the whole body of %s %s",
                 request.method, request.url.path)
        return error_response(CLIENT_CLOSED, "client closed the request")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        log.exception("internal error on %s", request.url.path)
        return error_response(500, "internal server error (see the server log)")


def _validation_message(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item.get("loc", ()))
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"
