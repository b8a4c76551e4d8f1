"""The service under hostile input, on real uvicorn servers on 127.0.0.1 (issue 13).

One bad image never fails its neighbours; decoding is bounded by a pixel budget and the
request's deadline; slow, oversized and malformed connections are cut off with JSON errors
while /healthz keeps answering; a client that leaves mid-body is a 499, not a 500; a model
that failed its sha256 check is a permanent 503 with the reason; every error is JSON.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import cv2
import grpc
import httpx
import numpy as np
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from serving_harness import BDD, StatsPerceiver, free_port, real_server, solid_jpeg
from websockets.sync.client import connect

from perception.frames import Frame
from perception.modelspec import InputSpec, ModelSpec
from perception.pipeline import Perceiver
from perception.results import FrameResult
from serving.decoding import decode, reduction
from serving.http.app import create_app
from serving.http.server import server_config
from serving.proto import perception_pb2, perception_pb2_grpc
from serving.service import ServeConfig, Service


@contextmanager
def hardened(service: Service, ready: bool = True) -> Iterator[str]:
    """`perception serve`'s own uvicorn configuration (serving/http/server.py) in a thread."""
    server = uvicorn.Server(server_config(create_app(service), service.config, "warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not (server.started and (service.ready or not ready)):
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"server did not start (load error: {service.load_error})")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{service.config.port}"
    finally:
        server.should_exit = True
        thread.join(30)


def config(**changes: object) -> ServeConfig:
    return ServeConfig(port=free_port(), **changes)


def png(width: int, height: int, value: int = 90) -> bytes:
    return cv2.imencode(".png", np.full((height, width, 3), value, np.uint8))[1].tobytes()


def post(base: str, data: bytes, content_type: str = "image/png", query: str = "",
         **kwargs: object) -> httpx.Response:
    return httpx.post(f"{base}/v1/perceive{query}", content=data,
                      headers={"content-type": content_type}, timeout=60, **kwargs)


def jpeg_bomb(width: int = 7000, height: int = 4000) -> bytes:
    """A few hundred bytes of JPEG whose frame header claims width x height."""
    data = bytearray(solid_jpeg(60, (16, 16)))
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def metric(base: str, name: str, **labels: str) -> float:
    """The value of one sample of the server's /metrics (0 when absent)."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == name and sample.labels == labels)


class StripIntolerantPerceiver(StatsPerceiver):
    """A model whose own letterbox still has the old geometry (truncate, no minimum), so a
    1x10000 strip makes OpenCV's resize raise, as yolox-nano did before issue 13."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts: list[int] = []  # batch sizes tried, failed ones included

    def perceive(self, frames: list[Frame]) -> list[FrameResult]:
        self.attempts.append(len(frames))
        for frame in frames:
            ratio = min(64 / frame.width, 64 / frame.height)
            cv2.resize(frame.image, (int(frame.width * ratio), int(frame.height * ratio)))
        return super().perceive(frames)


# --- item 2: one thin image never fails its batch ---------------------------------------------

def test_a_strip_fails_alone_and_its_batch_neighbours_answer() -> None:
    model = StripIntolerantPerceiver()
    service = Service(config(max_batch=4, max_delay_ms=300), lambda: model)
    strip = png(1, 10000)
    with hardened(service) as base, ThreadPoolExecutor(4) as pool:
        values = (40, 120, 200)
        calls = [pool.submit(post, base, solid_jpeg(v), "image/jpeg") for v in values]
        bad = pool.submit(post, base, strip)
        answers = [call.result() for call in calls]
        refused = bad.result()
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert [a.json()["detections"][0]["score"] for a in answers] == \
            pytest.approx([v / 255 for v in values], abs=0.01)
        assert refused.status_code == 400
        assert refused.json()["error"] == "the models cannot process this 1x10000 image"
        assert max(model.attempts) > 1, "the four requests should have been batched together"
        assert metric(base, "perception_requests_total", route="/v1/perceive", code="500") == 0
        with connect(base.replace("http", "ws") + "/v1/stream?outputs=detections") as ws:
            ws.send(strip)
            error = json.loads(ws.recv(30))
            ws.send(solid_jpeg(90))
            after = json.loads(ws.recv(30))
        assert error["status"] == 400 and "1x10000" in error["error"]
        assert after["sequence"] == 1 and after["detections"][0]["score"] == \
            pytest.approx(90 / 255, abs=0.01)


def test_real_letterbox_models_answer_a_strip_beside_real_frames(models_mirror: Path,
                                                                 assets: Path) -> None:
    base = real_server()[0]  # yolox-nano (letterbox) + twinlitenet
    images = [p.read_bytes() for p in sorted((assets / BDD).glob("*.jpg"))][:3]
    with ThreadPoolExecutor(4) as pool:
        calls = [pool.submit(post, base, data, "image/jpeg") for data in images]
        strip = pool.submit(post, base, png(1, 10000),
                            query="?mask_encoding=rle&mask_size=frame")
        assert [call.result().status_code for call in calls] == [200, 200, 200]
        answer = strip.result()
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["width"], body["height"]) == (1, 10000)
    assert sum(body["masks"]["drivable"]["counts"]) == 10000


