"""One image through the shared batcher to the API's JSON, without blocking the event loop.

`perceive_image` checks and decodes the bytes (in the thread pool) and waits for the batcher's
result; `render_answer` renders it (and plans, when asked) in the thread pool. Two steps, so
that a stream can fetch its planner in between, once the result is there.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from perception.driving.planning import Planner
from perception.results import FrameResult
from serving.batcher import DeadlineExceeded
from serving.service import Options, RequestError, Service


@dataclass
class Perceived:
    result: FrameResult
    decode_s: float  # checking and decoding the image


async def perceive_image(service: Service, data: bytes, source: str, index: int | None = None
                         ) -> Perceived:
    """Check, decode and batch one image; a RequestError says why not (400, 413, 503, 504)."""
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
    return Perceived(result, t1 - t0)


async def render_answer(service: Service, perceived: Perceived, options: Options,
                        planner: Planner | None = None) -> dict[str, Any]:
    """The JSON answer, with the server's `image_decode` and `render` times."""
    t0 = time.perf_counter()
    body = await run_in_threadpool(service.render, perceived.result, options, planner)
    render_s = time.perf_counter() - t0
    body["timings_ms"]["image_decode"] = perceived.decode_s * 1e3
    body["timings_ms"]["render"] = render_s * 1e3
    service.metrics.stage_seconds.labels(stage="image_decode").observe(perceived.decode_s)
    service.metrics.stage_seconds.labels(stage="render").observe(render_s)
    return body
