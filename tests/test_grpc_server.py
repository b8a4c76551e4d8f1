"""gRPC over a real channel, served in the same process as HTTP and sharing its batcher."""

from __future__ import annotations

import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from serving_harness import BDD, StatsPerceiver, real_server, running_server, solid_jpeg

from serving.proto import perception_pb2, perception_pb2_grpc
from serving.service import ServeConfig, Service

Request = perception_pb2.PerceiveRequest


@pytest.fixture(scope="module")
def real(models_mirror: Path) -> tuple[str, grpc.Channel]:
    base, _, app = real_server()
    channel = grpc.insecure_channel(f"127.0.0.1:{app.state.grpc.port}")
    yield base, channel
    channel.close()


@pytest.fixture(scope="module")
def images(assets: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((assets / BDD).glob("*.jpg"))]


def test_unary_perceive_matches_http(real: tuple[str, grpc.Channel], images: list[bytes]) -> None:
    base, channel = real
    stub = perception_pb2_grpc.PerceptionStub(channel)
    answer = stub.Perceive(Request(image=images[0]), timeout=60)
    http = httpx.post(f"{base}/v1/perceive", content=images[0],
                      headers={"content-type": "image/jpeg"}, timeout=60).json()
    assert (answer.width, answer.height) == (1280, 720)
    assert list(answer.models) == ["yolox-nano", "twinlitenet"]
    assert [d.label for d in answer.detections] == [d["label"] for d in http["detections"]]
    for ours, theirs in zip(answer.detections, http["detections"], strict=True):
        assert list(ours.box) == pytest.approx(theirs["box"], abs=0.01)
        assert ours.score == pytest.approx(theirs["score"], abs=1e-4)
    assert answer.masks.drivable.data == base64.b64decode(http["masks"]["drivable"]["data"])
    assert answer.timings_ms["twinlitenet/inference"] > 0
    rle = stub.Perceive(Request(image=images[0], outputs=["masks", "lanes"], mask_encoding="rle"),
                        timeout=60)
    lanes = rle.masks.lanes  # at twinlitenet's resolution, covering the frame
    assert (lanes.width, lanes.height, lanes.frame_width, lanes.frame_height) == \
        (640, 360, 1280, 720)
    assert len(rle.detections) == 0 and sum(lanes.counts) == 640 * 360
    assert rle.lane_boundaries and answer.lane_boundaries == []  # asked for, or not
    frame = stub.Perceive(Request(image=images[0], outputs=["masks"], mask_size="frame"),
                          timeout=60)
    assert (frame.masks.drivable.width, frame.masks.drivable.height) == (1280, 720)


def test_plan_and_bev_over_grpc(real: tuple[str, grpc.Channel], images: list[bytes]) -> None:
    stub = perception_pb2_grpc.PerceptionStub(real[1])
    answer = stub.Perceive(Request(image=images[0], outputs=["plan", "bev"], camera="bdd"),
                           timeout=60)
    if answer.plan.status == "safe_stop":  # only when the answer came too late on a busy CPU
        assert any("stale" in reason for reason in answer.plan.reasons), answer.plan.reasons
    else:
        assert answer.plan.status in ("ok", "degraded") and len(answer.plan.waypoints) > 3
        assert answer.bev.png[:8] == b"\x89PNG\r\n\x1a\n" and len(answer.bev.x_range) == 2
    streamed = list(stub.StreamPerceive(iter([Request(image=images[0], outputs=["plan"])] * 2),
                                        timeout=60))
    assert all(a.plan.status for a in streamed)


def test_concurrent_unary_calls_get_their_own_results(real: tuple[str, grpc.Channel],
                                                      images: list[bytes]) -> None:
    stub = perception_pb2_grpc.PerceptionStub(real[1])

    def labels(data: bytes) -> list[tuple]:
        answer = stub.Perceive(Request(image=data, outputs=["detections", "masks"],
                                       mask_encoding="rle"), timeout=60)
        return [(d.label, tuple(d.box)) for d in answer.detections] + \
            [tuple(answer.masks.drivable.counts)]

    alone = [labels(data) for data in images]
    order = list(range(len(images))) * 2
    with ThreadPoolExecutor(len(order)) as pool:
        together = list(pool.map(lambda i: labels(images[i]), order))
    assert together == [alone[i] for i in order]


