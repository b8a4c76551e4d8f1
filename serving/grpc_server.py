"""The gRPC transport: `perception.v1.Perception`, the standard health service, reflection.

It runs in the HTTP server's process on its own thread pool and shares the `Service` (models and
batcher). A handler builds the same JSON as the HTTP API and parses it into the proto message,
so both transports answer identically. Errors map to status codes: bad input
INVALID_ARGUMENT, queue full RESOURCE_EXHAUSTED, not ready UNAVAILABLE, deadline
DEADLINE_EXCEEDED, missing key UNAUTHENTICATED. Health and reflection stay open without a key.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from perception.driving.planning import Planner
from perception.errors import PerceptionError
from perception.newest_frame import NewestFrame
from perception.results import FrameResult
from serving.auth import key_ok, presented_key
from serving.batcher import DeadlineExceeded
from serving.proto import perception_pb2, perception_pb2_grpc
from serving.service import Options, RequestError, Service

SERVICE_NAME = perception_pb2.DESCRIPTOR.services_by_name["Perception"].full_name
CODES = {400: grpc.StatusCode.INVALID_ARGUMENT,
         413: grpc.StatusCode.INVALID_ARGUMENT, 503: grpc.StatusCode.UNAVAILABLE,
         504: grpc.StatusCode.DEADLINE_EXCEEDED}


def status_code(error: RequestError) -> grpc.StatusCode:
    if error.status == 503 and "queue is full" in error.message:
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return CODES.get(error.status, grpc.StatusCode.INVALID_ARGUMENT)


def to_proto(body: dict[str, Any]) -> perception_pb2.PerceiveResponse:
    """The HTTP API's JSON -> the proto message (same field names; waypoints become points)."""
    body = dict(body)
    plan = body.get("plan")
    if plan:
        body["plan"] = {**plan, "waypoints": [{"x": x, "y": y} for x, y in plan["waypoints"]]}
    return json_format.ParseDict(body, perception_pb2.PerceiveResponse(),
                                 ignore_unknown_fields=True)


class PerceptionServicer(perception_pb2_grpc.PerceptionServicer):
    def __init__(self, service: Service) -> None:
        self.service = service

    def Perceive(self, request: perception_pb2.PerceiveRequest,  # noqa: N802 (gRPC's name)
                 context: grpc.ServicerContext) -> perception_pb2.PerceiveResponse:
        route = f"/{SERVICE_NAME}/Perceive"
        try:
            result, options = self._perceive(request, context)
            response = to_proto(self.service.render(result, options))
        except RequestError as error:
            self._count(route, status_code(error))
            context.abort(status_code(error), error.message)
        self._count(route, grpc.StatusCode.OK)
        return response

    def StreamPerceive(self, requests: Iterator[perception_pb2.PerceiveRequest],  # noqa: N802
                       context: grpc.ServicerContext) -> Iterator[perception_pb2.PerceiveResponse]:
        """Answer in order; while one image is processed only the newest waiting one is kept."""
        frames: NewestFrame[perception_pb2.PerceiveRequest] = NewestFrame()

        def read() -> None:
            try:
                for request in requests:
                    if frames.put(request):
                        self.service.metrics.dropped.labels(reason="stream_newest_wins").inc()
            except grpc.RpcError:
                pass  # the client went away; the loop below ends
            finally:
                frames.end()

        threading.Thread(target=read, name="grpc-stream-reader", daemon=True).start()
        planner: Planner | None = None  # made for the first frame that is planned, then kept
        while context.is_active() and (taken := frames.take()) is not None:
            try:
                result, options = self._perceive(taken.item, context, taken.sequence)
                planner = self.service.planner(options, planner)
                response = to_proto(self.service.render(result, options, planner))
            except RequestError as error:
                response = perception_pb2.PerceiveResponse(error=error.message)
            response.sequence, response.dropped = taken.sequence, taken.dropped
            yield response
        self._count(f"/{SERVICE_NAME}/StreamPerceive", grpc.StatusCode.OK)

    def _perceive(self, request: perception_pb2.PerceiveRequest, context: grpc.ServicerContext,
                  index: int | None = None) -> tuple[FrameResult, Options]:
        """Check, decode and batch one image; its result and the outputs it asked for."""
        service = self.service
        options = service.options(list(request.outputs), request.mask_encoding or None,
                                  request.camera or None)
        image = service.check_image(request.image)
        future = service.submit(image, "grpc", index)
        remaining = context.time_remaining()
        timeout = min(service.config.request_timeout_s, remaining if remaining else 1e9)
        try:
            result = future.result(timeout)
        except (FutureTimeout, DeadlineExceeded):
            future.cancel()
            service.metrics.dropped.labels(reason="deadline").inc()
            raise RequestError(504, f"no result within {timeout:.3g} s") from None
        return result, options

    def _count(self, route: str, code: grpc.StatusCode) -> None:
        self.service.metrics.requests.labels(route=route, code=code.name).inc()


class _ApiKeys(grpc.ServerInterceptor):
    """Refuse Perception calls without a valid key; health and reflection stay open."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys

    def intercept_service(self, continuation, details):  # noqa: ANN001, ANN201 (gRPC's API)
        if not details.method.startswith(f"/{SERVICE_NAME}/"):
            return continuation(details)
        if key_ok(presented_key(dict(details.invocation_metadata)), self.keys):
            return continuation(details)

        def refuse(request: Any, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong API key (metadata "
                          "'authorization: Bearer KEY' or 'x-api-key: KEY')")

        if details.method.endswith("/StreamPerceive"):
            return grpc.stream_stream_rpc_method_handler(refuse)
        return grpc.unary_unary_rpc_method_handler(refuse)


class GrpcServer:
    """The running gRPC server; `port` is the bound port (useful with port 0)."""

    def __init__(self, service: Service, port: int, workers: int = 32) -> None:
        interceptors = [_ApiKeys(service.config.api_keys)] if service.config.api_keys else []
        self.server = grpc.server(
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
            interceptors=interceptors,
            options=[("grpc.max_receive_message_length", service.config.max_body_bytes + 4096)])
        perception_pb2_grpc.add_PerceptionServicer_to_server(PerceptionServicer(service),
                                                             self.server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        self.port = self.server.add_insecure_port(f"{service.config.host}:{port}")
        if self.port == 0:
            raise PerceptionError(f"cannot bind gRPC to {service.config.host}:{port}")
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.server.start()
        self._stop = threading.Event()
        threading.Thread(target=self._serve_when_ready, args=(service,), daemon=True).start()

    def _set_health(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def _serve_when_ready(self, service: Service) -> None:
        while not self._stop.is_set():
            if service.wait_ready(0.2):
                self._set_health(health_pb2.HealthCheckResponse.SERVING)
                return

    def stop(self, grace_s: float = 10.0) -> None:
        """Refuse new calls, let in-flight ones finish within `grace_s`."""
        self._stop.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_s).wait()
