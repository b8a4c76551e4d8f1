"""`WS /v1/stream`: binary JPEG/PNG messages in, one JSON answer per answered frame out.

Answers come in order. While a frame is processed only the newest waiting one is kept
(`NewestFrame`): each answer says which message it answers (`sequence`) and how many were
skipped since the previous answer (`dropped`). A frame that fails gets `{"error", "status"}`
and the stream goes on, a server bug included (status 500, the traceback in the log). The
stream's planner carries its plan from frame to frame.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Depends, WebSocket, WebSocketDisconnect
from starlette.types import Message

from perception.driving.planning import Planner
from perception.newest_frame import NewestFrame
from serving.http.answer import answer_image
from serving.http.dependencies import ServiceDep, require_stream_key
from serving.http.fast_json import dumps
from serving.service import DEFAULT_OUTPUTS, Options, RequestError, Service

log = logging.getLogger("perception.serving")
router = APIRouter()


@router.websocket("/v1/stream", dependencies=[Depends(require_stream_key)])
async def stream(websocket: WebSocket, service: ServiceDep,
                 outputs: str = ",".join(DEFAULT_OUTPUTS), mask_encoding: str = "png",
                 camera: str | None = None, mask_size: str = "model") -> None:
    await websocket.accept()
    try:
        options = service.options(outputs, mask_encoding, camera, mask_size)
    except RequestError as error:
        await websocket.send_json({"error": error.message, "status": error.status})
        await websocket.close(code=1008)
        return
    await serve_stream(service, websocket, options)


async def serve_stream(service: Service, websocket: WebSocket, options: Options) -> None:
    """Answer the newest waiting frame, one at a time, until the client goes away."""
    frames: NewestFrame[Message] = NewestFrame()

    async def receive() -> None:
        try:
            while (message := await websocket.receive())["type"] != "websocket.disconnect":
                if frames.put(message):
                    service.metrics.dropped.labels(reason="stream_newest_wins").inc()
        finally:
            frames.end()

    receiver = asyncio.create_task(receive())
    planner: Planner | None = None  # made for the first frame that is planned, then kept
    try:
        while (taken := await frames.take_async()) is not None:
            if receiver.done():  # the client went away: nobody to answer
                return
            payload = taken.item.get("bytes")  # None: a text message
            answer: dict[str, Any]
            try:
                if payload is None:
                    raise RequestError(400, "send frames as binary JPEG/PNG messages")
                answer, planner = await answer_image(service, payload, "ws", options, planner,
                                                     taken.sequence)
            except RequestError as error:
                answer = {"error": error.message, "status": error.status}
            except Exception:  # a bug: this frame's answer says so, the stream goes on
                log.exception("internal error on a /v1/stream frame")
                answer = {"error": "internal server error (see the server log)", "status": 500}
            answer.update(sequence=taken.sequence, dropped=taken.dropped)
            await websocket.send_text(dumps(answer).decode())
    except WebSocketDisconnect:
        return
    finally:
        receiver.cancel()