# --- item 5: decoding is bounded: pixel budget, deadline, reduced-scale JPEG decode -------------

def test_pixel_budget_refuses_with_retry_after_and_is_given_back() -> None:
    gate = threading.Event()
    model = StatsPerceiver(gate)
    gate.set()  # the warm-up passes; then the model is held
    service = Service(config(max_batch=1, max_pixels_in_flight=2 * 1000 * 1000),
                      lambda: model)
    with hardened(service) as base, ThreadPoolExecutor(2) as pool:
        gate.clear()
        held = [pool.submit(post, base, png(1000, 1000, v)) for v in (30, 60)]
        deadline = time.monotonic() + 10
        while service.pixels.in_use < 2 * 1000 * 1000 and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = post(base, png(1000, 1000))
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "pixels in flight" in refused.json()["error"]
        small = post(base, png(10, 10))  # still over: 100 more pixels do not fit either
        assert small.status_code == 503
        gate.set()
        assert [f.result().status_code for f in held] == [200, 200]
        assert service.pixels.in_use == 0
        assert post(base, png(1000, 1000)).status_code == 200
        assert metric(base, "perception_dropped_frames_total", reason="pixel_budget") == 2


def test_a_timed_out_request_keeps_its_pixels_until_the_models_let_go() -> None:
    gate = threading.Event()
    model = StatsPerceiver(gate)
    gate.set()
    service = Service(config(max_batch=1, request_timeout_s=0.3), lambda: model)
    with hardened(service) as base:
        gate.clear()
        late = post(base, png(1000, 1000))
        assert late.status_code == 504 and late.json()["status"] == 504
        assert service.pixels.in_use == 1000 * 1000  # its frame is still in the model
        gate.set()
        deadline = time.monotonic() + 10
        while service.pixels.in_use and time.monotonic() < deadline:
            time.sleep(0.01)
        assert service.pixels.in_use == 0


def test_jpeg_bombs_decode_within_the_deadline_and_reduced() -> None:
    """16 JPEGs of 631 bytes that claim 7000x4000 each, at once, with a 0.5 s deadline."""
    service = Service(config(request_timeout_s=0.5, max_batch=8), StatsPerceiver)
    bomb = jpeg_bomb()
    with hardened(service) as base, ThreadPoolExecutor(16) as pool:

        def timed() -> tuple[float, httpx.Response]:
            started = time.monotonic()
            answer = post(base, bomb, "image/jpeg", query="?outputs=detections")
            return time.monotonic() - started, answer

        results = list(pool.map(lambda _: timed(), range(16)))
    statuses = {answer.status_code for _, answer in results}
    assert statuses <= {200, 503, 504}, statuses
    assert max(seconds for seconds, _ in results) < 2.0  # 7 s before the deadline covered it
    answered = [answer.json() for _, answer in results if answer.status_code == 200]
    assert answered, "some bombs fit the budget and the deadline"
    for body in answered:  # decoded at 1/8 scale, answered in the frame's own pixels
        assert (body["width"], body["height"]) == (7000, 4000)
        assert body["detections"][0]["box"] == pytest.approx([0, 0, 7000, 4000])
    assert service.pixels.in_use == 0


