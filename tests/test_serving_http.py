"""The HTTP and WebSocket API against real uvicorn servers on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving_harness import BDD, StatsPerceiver, real_server, running_server, solid_jpeg
from websockets.sync.client import connect

from perception.lane_lines import fit_lane_boundaries
from perception.results import FrameResult
from serving.service import ServeConfig, Service


def decode_run_lengths(counts: list[int], width: int, height: int) -> np.ndarray:
    """A mask from the API's run lengths (row-major, starting with a run of 0s), as a
    client decodes it."""
    values = np.zeros(len(counts), np.uint8)
    values[1::2] = 1
    return np.repeat(values, counts).reshape(height, width)


@pytest.fixture(scope="module")
def real(models_mirror: Path) -> str:
    return real_server()[0]


@pytest.fixture(scope="module")
def images(assets: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((assets / BDD).glob("*.jpg"))]


def post_image(base: str, data: bytes, content_type: str = "image/jpeg", query: str = "",
               **kwargs) -> httpx.Response:
    return httpx.post(f"{base}/v1/perceive{query}", content=data,
                      headers={"content-type": content_type, **kwargs.pop("headers", {})},
                      timeout=60, **kwargs)


def test_health_ready_models_metrics(real: str, images: list[bytes]) -> None:
    assert httpx.get(f"{real}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{real}/readyz").json() == {"status": "ready"}
    models = httpx.get(f"{real}/v1/models").json()["models"]
    assert [m["name"] for m in models] == ["yolox-nano", "twinlitenet"]
    assert models[0]["task"] == "detection" and "car" in models[0]["classes"]
    assert models[1]["input"]["width"] > 0
    assert post_image(real, images[0]).status_code == 200
    text = httpx.get(f"{real}/metrics").text
    for name in ("perception_requests_total", "perception_request_seconds_bucket",
                 "perception_stage_seconds_bucket", "perception_queue_depth",
                 "perception_batch_size_bucket"):
        assert name in text


def test_perceive_raw_jpeg_png_and_multipart_agree(real: str, images: list[bytes]) -> None:
    jpeg = images[0]
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    png = cv2.imencode(".png", image)[1].tobytes()  # same pixels, lossless
    raw = post_image(real, jpeg).json()
    as_png = post_image(real, png, "image/png").json()
    multipart = httpx.post(f"{real}/v1/perceive", files={"image": ("f.jpg", jpeg, "image/jpeg")},
                           timeout=60).json()
    assert raw["width"] == 1280 and raw["height"] == 720
    assert raw["models"] == ["yolox-nano", "twinlitenet"]
    assert any(d["category"] == "car" for d in raw["detections"])
    assert raw["plan"] is None
    for other in (as_png, multipart):
        assert other["detections"] == raw["detections"]
    drivable = raw["masks"]["drivable"]  # at twinlitenet's resolution, covering the frame
    assert drivable["encoding"] == "png" and (drivable["width"], drivable["height"]) == (640, 360)
    assert (drivable["frame_width"], drivable["frame_height"]) == (1280, 720)
    for stage in ("yolox-nano/inference", "twinlitenet/inference", "image_decode", "render"):
        assert raw["timings_ms"][stage] >= 0


def decode_png(mask: dict) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(base64.b64decode(mask["data"]), np.uint8),
                        cv2.IMREAD_GRAYSCALE) > 0


def test_mask_encodings_round_trip_at_model_and_frame_size() -> None:
    """Odd sizes, a mask that starts on: PNG and RLE give back the model's mask; stretched over
    the frame (nearest neighbour) it is the frame-size encoding."""
    rng = np.random.default_rng(3)
    drivable = (rng.random((53, 97)) > 0.6).astype(np.uint8)
    drivable[0, 0] = 1  # the run lengths start with an empty run of 0s
    result = FrameResult(frame_index=0, source="t", timestamp=0.0, width=1001, height=599)
    result.drivable = drivable
    for encoding in ("png", "rle"):
        model = result.encode_masks(encoding).drivable
        frame = result.encode_masks(encoding, "frame").drivable
        assert result.encode_masks(encoding).lanes is None
        assert (model.width, model.height, model.frame_width, model.frame_height) == \
            (97, 53, 1001, 599)
        assert (frame.width, frame.height, frame.frame_width, frame.frame_height) == \
            (1001, 599, 1001, 599)
        decoded = [decode_png(m.model_dump()) if encoding == "png" else
                   decode_run_lengths(m.counts, m.width, m.height) > 0 for m in (model, frame)]
        assert np.array_equal(decoded[0], drivable > 0)
        stretched = cv2.resize(drivable, (1001, 599), interpolation=cv2.INTER_NEAREST) > 0
        assert np.array_equal(decoded[1], stretched)
    assert result.encode_masks("rle").drivable.counts[0] == 0


def test_outputs_and_mask_encodings(real: str, images: list[bytes]) -> None:
    """Masks at the model's resolution, PNG and RLE alike, stretched over the frame as the
    docs tell a client to, are the masks the server resizes to frame size when asked."""
    png = post_image(real, images[1], query="?mask_encoding=png").json()["masks"]
    rle = post_image(real, images[1], query="?mask_encoding=rle").json()["masks"]
    frame_png = post_image(real, images[1], query="?mask_size=frame").json()["masks"]
    frame_rle = post_image(real, images[1],
                           query="?mask_size=frame&mask_encoding=rle").json()["masks"]
    for which in ("drivable", "lanes"):
        from_png = decode_png(png[which])
        from_rle = decode_run_lengths(rle[which]["counts"], rle[which]["width"],
                                      rle[which]["height"]) > 0
        assert from_png.shape == (360, 640) and np.array_equal(from_png, from_rle)
        assert (frame_png[which]["width"], frame_png[which]["height"]) == (1280, 720)
        stretched = cv2.resize(from_png.astype(np.uint8), (png[which]["frame_width"],
                                                           png[which]["frame_height"]),
                               interpolation=cv2.INTER_NEAREST) > 0
        assert np.array_equal(stretched, decode_png(frame_png[which]))
        assert np.array_equal(stretched, decode_run_lengths(frame_rle[which]["counts"], 1280,
                                                            720) > 0)
    assert from_png.any()
    only_detections = post_image(real, images[0], query="?outputs=detections").json()
    assert only_detections["masks"] is None and only_detections["detections"]
    only_masks = post_image(real, images[0], query="?outputs=masks").json()
    assert only_masks["detections"] == [] and only_masks["masks"]["drivable"]
    assert only_masks["lane_boundaries"] == []  # fitted only for the outputs that have them
    lanes = post_image(real, images[1], query="?outputs=lanes,masks&mask_encoding=rle").json()
    assert lanes["detections"] == [] and lanes["lane_boundaries"]
    mask = lanes["masks"]["lanes"]  # the boundaries are fitted to it, in frame pixels
    fitted = fit_lane_boundaries(decode_run_lengths(mask["counts"], mask["width"],
                                                    mask["height"]), 1280, 720)
    assert lanes["lane_boundaries"] == [b.model_dump(mode="json") for b in fitted]


def test_concurrent_distinct_images_get_their_own_results(real: str,
                                                          images: list[bytes]) -> None:
    """Batched answers equal the one-at-a-time answers for the same image."""
    def outputs(answer: httpx.Response) -> str:
        assert answer.status_code == 200
        return json.dumps([answer.json()["detections"], answer.json()["masks"]])

    query = "?mask_encoding=rle"
    alone = [outputs(post_image(real, data, query=query)) for data in images]
    assert len(set(alone)) == len(images), "the test images must give distinct results"
    order = list(range(len(images))) * 2
    with ThreadPoolExecutor(len(order)) as pool:
        answers = list(pool.map(lambda i: post_image(real, images[i], query=query), order))
    for i, answer in zip(order, answers, strict=True):
        assert outputs(answer) == alone[i]
    samples = {(s.name, s.labels.get("le")): s.value
               for family in text_string_to_metric_families(httpx.get(f"{real}/metrics").text)
               for s in family.samples}
    batches = samples[("perception_batch_size_count", None)]
    assert batches - samples[("perception_batch_size_bucket", "1.0")] > 0, \
        "concurrent requests should have shared batches"


@pytest.mark.parametrize(("body", "content_type", "status", "words"), [
    (b"", "image/jpeg", 400, "empty"),
    (b"not an image at all", "image/jpeg", 400, "is not a JPEG"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg", 400, "truncated"),
    (b"\x89PNG\r\n\x1a\n", "image/png", 400, "truncated"),
    (b"abc", "text/plain", 415, "content type"),
    (b"abc", "", 415, "content type"),
])
def test_bad_bodies_get_json_errors(real: str, body: bytes, content_type: str, status: int,
                                    words: str) -> None:
    answer = post_image(real, body, content_type)
    assert answer.status_code == status
    assert answer.json()["status"] == status and words in answer.json()["error"]


def test_truncated_jpeg_with_valid_header_is_400(real: str, images: list[bytes]) -> None:
    answer = post_image(real, images[0][:2000])
    assert answer.status_code in (200, 400)  # OpenCV may decode a partial JPEG; never a 500
    assert "error" in answer.json() or "detections" in answer.json()


def test_bad_query_and_unknown_route(real: str, images: list[bytes]) -> None:
    for query, status in (("?outputs=faces", 400), ("?outputs=", 400),
                          ("?mask_encoding=jpeg", 422), ("?mask_size=half", 422),
                          ("?camera=front", 400)):
        answer = post_image(real, images[0], query=query)
        assert answer.status_code == status, query
        assert set(answer.json()) == {"error", "status"}
    missing = httpx.get(f"{real}/nope")
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found", "status": 404}
    wrong_method = httpx.get(f"{real}/v1/perceive")
    assert wrong_method.status_code == 405 and wrong_method.json()["status"] == 405
    no_field = httpx.post(f"{real}/v1/perceive", files={"other": ("a", b"x")})
    assert no_field.status_code == 400 and "'image'" in no_field.json()["error"]


def test_plan_and_bev(real: str, images: list[bytes], assets: Path) -> None:
    answer = post_image(real, images[0], query="?outputs=detections,plan,bev&camera=bdd")
    assert answer.status_code == 200
    body = answer.json()
    plan = body["plan"]
    assert plan["status"] in ("ok", "degraded", "safe_stop")
    if plan["status"] == "safe_stop":
        assert plan["reasons"] and plan["waypoints"] == []
    else:
        assert len(plan["waypoints"]) > 3 and all(x > 0 for x, _ in plan["waypoints"])
    assert set(plan["control"]) == {"steer", "throttle", "brake"}
    assert body["timings_ms"]["plan"] > 0 and body["masks"] is None
    bev = body["bev"]
    picture = cv2.imdecode(np.frombuffer(base64.b64decode(bev["png"]), np.uint8),
                           cv2.IMREAD_COLOR)
    assert picture.ndim == 3 and bev["metres_per_pixel"] > 0
    assert bev["x_range"][0] < bev["x_range"][1] and bev["y_range"][0] < bev["y_range"][1]
    only_plan = post_image(real, images[0], query="?outputs=plan").json()  # default camera
    assert only_plan["plan"]["status"] and only_plan["bev"] is None
    kitti = (assets / "drives/kitti_object/image_2/000001.png").read_bytes()
    wrong_size = post_image(real, kitti, "image/png", query="?outputs=plan")
    assert wrong_size.status_code == 400 and "1242x375" in wrong_size.json()["error"]


def test_docs_page_and_openapi_work_offline(real: str) -> None:
    page = httpx.get(f"{real}/docs").text
    assert "swagger-ui-bundle.js" in page
    assert "cdn" not in page.lower() and "https://" not in page
    redoc = httpx.get(f"{real}/redoc").text
    assert "redoc.standalone.js" in redoc and "https://" not in redoc
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        assert httpx.get(f"{real}/static-offline-docs/{asset}").status_code == 200
    schema = httpx.get(f"{real}/openapi.json").json()
    operation = schema["paths"]["/v1/perceive"]["post"]
    assert set(operation["requestBody"]["content"]) == {"image/jpeg", "image/png",
                                                        "multipart/form-data"}
    assert "example" in operation["responses"]["200"]["content"]["application/json"]


def test_web_page_and_static_assets(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<html>viewer</html>")
    (tmp_path / "app.js").write_text("console.log(1)")
    service = Service(ServeConfig(), StatsPerceiver)
    with running_server(service, static_dir=tmp_path) as (base, _, _):
        assert httpx.get(f"{base}/").text == "<html>viewer</html>"
        assert httpx.get(f"{base}/static/app.js").text == "console.log(1)"
        missing = httpx.get(f"{base}/static/none.js")
        assert missing.status_code == 404 and missing.json()["status"] == 404


def test_size_limits_413(tmp_path: Path) -> None:
    config = ServeConfig(max_body_bytes=50_000, max_pixels=1000 * 1000)
    with running_server(Service(config, StatsPerceiver)) as (base, _, _):
        big_body = post_image(base, b"\xff\xd8" + bytes(60_000))
        assert big_body.status_code == 413 and "limit" in big_body.json()["error"]

        def chunks():  # no Content-Length: the limit is counted as the body streams in
            for _ in range(10):
                yield bytes(10_000)

        chunked = httpx.post(f"{base}/v1/perceive", content=chunks(),
                             headers={"content-type": "image/jpeg"})
        assert chunked.status_code == 413
        # A small file that would decode to 2000x2000 pixels: refused from its header alone.
        bomb = cv2.imencode(".png", np.zeros((2000, 2000, 3), np.uint8))[1].tobytes()
        assert len(bomb) < 50_000
        answer = post_image(base, bomb, "image/png")
        assert answer.status_code == 413 and "2000x2000" in answer.json()["error"]
        fine = post_image(base, solid_jpeg(100, (800, 600)))
        assert fine.status_code == 200
        no_camera = post_image(base, solid_jpeg(100), query="?outputs=plan")
        assert no_camera.status_code == 400 and "--camera" in no_camera.json()["error"]


def test_api_keys_and_cors(tmp_path: Path) -> None:
    config = ServeConfig(api_keys=("s3cret", "other-key"), cors_origins=("http://viewer.test",))
    with running_server(Service(config, StatsPerceiver)) as (base, _, _):
        image = solid_jpeg(80)
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").status_code == 200
        for path in ("/v1/models", "/metrics"):
            refused = httpx.get(f"{base}{path}")
            assert refused.status_code == 401 and refused.json()["status"] == 401
        assert post_image(base, image).status_code == 401
        wrong = post_image(base, image, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        assert post_image(base, image, headers={"authorization": "Bearer s3cret"}).status_code \
            == 200
        assert post_image(base, image, headers={"x-api-key": "other-key"}).status_code == 200
        assert httpx.get(f"{base}/metrics", headers={"x-api-key": "s3cret"}).status_code == 200
        preflight = httpx.options(f"{base}/v1/perceive", headers={
            "origin": "http://viewer.test", "access-control-request-method": "POST"})
        assert preflight.headers["access-control-allow-origin"] == "http://viewer.test"
        with pytest.raises(Exception, match="403"):
            connect(base.replace("http", "ws") + "/v1/stream", open_timeout=5)
        with connect(base.replace("http", "ws") + "/v1/stream?api_key=s3cret") as ws:
            ws.send(image)
            assert json.loads(ws.recv(10))["sequence"] == 0


def test_no_cors_unless_configured(real: str) -> None:
    answer = httpx.get(f"{real}/healthz", headers={"origin": "http://elsewhere.test"})
    assert "access-control-allow-origin" not in answer.headers


def test_queue_full_is_503_with_retry_after_and_deadline_is_504() -> None:
    gate = threading.Event()
    config = ServeConfig(max_batch=1, batch_workers=1, queue_size=2, request_timeout_s=20)
    perceiver = StatsPerceiver(gate)
    service = Service(config, lambda: perceiver)
    gate.set()  # let the warm-up through, then hold the model
    with running_server(service) as (base, _, _):
        gate.clear()
        perceiver.entered.clear()
        with ThreadPoolExecutor(3) as pool:
            # One request held in the model, two waiting fill the queue: a fourth is refused.
            held = [pool.submit(post_image, base, solid_jpeg(10))]
            assert perceiver.entered.wait(10)
            held += [pool.submit(post_image, base, solid_jpeg(v)) for v in (20, 30)]
            deadline = time.monotonic() + 10
            while service.batcher.depth < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            refused = post_image(base, solid_jpeg(40))
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert "queue is full" in refused.json()["error"]
            gate.set()
            scores = [f.result(30).json()["detections"][0]["score"] for f in held]
        assert scores == pytest.approx([10 / 255, 20 / 255, 30 / 255], abs=0.01)
        assert 'perception_dropped_frames_total{reason="queue_full"} 1.0' in \
            httpx.get(f"{base}/metrics").text
    config = ServeConfig(max_batch=1, request_timeout_s=0.3)
    gate = threading.Event()
    service = Service(config, lambda: StatsPerceiver(gate))
    gate.set()
    with running_server(service) as (base, _, _):
        gate.clear()
        late = post_image(base, solid_jpeg(50))
        gate.set()
        assert late.status_code == 504 and late.json()["status"] == 504


def test_websocket_stream_in_order_with_drops_and_errors(real: str, images: list[bytes]) -> None:
    url = real.replace("http", "ws") + "/v1/stream?outputs=detections"
    with connect(url, max_size=None) as ws:
        ws.send(images[0])
        first = json.loads(ws.recv(30))
        assert first["sequence"] == 0 and first["dropped"] == 0 and first["detections"]
        ws.send(b"garbage")
        bad = json.loads(ws.recv(30))
        assert bad["sequence"] == 1 and "is not a JPEG" in bad["error"]
        ws.send("text frame")
        assert "binary" in json.loads(ws.recv(30))["error"]
        for data in images:  # faster than the models: the newest frame wins
            ws.send(data)
        answers = []
        while not answers or answers[-1]["sequence"] < 2 + len(images):
            answers.append(json.loads(ws.recv(30)))
    sequences = [a["sequence"] for a in answers]
    assert sequences == sorted(sequences) and sequences[-1] == 2 + len(images)
    assert len(answers) + sum(a["dropped"] for a in answers) == len(images)
    assert sum(a["dropped"] for a in answers) > 0
    assert answers[-1]["masks"] is None and answers[-1]["detections"]


def test_websocket_bad_options_close_with_error(real: str) -> None:
    with connect(real.replace("http", "ws") + "/v1/stream?outputs=faces") as ws:
        message = json.loads(ws.recv(10))
    assert message["status"] == 400 and "faces" in message["error"]