def test_bad_input_is_invalid_argument(real: tuple[str, grpc.Channel],
                                       images: list[bytes]) -> None:
    stub = perception_pb2_grpc.PerceptionStub(real[1])
    for request, words in ((Request(image=b"nope"), "is not a JPEG"),
                           (Request(image=b""), "empty"),
                           (Request(image=images[0], outputs=["faces"]), "faces"),
                           (Request(image=images[0], mask_encoding="gif"), "gif"),
                           (Request(image=images[0], mask_size="half"), "half")):
        with pytest.raises(grpc.RpcError) as error:
            stub.Perceive(request, timeout=30)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert words in error.value.details()


def test_stream_in_order_newest_wins_and_errors_do_not_end_it(
        real: tuple[str, grpc.Channel], images: list[bytes]) -> None:
    stub = perception_pb2_grpc.PerceptionStub(real[1])
    sent = [images[0], b"garbage", *images]
    answers = list(stub.StreamPerceive(iter(Request(image=d, outputs=["detections"])
                                            for d in sent), timeout=120))
    sequences = [a.sequence for a in answers]
    assert sequences == sorted(sequences) and sequences[-1] == len(sent) - 1
    assert len(answers) + sum(a.dropped for a in answers) == len(sent)
    errors = [a for a in answers if a.error]
    assert all(a.sequence == 1 and "not a JPEG" in a.error for a in errors)
    assert all(a.width == 1280 for a in answers if not a.error)


def test_health_and_reflection(real: tuple[str, grpc.Channel]) -> None:
    channel = real[1]
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "perception.v1.Perception"):
        status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = reflection.ServerReflectionInfo(iter([
        reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {"perception.v1.Perception", "grpc.health.v1.Health"} <= names


def test_api_keys_on_grpc() -> None:
    config = ServeConfig(grpc_port=0, api_keys=("k1",))
    with (running_server(Service(config, StatsPerceiver)) as (_, _, app),
          grpc.insecure_channel(f"127.0.0.1:{app.state.grpc.port}") as channel):
        stub = perception_pb2_grpc.PerceptionStub(channel)
        request = Request(image=solid_jpeg(200))
        with pytest.raises(grpc.RpcError) as error:
            stub.Perceive(request, timeout=10)
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as error:
            list(stub.StreamPerceive(iter([request]), timeout=10))
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        for metadata in ((("authorization", "Bearer k1"),), (("x-api-key", "k1"),)):
            answer = stub.Perceive(request, metadata=metadata, timeout=10)
            assert answer.detections[0].score == pytest.approx(200 / 255, abs=0.01)
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING


def test_queue_full_is_resource_exhausted_and_deadline_is_deadline_exceeded() -> None:
    gate = threading.Event()
    gate.set()
    config = ServeConfig(grpc_port=0, max_batch=1, batch_workers=1, queue_size=1)
    perceiver = StatsPerceiver(gate)
    service = Service(config, lambda: perceiver)
    with running_server(service) as (_, _, app):
        gate.clear()
        perceiver.entered.clear()
        with grpc.insecure_channel(f"127.0.0.1:{app.state.grpc.port}") as channel:
            stub = perception_pb2_grpc.PerceptionStub(channel)
            with ThreadPoolExecutor(2) as pool:
                # The first request is being worked on (held at the gate), the second waits in
                # the one-place queue: a third finds the queue full.
                held = [pool.submit(stub.Perceive, Request(image=solid_jpeg(10)), timeout=30)]
                assert perceiver.entered.wait(10)
                held.append(pool.submit(stub.Perceive, Request(image=solid_jpeg(20)), timeout=30))
                deadline = time.monotonic() + 10
                while service.batcher.depth < 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
                with pytest.raises(grpc.RpcError) as error:
                    stub.Perceive(Request(image=solid_jpeg(30)), timeout=10)
                assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                gate.set()
                assert [f.result(30).detections[0].score for f in held] == \
                    pytest.approx([10 / 255, 20 / 255], abs=0.01)
            gate.clear()
            with pytest.raises(grpc.RpcError) as error:
                stub.Perceive(Request(image=solid_jpeg(40)), timeout=0.5)
            assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            gate.set()
