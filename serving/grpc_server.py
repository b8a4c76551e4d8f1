"""The gRPC transport: `perception.v1.Perception`, the KServe v2 `inference.GRPCInferenceService`
(serving/kserve_grpc.py), the standard health service, reflection.

It runs in the HTTP server's process on its own thread pool and shares the `Service` (models and
batcher). A handler builds the same JSON as the HTTP API and parses it into the proto message,
so both transports answer identically. Errors map to status codes: bad input (a payload
that is not a protobuf included) INVALID_ARGUMENT, queue or pixel budget full or too many
calls RESOURCE_EXHAUSTED, not ready UNAVAILABLE, deadline DEADLINE_EXCEEDED, missing key
UNAUTHENTICATED, a bug INTERNAL (traceback in the log). Health stays open without a key;
reflection too, unless API keys are on (then it needs one, or `grpc_open_reflection`). The
call caps and idle-stream timeout are serving/grpc_limits.py's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from perception.driving.planning import Planner
from perception.errors import PerceptionError
from perception.newest_frame import NewestFrame
from serving import kserve_grpc
from serving.auth import key_ok, presented_key
from serving.grpc_limits import RESERVED_THREADS, CallLimits, NotAMessage, rebuilt
from serving.grpc_status import INTERNAL_ERROR, status_code
from serving.proto import perception_pb2, perception_pb2_grpc
from serving.service import RequestError, Service

log = logging.getLogger("perception.serving")

SERVICE_NAME = perception_pb2.DESCRIPTOR.services_by_name["Perception"].full_name
REFLECTION_PREFIX = "/grpc.reflection."  # v1alpha and v1


def to_proto(body: dict[str, Any]) -> perception_pb2.PerceiveResponse:
    """The HTTP API's JSON -> the proto message (same field names; [x, y] pairs in metres
    become Points, [u, v] pairs in pixels become Pixels)."""

    def points(pairs: list | None) -> list[dict[str, float]]:
        return [{"x": x, "y": y} for x, y in pairs or []]

    def pixels(pairs: list | None) -> list[dict[str, float]]:
        return [{"u": u, "v": v} for u, v in pairs or []]

    body = dict(body)
    plan = body.get("plan")
    if plan:
        body["plan"] = {**plan, "waypoints": points(plan.get("waypoints")),
                        "image_path": pixels(plan.get("image_path"))}
    body["lane_boundaries"] = [
        {**lane, "image_points": pixels(lane.get("image_points")),
         "ground_points": points(lane.get("ground_points"))}
        for lane in body.get("lane_boundaries") or []]
    return json_format.ParseDict(body, perception_pb2.PerceiveResponse(),
                                 ignore_unknown_fields=True)


class PerceptionServicer(perception_pb2_grpc.PerceptionServicer):
    def __init__(self, service: Service) -> None:
        self.service = service

    def Perceive(self, request: perception_pb2.PerceiveRequest,  # noqa: N802 (gRPC's name)
                 context: grpc.ServicerContext) -> perception_pb2.PerceiveResponse:
        route = f"/{SERVICE_NAME}/Perceive"
        try:
            response, _ = self._answer(request, context)
        except RequestError as error:
            self._count(route, status_code(error))
            context.abort(status_code(error), error.message)
        except Exception:
            log.exception("internal error on %s", route)
            self._count(route, grpc.StatusCode.INTERNAL)
            context.abort(grpc.StatusCode.INTERNAL, INTERNAL_ERROR)
        self._count(route, grpc.StatusCode.OK)
        return response

    def StreamPerceive(self, requests: Iterator[perception_pb2.PerceiveRequest],  # noqa: N802
                       context: grpc.ServicerContext) -> Iterator[perception_pb2.PerceiveResponse]:
        """Answer in order; while one image is processed only the newest waiting one is kept.
        A message that fails gets a response with `error` set, and the stream goes on."""
        frames: NewestFrame[perception_pb2.PerceiveRequest | NotAMessage] = NewestFrame()

        def read() -> None:
            try:
                for request in requests:
                    if frames.put(request):
                        self.service.metrics.dropped.labels(reason="stream_newest_wins").inc()
            except grpc.RpcError:
                pass  # the client went away (or the idle stream was cancelled): loop ends
            finally:
                frames.end()

        threading.Thread(target=read, name="grpc-stream-reader", daemon=True).start()
        planner: Planner | None = None  # made for the first frame that is planned, then kept
        while context.is_active() and (taken := frames.take()) is not None:
            try:
                response, planner = self._answer(taken.item, context, planner, taken.sequence)
            except RequestError as error:
                response = perception_pb2.PerceiveResponse(error=error.message)
            except Exception:
                log.exception("internal error on a StreamPerceive message")
                response = perception_pb2.PerceiveResponse(error=INTERNAL_ERROR)
            response.sequence, response.dropped = taken.sequence, taken.dropped
            yield response
        self._count(f"/{SERVICE_NAME}/StreamPerceive", grpc.StatusCode.OK)

    def _answer(self, request: perception_pb2.PerceiveRequest | NotAMessage,
                context: grpc.ServicerContext, planner: Planner | None = None,
                index: int | None = None) -> tuple[perception_pb2.PerceiveResponse,
                                                   Planner | None]:
        """Check, decode, batch and render one image; the planner a stream keeps."""
        if isinstance(request, NotAMessage):
            raise RequestError(400, request.error)
        service = self.service
        options = service.options(list(request.outputs), request.mask_encoding or None,
                                  request.camera or None, request.mask_size or None)
        admitted = service.admit(request.image, service.check_header(request.image),
                                 context.time_remaining())
        try:
            perceived = service.wait(service.perceive(admitted, "grpc", index), admitted)
            planner = service.planner(options, planner)
            response = to_proto(service.render(perceived.result, options, planner))
        finally:
            admitted.release()
        return response, planner

    def _count(self, route: str, code: grpc.StatusCode) -> None:
        self.service.metrics.requests.labels(route=route, code=code.name).inc()


class _ApiKeys(grpc.ServerInterceptor):
    """Refuse Perception and v2 calls (and reflection, unless opened) without a valid key;
    health (and v2's ServerLive and ServerReady) stays open."""

    def __init__(self, keys: tuple[str, ...], open_reflection: bool) -> None:
        self.keys = keys
        self.prefixes = (f"/{SERVICE_NAME}/", f"/{kserve_grpc.SERVICE}/") + (
            () if open_reflection else (REFLECTION_PREFIX,))

    def intercept_service(self, continuation, details):  # noqa: ANN001, ANN201 (gRPC's API)
        handler = continuation(details)
        if (handler is None or not details.method.startswith(self.prefixes)
                or details.method in kserve_grpc.OPEN_METHODS
                or key_ok(presented_key(dict(details.invocation_metadata)), self.keys)):
            return handler

        def refuse(request: Any, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong API key (metadata "
                          "'authorization: Bearer KEY' or 'x-api-key: KEY')")

        return rebuilt(handler, refuse, None)


class GrpcServer:
    """The running gRPC server; `port` is the bound port (useful with port 0)."""

    def __init__(self, service: Service, port: int) -> None:
        config = service.config
        self.limits = CallLimits(config.grpc_max_calls, config.grpc_max_streams,
                                 config.grpc_stream_idle_s, own_prefix=f"/{SERVICE_NAME}/")
        interceptors: list[grpc.ServerInterceptor] = [self.limits]
        if config.api_keys:  # first: a refused call never takes a place
            interceptors.insert(0, _ApiKeys(config.api_keys, config.grpc_open_reflection))
        self.server = grpc.server(
            ThreadPoolExecutor(max_workers=config.grpc_max_calls + RESERVED_THREADS,
                               thread_name_prefix="grpc"),
            interceptors=interceptors,
            options=[("grpc.max_receive_message_length", service.config.max_body_bytes + 4096)])
        perception_pb2_grpc.add_PerceptionServicer_to_server(PerceptionServicer(service),
                                                             self.server)
        kserve_grpc.add_to_server(service, self.server)
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