def test_headers_past_16_kb_are_read_off_the_event_loop() -> None:
    """The image's size is read on the event loop when its header is in the first 16 KB (any
    real image's); a JPEG with a 20 KB EXIF-like block first is still answered, and a crafted
    8 MB JPEG of 4-byte segments, which takes a second of Python to walk, does not hold
    /healthz up meanwhile."""
    frame = solid_jpeg(120, (64, 48))
    padded = frame[:2] + b"\xff\xe1" + struct.pack(">H", 20_002) + bytes(20_000) + frame[2:]
    crafted = b"\xff\xd8" + b"\xff\xfe\x00\x02" * (2 * 1024 * 1024) + frame[2:]
    service = Service(config(), StatsPerceiver)
    with hardened(service) as base, ThreadPoolExecutor(2) as pool:
        answer = post(base, padded, "image/jpeg")
        assert answer.status_code == 200, answer.text
        assert (answer.json()["width"], answer.json()["height"]) == (64, 48)
        slow = pool.submit(post, base, crafted, "image/jpeg", query="?outputs=detections")
        time.sleep(0.2)  # the walk has begun
        started = time.monotonic()
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        assert time.monotonic() - started < 0.5
        assert slow.result(60).status_code == 200


def test_reduction_factor_keeps_the_model_input() -> None:
    specs = [ModelSpec("a", "detection", "yolox", InputSpec(416, 416)),
             ModelSpec("b", "segmentation", "twinlitenet", InputSpec(640, 360))]
    multitask = [ModelSpec("m", "multitask", "multitask", InputSpec(512, 288))]
    assert reduction(1280, 720, specs) == 1  # 640x360 is under 640x416
    assert reduction(1280, 720, multitask) == 2  # 640x360 >= 512x288
    assert reduction(1024, 576, multitask) == 2  # exactly the input: the model never enlarges
    assert reduction(1022, 576, multitask) == 1
    assert reduction(3840, 2160, specs) == 4  # 960x540 >= 640x416
    assert reduction(7000, 4000, specs) == 8
    assert reduction(7680, 7680, specs[:1]) == 8
    assert reduction(7000, 4000, []) == 1  # models not loaded yet
    image = decode(jpeg_bomb(1001, 999), 1001, 999, 8, 10**8)
    assert image.image.shape[:2] == (125, 126) and (image.width, image.height) == (1001, 999)


