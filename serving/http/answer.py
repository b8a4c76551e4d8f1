"""One image through the service to the API's JSON, without blocking the event loop.

`answer_image` checks the header (on the loop when it is in the first 16 KB, as any real
image's is; else in the thread pool) and leases the pixels, waits for the decode (on the decode
threads) and the batcher within the request's deadline, makes the stream's planner once the
result is there, and renders the answer: on the loop when that is cheap (detections,
model-size masks), in the thread pool when it takes milliseconds (lanes, a plan, frame-size
masks). Whatever happens, the request's pixels go back to the budget when it is done.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.concurrency import run_in_threadpool

from perception.driving.planning import Planner
from serving.service import Options, Perceived, Service


async def answer_image(service: Service, data: bytes, source: str, options: Options,
                       planner: Planner | None = None, index: int | None = None
                       ) -> tuple[dict[str, Any], Planner | None]:
    """The JSON answer for one image, and the planner a stream keeps (see Service.planner).

    Raises RequestError (400, 413, 503, 504) for what the client can act on."""
    size = service.check_header_quickly(data) or await run_in_threadpool(service.check_header,
                                                                         data)
    admitted = service.admit(data, size)
    try:
        answer = service.perceive(admitted, source, index)
        try:
            perceived = await asyncio.wait_for(asyncio.wrap_future(answer),
                                               admitted.remaining_s())
        except TimeoutError:
            raise service.timed_out() from None
        planner = service.planner(options, planner)
        body = await render_answer(service, perceived, options, planner)
    finally:
        admitted.release()
    return body, planner


async def render_answer(service: Service, perceived: Perceived, options: Options,
                        planner: Planner | None = None) -> dict[str, Any]:
    """The JSON answer, with the server's `image_decode` and `render` times."""
    t0 = time.perf_counter()
    if options.costly:
        body = await run_in_threadpool(service.render, perceived.result, options, planner)
    else:
        body = service.render(perceived.result, options, planner)
    render_s = time.perf_counter() - t0
    body["timings_ms"]["image_decode"] = perceived.decode_s * 1e3
    body["timings_ms"]["render"] = render_s * 1e3
    service.metrics.stage_seconds.labels(stage="image_decode").observe(perceived.decode_s)
    service.metrics.stage_seconds.labels(stage="render").observe(render_s)
    return body
