"""One v2 infer request through the service: the same checks, limits and batcher as our API.

For `perception`, an encoded image goes the way of `POST /v1/perceive` (header check, pixel
lease, decode within the deadline, the shared batcher), a decoded one skips the decode; with
`plan` among the outputs the plan is rendered as the API renders it (a still, judged alone;
`parameters.camera` picks the camera). A network's raw tensors lease their bytes from the same
budget and run on its ONNX Runtime session directly. HTTP awaits (`infer_async`, nothing
blocks the event loop), gRPC's handler thread blocks (`infer_blocking`).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from perception.results import FrameResult
from serving.kserve.models import NetworkModel, PerceptionModel, V2Model, find_model
from serving.kserve.tensors import Tensor
from serving.service import Admitted, Options, Perceived, RequestError, Service

SOURCE = "v2"


@dataclass
class InferRequest:
    """An infer request, whichever transport it came by; `outputs` None: all of them."""

    model: str
    version: str
    inputs: list[Tensor]
    outputs: list[str] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    id: str = ""


@dataclass
class Planned:
    """What the perception model needs besides its image: the outputs and, for `plan`, the
    API's options for it."""

    outputs: list[str]
    plan_options: Options | None = None  # when `plan` is asked for


def infer_blocking(service: Service, request: InferRequest, timeout_s: float | None = None
                   ) -> tuple[V2Model, list[Tensor]]:
    """The model and its output tensors; raises RequestError (400, 404, 413, 503, 504)."""
    model = find_model(service, request.model, request.version)
    outputs = model.check_outputs(request.outputs)
    if isinstance(model, NetworkModel):
        return model, _run_network(service, model, request.inputs, outputs)
    assert isinstance(model, PerceptionModel)
    planned = _planned(service, outputs, request.parameters)
    image = model.image(request.inputs)
    if isinstance(image, np.ndarray):
        admitted = service.admit_pixels(image, timeout_s)
    else:
        admitted = service.admit(image, service.check_header(image), timeout_s)
    try:
        perceived = service.wait(_submit(service, admitted, image), admitted)
        return model, _answer(service, model, perceived.result, planned)
    finally:
        admitted.release()


async def infer_async(service: Service, request: InferRequest) -> tuple[V2Model, list[Tensor]]:
    """`infer_blocking` for the event loop: header checks on the loop when cheap, the wait
    awaited, decoding, the networks and planning on threads."""
    model = find_model(service, request.model, request.version)
    outputs = model.check_outputs(request.outputs)
    if isinstance(model, NetworkModel):
        return model, await run_in_threadpool(_run_network, service, model, request.inputs,
                                              outputs)
    assert isinstance(model, PerceptionModel)
    planned = _planned(service, outputs, request.parameters)
    image = model.image(request.inputs)
    if isinstance(image, np.ndarray):
        admitted = service.admit_pixels(image)
    else:
        size = (service.check_header_quickly(image)
                or await run_in_threadpool(service.check_header, image))
        admitted = service.admit(image, size)
    try:
        answer = _submit(service, admitted, image)
        try:
            perceived = await asyncio.wait_for(asyncio.wrap_future(answer),
                                               admitted.remaining_s())
        except TimeoutError:
            raise service.timed_out() from None
        if planned.plan_options is None:
            return model, _answer(service, model, perceived.result, planned)
        return model, await run_in_threadpool(_answer, service, model, perceived.result,
                                              planned)
    finally:
        admitted.release()


def _planned(service: Service, outputs: list[str], parameters: dict[str, Any]) -> Planned:
    camera = parameters.get("camera")
    if camera is not None and not isinstance(camera, str):
        raise RequestError(400, f"parameter 'camera' is a camera's name, not {camera!r}")
    if "plan" not in outputs:
        return Planned(outputs)
    return Planned(outputs, service.options(["plan"], None, camera))


def _submit(service: Service, admitted: Admitted, image: bytes | np.ndarray
            ) -> Future[Perceived]:
    if isinstance(image, np.ndarray):
        return service.perceive_pixels(admitted, image, SOURCE)
    return service.perceive(admitted, SOURCE)


def _answer(service: Service, model: PerceptionModel, result: FrameResult, planned: Planned
            ) -> list[Tensor]:
    plan = None
    if planned.plan_options is not None:
        plan = service.render(result, planned.plan_options)["plan"]
    return model.answer(result, planned.outputs, plan)


def _run_network(service: Service, model: NetworkModel, inputs: list[Tensor],
                 outputs: list[str]) -> list[Tensor]:
    lease = service.lease_tensor_bytes(sum(tensor.data.nbytes for tensor in inputs))
    try:
        return model.run(inputs, outputs)
    finally:
        lease.release()