def test_reduced_decode_gives_the_same_boxes_in_frame_pixels(models_mirror: Path,
                                                             assets: Path) -> None:
    """A 3840x2160 upscale of a real frame (decoded at 1/4) against the 1280x720 original."""
    base = real_server()[0]
    original = sorted((assets / BDD).glob("*.jpg"))[0].read_bytes()
    frame = cv2.imdecode(np.frombuffer(original, np.uint8), cv2.IMREAD_COLOR)
    big = cv2.imencode(".jpg", cv2.resize(frame, (3840, 2160), interpolation=cv2.INTER_CUBIC),
                       [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    small = post(base, original, "image/jpeg", query="?mask_encoding=rle").json()
    large = post(base, big, "image/jpeg", query="?mask_encoding=rle").json()
    assert (large["width"], large["height"]) == (3840, 2160)
    drivable = large["masks"]["drivable"]  # at the model's resolution, covering 4K
    assert (drivable["width"], drivable["frame_width"]) == (640, 3840)
    cars = [np.array(d["box"]) * 3 for d in small["detections"] if d["score"] > 0.5]
    found = [np.array(d["box"]) for d in large["detections"]]
    assert cars
    for box in cars:  # every confident box of the original is found again, in 4K pixels
        assert max(iou(box, other) for other in found) > 0.8


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


# --- item 4: header limits, read timeouts, connection cap ---------------------------------------

def raw(port: int, data: bytes, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if data:
        sock.sendall(data)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict]:
    """(status, JSON body) of the one response on `sock`, read until the server closes."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower(), head
    return status, json.loads(body)


def flood_header(port: int, size: int) -> str:
    """Send one request head of `size` bytes; how it ended: the status answered, or 'cut'."""
    sock = raw(port, b"")
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size)
        return str(read_response(sock)[0])
    except OSError:
        return "cut"  # the server answered 431 and closed while the head was still coming
    finally:
        sock.close()


def test_slow_and_oversized_requests_are_cut_off_while_healthz_answers() -> None:
    service = Service(config(header_timeout_s=1.0, body_timeout_s=1.5, max_header_bytes=16384),
                      StatsPerceiver)
    port = service.config.port
    with hardened(service) as base, ThreadPoolExecutor(4) as pool:
        started = time.monotonic()
        slow_heads = [raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                      for _ in range(150)]
        silent = [raw(port, b"") for _ in range(50)]
        slow_bodies = [raw(port, b"POST /v1/perceive HTTP/1.1\r\nHost: x\r\ncontent-type: "
                                 b"image/png\r\ncontent-length: 100000\r\n\r\n\x89PNG")
                       for _ in range(50)]
        floods = [pool.submit(flood_header, port, 8_000_000) for _ in range(4)]
        big_head = raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000)
        latencies = []
        with httpx.Client(timeout=5) as client:
            for _ in range(12):
                sent = time.monotonic()
                assert client.get(f"{base}/healthz").status_code == 200
                latencies.append(time.monotonic() - sent)
                if time.monotonic() - started < 0.6:
                    for sock in slow_heads[:20]:
                        sock.send(b"a")  # dribbling does not extend the deadline
                time.sleep(0.2)
        assert max(latencies) < 1.0, latencies
        assert {read_response(s)[0] for s in slow_heads} == {408}
        assert read_response(slow_bodies[0]) == (408, {
            "error": "request body not received within 1.5 s", "status": 408})
        assert {read_response(s)[0] for s in slow_bodies[1:]} == {408}
        assert all(s.recv(10) == b"" for s in silent)  # closed quietly
        status, body = read_response(big_head)
        assert status == 431 and "over 16384 bytes" in body["error"]
        assert {f.result() for f in floods} <= {"431", "cut"}
        for sock in slow_heads + silent + slow_bodies + [big_head]:
            sock.close()
        assert httpx.get(f"{base}/healthz", timeout=2).status_code == 200


def test_connection_cap_header_count_keep_alive_and_malformed_requests_are_json() -> None:
    service = Service(config(max_connections=5, max_headers=10, keep_alive_s=0.5),
                      StatsPerceiver)
    port = service.config.port
    with hardened(service) as base:
        held = [raw(port, b"") for _ in range(5)]
        time.sleep(0.2)
        status, body = read_response(raw(port, b""))
        assert status == 503 and "too many open connections (limit 5)" in body["error"]
        for sock in held:
            sock.close()
        time.sleep(0.2)
        many = b"".join(b"X-%d: 1\r\n" % i for i in range(20))
        status, body = read_response(raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many +
                                         b"Connection: close\r\n\r\n"))
        assert status == 431 and "22 headers; the limit is 10" in body["error"]
        status, body = read_response(raw(port, b"GET /healthz HTTP/1.1\r\nNo colon here\r\n\r\n"))
        assert (status, body) == (400, {"error": "invalid HTTP request", "status": 400})
        upgrade = b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n"  # with no key
        status, body = read_response(raw(port, b"GET /v1/stream HTTP/1.1\r\nHost: x\r\n" +
                                         upgrade))
        assert status == 400 and "missing Sec-WebSocket-Key" in body["error"]
        idle = raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        assert b'{"status":"ok"}' in idle.recv(65536)
        assert idle.recv(10) == b"" and time.monotonic() - started < 2.0  # keep-alive ended
        assert httpx.get(f"{base}/healthz").status_code == 200


def test_cors_refusal_is_json(tmp_path: Path) -> None:
    service = Service(config(cors_origins=("http://viewer.test",)), StatsPerceiver)
    with hardened(service) as base:
        refused = httpx.options(f"{base}/v1/perceive", headers={
            "origin": "http://elsewhere.test", "access-control-request-method": "POST"})
        allowed = httpx.options(f"{base}/v1/perceive", headers={
            "origin": "http://viewer.test", "access-control-request-method": "POST"})
    assert refused.status_code == 400
    assert refused.json() == {"error": "Disallowed CORS origin", "status": 400}
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://viewer.test"


# --- item 7: a client that leaves mid-body ------------------------------------------------------

def test_client_leaving_mid_body_is_499_and_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    service = Service(config(), StatsPerceiver)
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addHandler(caplog.handler)
    try:
        with hardened(service) as base, caplog.at_level(logging.INFO):
            sock = raw(service.config.port, b"POST /v1/perceive HTTP/1.1\r\nHost: x\r\n"
                       b"content-type: image/png\r\ncontent-length: 100000\r\n\r\n" + bytes(1000))
            time.sleep(0.2)
            sock.close()
            deadline = time.monotonic() + 5
            while (metric(base, "perception_requests_total", route="/v1/perceive", code="499")
                   == 0 and time.monotonic() < deadline):
                time.sleep(0.05)
            assert metric(base, "perception_requests_total", route="/v1/perceive",
                          code="499") == 1
            assert metric(base, "perception_requests_total", route="/v1/perceive",
                          code="500") == 0
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    records = [r for r in caplog.records if r.name in ("perception.serving", "uvicorn.error")]
    about = [r.getMessage() for r in records if "closed" in r.getMessage()]
    assert about == [
        "client closed the connection before sending the whole body of POST /v1/perceive"]
    assert not [r for r in records if r.levelno >= logging.WARNING or r.exc_info]


# --- item 13: a model that failed its sha256 check -------------------------------------------

def test_a_model_failing_its_sha256_is_a_permanent_503_with_the_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    (cache / "yolox_nano").mkdir(parents=True)
    (cache / "yolox_nano/yolox_nano.onnx").write_bytes(b"not the pinned model")
    monkeypatch.setenv("PERCEPTION_CACHE_DIR", str(cache))
    grpc_port = free_port()
    service = Service(config(models=["yolox-nano"], grpc_port=grpc_port),
                      lambda: Perceiver.from_names(["yolox-nano"]))
    with hardened(service, ready=False) as base, \
            grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        deadline = time.monotonic() + 30
        while service.load_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        ready = httpx.get(f"{base}/readyz").json()
        answer = post(base, solid_jpeg(90), "image/jpeg")
        models = httpx.get(f"{base}/v1/models")
        with pytest.raises(grpc.RpcError) as refused:
            perception_pb2_grpc.PerceptionStub(channel).Perceive(
                perception_pb2.PerceiveRequest(image=solid_jpeg(90)), timeout=10)
    assert ready["status"] == "failed" and "sha256" in ready["error"]
    assert answer.status_code == 503 and "retry-after" not in answer.headers
    assert answer.json()["error"].startswith("the models failed to load: ModelError: ")
    assert "sha256" in answer.json()["error"]
    assert models.status_code == 503 and "retry-after" not in models.headers
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "sha256" in refused.value.details()
