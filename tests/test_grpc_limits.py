"""gRPC under hostile clients, over real channels to a server on 127.0.0.1 (issue 13).

Idle streams cannot starve the server (call and stream caps with RESOURCE_EXHAUSTED, health
checks always answered, idle streams cancelled), reflection needs the key when keys are on,
raw payloads that are not protobuf are INVALID_ARGUMENT, and an image the models cannot
process is that call's INVALID_ARGUMENT (a stream answers it and goes on).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from serving_harness import StatsPerceiver, running_server, solid_jpeg
from test_service_hardening import StripIntolerantPerceiver, png

from serving.proto import perception_pb2, perception_pb2_grpc
from serving.service import ServeConfig, Service

Request = perception_pb2.PerceiveRequest
PERCEIVE = "/perception.v1.Perception/Perceive"
STREAM = "/perception.v1.Perception/StreamPerceive"


@contextmanager
def grpc_server(perceiver: type = StatsPerceiver, **changes: object
                ) -> Iterator[tuple[grpc.Channel, object]]:
    """A served Service with gRPC; yields a channel to it and its GrpcServer."""
    service = Service(ServeConfig(grpc_port=0, **changes), perceiver)
    with running_server(service) as (_, _, app), \
            grpc.insecure_channel(f"127.0.0.1:{app.state.grpc.port}") as channel:
        yield channel, app.state.grpc


class IdleRequests:
    """A request stream that sends nothing until `release()`d: an idle client."""

    def __init__(self) -> None:
        self.released = threading.Event()

    def __iter__(self) -> Iterator:
        self.released.wait(30)
        return
        yield

    def release(self) -> None:
        self.released.set()


def wait_for(condition, timeout: float = 10.0) -> None:  # noqa: ANN001 (any predicate)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def lockstep(call: grpc.StreamStreamMultiCallable, messages: list) -> list:
    """Stream `messages`, each sent once the previous one is answered (none is dropped)."""
    answered = threading.Semaphore(0)

    def requests() -> Iterator:
        for message in messages:
            yield message
            answered.acquire(timeout=30)

    answers = []
    for answer in call(requests(), timeout=30):
        answers.append(answer)
        answered.release()
    return answers


def health_check(channel: grpc.Channel, timeout: float = 1.0) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                     timeout=timeout).status


def test_idle_streams_are_capped_and_health_and_unary_calls_still_answer() -> None:
    with grpc_server(grpc_max_calls=6, grpc_max_streams=3, grpc_open_reflection=True) as (
            channel, server):
        stub = perception_pb2_grpc.PerceptionStub(channel)
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        idle = [IdleRequests() for _ in range(3)]
        calls = [stub.StreamPerceive(iter(requests), timeout=30) for requests in idle]
        wait_for(lambda: server.limits.streams == 3)
        with pytest.raises(grpc.RpcError) as refused:
            next(stub.StreamPerceive(iter([Request(image=solid_jpeg(9))]), timeout=10))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "too many concurrent gRPC streams (limit 3" in refused.value.details()
        with pytest.raises(grpc.RpcError) as refused:  # reflection streams count too
            next(reflection.ServerReflectionInfo(iter(IdleRequests()), timeout=10))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for _ in range(20):  # health and unary calls are not starved
            started = time.monotonic()
            assert health_check(channel) == health_pb2.HealthCheckResponse.SERVING
            assert time.monotonic() - started < 1.0
        answer = stub.Perceive(Request(image=solid_jpeg(100)), timeout=10)
        assert answer.detections[0].score == pytest.approx(100 / 255, abs=0.01)
        for requests in idle:
            requests.release()
        for call in calls:
            assert list(call) == []  # the idle streams end cleanly
        wait_for(lambda: server.limits.calls == 0)


def test_calls_past_the_cap_are_resource_exhausted_and_health_still_answers() -> None:
    gate = threading.Event()
    gate.set()
    perceiver = StatsPerceiver(gate)
    with grpc_server(lambda: perceiver, grpc_max_calls=2, grpc_max_streams=2,
                     max_batch=1) as (channel, server):
        gate.clear()
        stub = perception_pb2_grpc.PerceptionStub(channel)
        held = [stub.Perceive.future(Request(image=solid_jpeg(v)), timeout=30) for v in (1, 2)]
        wait_for(lambda: server.limits.calls == 2)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Perceive(Request(image=solid_jpeg(3)), timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--grpc-max-calls" in refused.value.details()
        assert health_check(channel) == health_pb2.HealthCheckResponse.SERVING
        gate.set()
        assert [f.result(30).width for f in held] == [64, 64]


def test_an_idle_stream_is_cancelled_and_frees_its_place() -> None:
    with grpc_server(grpc_max_streams=1, grpc_stream_idle_s=0.5) as (channel, server):
        stub = perception_pb2_grpc.PerceptionStub(channel)
        idle = IdleRequests()
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as ended:
            list(stub.StreamPerceive(iter(idle), timeout=30))
        assert ended.value.code() == grpc.StatusCode.CANCELLED
        assert time.monotonic() - started < 3.0
        idle.release()
        wait_for(lambda: server.limits.streams == 0)
        busy = [Request(image=solid_jpeg(v)) for v in (10, 20, 30)]  # active: not idle
        assert [a.sequence for a in lockstep(stub.StreamPerceive, busy)] == [0, 1, 2]


def test_reflection_needs_the_key_when_keys_are_on_unless_opened() -> None:
    ask = reflection_pb2.ServerReflectionRequest(list_services="")

    def services(channel: grpc.Channel, metadata: tuple = ()) -> set[str]:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([ask]), metadata=metadata, timeout=10)
        return {s.name for reply in replies for s in reply.list_services_response.service}

    with grpc_server(api_keys=("k1",)) as (channel, _):
        with pytest.raises(grpc.RpcError) as refused:
            services(channel)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "perception.v1.Perception" in services(channel, (("x-api-key", "k1"),))
        assert health_check(channel) == health_pb2.HealthCheckResponse.SERVING  # no key
    with grpc_server(api_keys=("k1",), grpc_open_reflection=True) as (channel, _):
        assert "grpc.health.v1.Health" in services(channel)


def test_raw_payloads_that_are_not_protobuf_are_invalid_argument() -> None:
    garbage = b"\x0a\xff\xff\xff\xff\xff"  # field 1, a length that runs past the end
    with grpc_server() as (channel, _):
        unary = channel.unary_unary(PERCEIVE)
        with pytest.raises(grpc.RpcError) as refused:
            unary(garbage, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid protobuf message" in refused.value.details()
        stream = channel.stream_stream(STREAM, response_deserializer=(
            perception_pb2.PerceiveResponse.FromString))
        answers = lockstep(stream, [garbage, Request(image=solid_jpeg(50)).SerializeToString()])
        assert "not a valid protobuf message" in answers[0].error
        assert answers[-1].sequence == 1 and not answers[-1].error  # the stream went on
        reflection = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
        with pytest.raises(grpc.RpcError) as refused:
            list(reflection(iter([garbage]), timeout=10))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_an_image_the_models_cannot_process_is_invalid_argument_and_streams_go_on() -> None:
    with grpc_server(StripIntolerantPerceiver) as (channel, _):
        stub = perception_pb2_grpc.PerceptionStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Perceive(Request(image=png(1, 10000)), timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details() == "the models cannot process this 1x10000 image"
        answers = lockstep(stub.StreamPerceive, [Request(image=png(1, 10000)),
                                                 Request(image=solid_jpeg(70))])
        assert "1x10000" in answers[0].error and "OpenCV" not in answers[0].error
        assert answers[-1].sequence == 1
        assert answers[-1].detections[0].score == pytest.approx(70 / 255, abs=0.01)
