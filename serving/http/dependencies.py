"""FastAPI dependencies: the service, the API-key checks, and the query of `/v1/perceive`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Query, Request, WebSocket, WebSocketException, status
from starlette.requests import HTTPConnection

from serving.auth import key_ok, presented_key
from serving.service import DEFAULT_OUTPUTS, Options, RequestError, Service

IMAGE_TYPES = ("image/jpeg", "image/png", "multipart/form-data")


async def get_service(connection: HTTPConnection) -> Service:
    """The app's `Service` (models, batcher, settings), set by `create_app`."""
    return connection.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


async def require_api_key(request: Request, service: ServiceDep) -> None:
    """With `--api-key-file`, refuse a request without one of the keys (401)."""
    keys = service.config.api_keys
    if keys and not key_ok(presented_key(dict(request.headers)), keys):
        raise RequestError(401, "missing or wrong API key (send 'Authorization: Bearer KEY' "
                                "or 'x-api-key: KEY')", {"WWW-Authenticate": "Bearer"})


async def require_stream_key(websocket: WebSocket, service: ServiceDep,
                             api_key: str | None = None) -> None:
    """The WebSocket's key check, before it is accepted (refused: closed with 1008, which
    the client sees as HTTP 403); browsers cannot set its headers, so `?api_key=KEY` counts
    too."""
    keys = service.config.api_keys
    if keys and not key_ok(presented_key(dict(websocket.headers)) or api_key, keys):
        raise WebSocketException(status.WS_1008_POLICY_VIOLATION, "missing or wrong API key")


@dataclass(frozen=True)
class PerceiveQuery:
    options: Options
    content_type: str  # one of IMAGE_TYPES


async def perceive_query(
    request: Request,
    service: ServiceDep,
    outputs: str = Query(",".join(DEFAULT_OUTPUTS), description="Comma list of "
                         "detections, masks, lanes, plan, bev", examples=["detections,masks"]),
    mask_encoding: Literal["png", "rle"] = Query("png", description="How masks are encoded"),
    mask_size: Literal["model", "frame"] = Query(
        "model", description="Masks at the segmentation model's resolution (the client "
                             "stretches them over the frame) or resized to the frame's size"),
    camera: str | None = Query(None, description="A camera the server was started with "
                               "(--camera NAME=camera.yaml); default: the first"),
) -> PerceiveQuery:
    """The body's type (415), then the output choices (400), once FastAPI has checked the
    query's types (422): the order in which a request is refused."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in IMAGE_TYPES:
        raise RequestError(415, f"content type {content_type or '(none)'!r} is not "
                                "image/jpeg, image/png or multipart/form-data")
    return PerceiveQuery(service.options(outputs, mask_encoding, camera, mask_size),
                         content_type)
