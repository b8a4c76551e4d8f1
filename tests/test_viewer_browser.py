"""The web viewer end to end: Debian's headless Chromium, driven by Playwright, against the real
service (real models) on 127.0.0.1.

What the page shows is checked against what the API answers for the same bytes: the boxes it
lists, the overlay it draws (pixels read back from the canvas), the error it prints. Screenshots
of each state go to $PERCEPTION_ARTIFACTS/viewer (or a temp folder).
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import uvicorn

from perception.frames import Frame
from perception.modelspec import InputSpec, ModelSpec
from perception.pipeline import Perceiver
from perception.results import CameraCheck, Detection, EgoLane, FrameResult, LaneBoundary
from serving.http.app import create_app
from serving.service import ServeConfig, Service

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # The webcam test gets Chromium's synthetic camera, with the permission prompt answered.
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]
STILL = Path("drives/bdd100k_frames/yolop/adb4871d-4d063244.jpg")
MODELS = ["yolox-nano", "twinlitenet"]
# The camera the BDD100K frames are planned with (plan and bev outputs need one).
CAMERAS = {"bdd100k": Path(__file__).resolve().parents[1] / "perception" / "cameras"
           / "bdd100k_1280x720.yaml"}
CAR_BLUE = (0x4F, 0xC3, 0xF7)  # CATEGORY_COLOURS.car in app.js
PATH_MAGENTA = (0xFF, 0x4F, 0xD8)  # PATH_COLOUR in app.js
IN_PATH_RED = (0xFF, 0x3D, 0x00)  # IN_PATH_COLOUR in app.js
EGO_CYAN = (0x00, 0xE5, 0xFF)  # EGO_BOUNDARY_COLOUR
OTHER_WHITE = (0xEC, 0xEF, 0xF1)  # OTHER_BOUNDARY_COLOUR


@contextmanager
def live_server(app) -> Iterator[str]:
    """Serve `app` with uvicorn in a thread on a free port of 127.0.0.1; yield its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def server(models_mirror: Path) -> Iterator[str]:
    service = Service(ServeConfig(models=MODELS, cameras=CAMERAS),
                      lambda: Perceiver.from_names(MODELS))
    with live_server(create_app(service)) as url:
        deadline = time.monotonic() + 120
        while httpx.get(f"{url}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the service never became ready"
            time.sleep(0.2)
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh user data dir
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1440, "height": 900})
        yield context
        context.close()


@pytest.fixture
def page(browser, server: str) -> Iterator[object]:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{server}/")
    page.wait_for_selector("#ready.pill-ok", timeout=15_000)
    page.wait_for_function("document.getElementById('models').dataset.loaded === '1'")
    yield page
    page.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = os.environ.get("PERCEPTION_ARTIFACTS")
    if not root:
        return tmp_path_factory.mktemp("viewer-artifacts")
    folder = Path(root) / "viewer"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def api_perceive(server: str, data: bytes, content_type: str, outputs: str) -> httpx.Response:
    return httpx.post(f"{server}/v1/perceive", params={"outputs": outputs}, content=data,
                      headers={"content-type": content_type}, timeout=60)


def png_mask(encoded: dict) -> np.ndarray:
    """The mask stretched over the frame it covers (nearest neighbour), as the API means."""
    png = np.frombuffer(base64.b64decode(encoded["data"]), np.uint8)
    mask = cv2.imdecode(png, cv2.IMREAD_GRAYSCALE)
    return cv2.resize(mask, (encoded["frame_width"], encoded["frame_height"]),
                      interpolation=cv2.INTER_NEAREST) > 127


def canvas_rgba(page, canvas_id: str) -> np.ndarray:
    """The canvas's pixels, read back through a lossless PNG data URL."""
    url = page.evaluate(f"document.getElementById('{canvas_id}').toDataURL('image/png')")
    png = np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8)
    return cv2.cvtColor(cv2.imdecode(png, cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)


def test_still_shows_the_apis_boxes_and_draws_the_overlay(page, server: str, assets: Path,
                                                          artefacts: Path) -> None:
    image = assets / STILL
    page.set_input_files("#file-input", str(image))
    page.wait_for_function("document.body.dataset.results === '1'", timeout=30_000)
    outputs = page.evaluate("outputs")  # what the page settled on asking for
    expected = api_perceive(server, image.read_bytes(), "image/jpeg", outputs).json()

    # The listed detections are the API's, surest first.
    listed = page.eval_on_selector_all(
        "#detections li.detection",
        "items => items.map(i => [i.dataset.label, Number(i.dataset.score),"
        " i.dataset.box.split(',').map(Number)])")
    wanted = sorted(expected["detections"], key=lambda d: -d["score"])
    assert len(listed) == len(wanted) >= 5
    for (label, score, box), detection in zip(listed, wanted, strict=True):
        assert label == detection["label"]
        assert score == pytest.approx(detection["score"], abs=1e-9)
        assert box == pytest.approx(detection["box"], abs=1e-6)
    assert page.inner_text("#detection-count") == str(len(wanted))

    # The frame is the picture; the overlay covers the drivable area and outlines the boxes.
    frame = canvas_rgba(page, "frame-canvas")
    assert frame.shape[:2] == (expected["height"], expected["width"])
    picture = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)
    assert np.abs(frame[..., :3].astype(int) - picture).mean() < 4  # decoders differ slightly
    overlay = canvas_rgba(page, "overlay-canvas")
    drawn = overlay[..., 3] > 0
    drivable = png_mask(expected["masks"]["drivable"])
    assert drivable.sum() > 0.02 * drivable.size
    assert (drawn & drivable).sum() >= 0.99 * drivable.sum()
    assert (drawn & ~drivable).sum() > 0  # lanes and boxes outside it
    car = next(d for d in wanted if d["label"] == "car")  # the surest car is drawn last, on top
    x1, y1, x2, y2 = car["box"]
    edge = overlay[int((y1 + y2) / 2), int(x1)]  # inside the >= 2.8 px stroke centred on x1
    assert np.abs(edge[:3].astype(int) - CAR_BLUE).max() <= 2 and edge[3] == 255

    # The status strip shows the models, the stages the server timed, and the plan panel either
    # the control command or why there is no plan.
    assert page.inner_text("#models") == ", ".join(expected["models"])
    stages = page.eval_on_selector_all(".stage-time", "items => items.map(i => i.dataset.stage)")
    assert set(expected["timings_ms"]) <= set(stages) and "round trip" in stages
    if expected.get("plan"):
        steer = expected["plan"]["control"]["steer"]
        assert float(page.inner_text("#steer")) == pytest.approx(steer, abs=0.0051)
        assert page.inner_text("#plan-status") == expected["plan"]["status"].replace("_", " ")
        if expected["plan"]["waypoints"]:  # the path is drawn in the bird's-eye panel
            bev = canvas_rgba(page, "bev-canvas")
            assert (np.abs(bev[..., :3].astype(int) - PATH_MAGENTA).max(axis=-1) <= 2).sum() > 20
    else:
        assert page.inner_text("#plan-status") == "no plan"
        assert "plan" in page.inner_text("#plan-reasons")
    page.screenshot(path=str(artefacts / "still.png"))

    # Layers can be switched off: without boxes the box edge is no longer drawn.
    page.uncheck("#layer-boxes")
    assert canvas_rgba(page, "overlay-canvas")[int((y1 + y2) / 2), int(x1)][3] < 255


def test_video_streams_frames_one_in_flight(page, video_path: Path, artefacts: Path) -> None:
    sockets: list[list[tuple[str, object]]] = []  # per WebSocket: ("sent"|"answer", payload)

    def watch(socket) -> None:
        log: list[tuple[str, object]] = []
        sockets.append(log)
        socket.on("framesent", lambda payload: log.append(("sent", None)))
        socket.on("framereceived", lambda payload: log.append(("answer", json.loads(payload))))

    page.on("websocket", watch)
    page.set_input_files("#file-input", str(video_path))
    page.wait_for_function("Number(document.body.dataset.results) >= 4", timeout=60_000)
    assert page.eval_on_selector("#overlay-canvas", "c => [c.width, c.height]") == [960, 540]
    page.screenshot(path=str(artefacts / "video.png"))
    if page.evaluate("outputs") == "detections,masks,lanes":  # could not plan this video
        assert page.inner_text("#plan-reasons")  # and the panel says why
    if page.is_enabled("#stop"):  # a slow server may see the 8.8 s clip end first
        assert float(page.inner_text("#fps")) > 0
        page.click("#stop")
        assert page.inner_text("#message") == "Stopped."
    else:
        assert page.inner_text("#message").startswith("Video finished: ")

    # Never more than one frame in flight: sends and answers alternate, the server answers
    # every frame in order and drops none; frames the video showed meanwhile were skipped.
    log = sockets[-1]  # an earlier socket may have been refused (no plan) and reopened
    kinds = [kind for kind, _ in log]
    assert kinds[: len(kinds) // 2 * 2] == ["sent", "answer"] * (len(kinds) // 2)
    answers = [payload for kind, payload in log if kind == "answer"]
    assert [a["sequence"] for a in answers] == list(range(len(answers))) and len(answers) >= 4
    assert all(a["dropped"] == 0 for a in answers)
    assert int(page.inner_text("#dropped")) > 0  # the video runs at 25 frames/s


def test_webcam_streams_frames(page, artefacts: Path) -> None:
    page.click("#webcam")
    page.wait_for_function("Number(document.body.dataset.results) >= 2", timeout=30_000)
    assert page.inner_text("#source-name") == "webcam"
    page.screenshot(path=str(artefacts / "webcam.png"))
    page.click("#stop")
    assert page.is_disabled("#stop")


def test_corrupt_files_show_a_clear_message(page, server: str, tmp_path: Path,
                                            artefacts: Path) -> None:
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"this is not a JPEG at all\n" * 40)
    expected = api_perceive(server, corrupt.read_bytes(), "image/jpeg", "detections")
    assert expected.status_code == 400
    page.set_input_files("#file-input", str(corrupt))
    message = page.locator("#message.error")
    message.wait_for(timeout=15_000)
    assert message.inner_text() == f"The server rejected corrupt.jpg: {expected.json()['error']}"
    page.screenshot(path=str(artefacts / "corrupt.png"))

    broken_video = tmp_path / "broken.mp4"
    broken_video.write_bytes(os.urandom(4096))
    page.set_input_files("#file-input", str(broken_video))
    page.wait_for_function(
        "document.getElementById('message').textContent.includes('cannot play broken.mp4')")
    assert page.evaluate("document.body.dataset.results") == "0"


def test_not_ready_server_is_reported(browser, models_mirror: Path, assets: Path) -> None:
    """While the models load, the page says so and a still gets the server's 503 message."""
    gate = threading.Event()

    def slow_perceiver() -> Perceiver:
        gate.wait(timeout=60)
        return Perceiver.from_names(MODELS)

    service = Service(ServeConfig(models=MODELS), slow_perceiver)
    with live_server(create_app(service)) as url:
        page = browser.new_page()
        try:
            page.goto(f"{url}/")
            page.wait_for_selector("#ready.pill-warn", timeout=15_000)
            assert page.inner_text("#ready") == "server loading"
            expected = api_perceive(url, (assets / STILL).read_bytes(), "image/jpeg", "detections")
            assert expected.status_code == 503
            page.set_input_files("#file-input", str(assets / STILL))
            message = page.locator("#message.error")
            message.wait_for(timeout=15_000)
            assert message.inner_text().endswith(expected.json()["error"])
            gate.set()
            page.wait_for_selector("#ready.pill-ok", timeout=30_000)
        finally:
            gate.set()
            page.close()


def test_api_key_is_asked_for_and_used(browser, models_mirror: Path, assets: Path) -> None:
    """With --api-key-file the page asks for the key, then sends it over HTTP and WebSocket."""
    service = Service(ServeConfig(models=MODELS, api_keys=("s3cret",)),
                      lambda: Perceiver.from_names(MODELS))
    with live_server(create_app(service)) as url:
        page = browser.new_page()
        try:
            page.goto(f"{url}/")
            page.wait_for_selector("#ready.pill-ok", timeout=60_000)
            page.wait_for_selector("#api-key", state="visible")
            assert page.inner_text("#models") == "API key needed"
            page.click("#webcam")
            page.wait_for_selector("#message.error")
            assert page.inner_text("#message") == (
                "The server refused the stream: missing or wrong API key.")

            page.fill("#api-key", "s3cret")
            page.press("#api-key", "Enter")
            page.wait_for_function("document.getElementById('models').dataset.loaded === '1'")
            page.set_input_files("#file-input", str(assets / STILL))
            page.wait_for_function("document.body.dataset.results === '1'", timeout=30_000)
            page.click("#webcam")
            page.wait_for_function("Number(document.body.dataset.results) >= 2", timeout=30_000)
            page.click("#stop")
        finally:
            page.close()


class FilledPerceiver:
    """The Perceiver's interface; every frame gets the same hand-filled result of issue 12: two
    cars with distances (one in the ego path), a traffic light without, three lane boundaries,
    the ego lane and a camera check that says the camera file does not fit."""

    # An input as large as a real model's: the service decodes the 1280x720 frame in full.
    specs = [ModelSpec("filled", "detection", "yolox", InputSpec(640, 640), classes=("car",))]
    model_names = ["filled"]
    detections = [
        Detection(class_id=2, label="car", score=0.87, box=(560, 380, 720, 480), category="car",
                  distance_m=12.3, distance_source="both", in_path=True),
        Detection(class_id=2, label="car", score=0.64, box=(900, 390, 1100, 500),
                  category="car", distance_m=143.4, distance_source="ground", in_path=False),
        Detection(class_id=9, label="traffic light", score=0.5, box=(700, 100, 720, 150),
                  category="traffic_light")]
    lanes = [
        LaneBoundary(position="ego_left", image_points=[(380, 700), (600, 470)],
                     ground_points=[(3.5, 1.8), (20.0, 1.7)]),
        LaneBoundary(position="ego_right", image_points=[(1000, 700), (700, 470)],
                     ground_points=[(3.5, -1.9), (20.0, -1.8)]),
        LaneBoundary(position="other", image_points=[(60, 700), (520, 470)])]

    def perceive(self, frames: list[Frame]) -> list[FrameResult]:
        return [FrameResult(
            frame_index=f.index, source=f.source, timestamp=f.timestamp, width=f.width,
            height=f.height, models=self.model_names, detections=self.detections,
            lane_boundaries=self.lanes, ego_lane=EgoLane(width_m=3.55, offset_m=-0.2),
            camera_check=CameraCheck(status="mismatch", pitch_error_deg=2.5))
            for f in frames]

    def close(self) -> None:
        pass


def near(pixel: np.ndarray, colour: tuple[int, int, int]) -> bool:
    """This colour, mostly opaque (a thin line's centre is a little antialiased)."""
    return int(np.abs(pixel[:3].astype(int) - colour).max()) <= 2 and pixel[3] > 200


def test_distance_in_path_lanes_and_camera_check_are_shown(browser, assets: Path,
                                                           artefacts: Path) -> None:
    """A server whose results carry distances, lane boundaries, the ego lane and a camera
    check (filled by hand: no camera, so the page falls back to detections and masks)."""
    service = Service(ServeConfig(models=["filled"]), FilledPerceiver)
    with live_server(create_app(service)) as url:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        try:
            page.goto(f"{url}/")
            page.wait_for_selector("#ready.pill-ok", timeout=15_000)
            page.set_input_files("#file-input", str(assets / STILL))
            page.wait_for_function("document.body.dataset.results === '1'", timeout=30_000)
            listed = page.eval_on_selector_all(
                "#detections li.detection",
                "items => items.map(i => [i.querySelector('span').textContent,"
                " i.dataset.distance ?? null, i.classList.contains('in-path')])")
            assert listed == [["car 12.3 m", "12.3", True], ["car 143 m", "143.4", False],
                              ["traffic light", None, False]]
            assert page.inner_text("#lane-info") == (
                "lane 3.5 m wide, car 0.20 m right of centre · camera mismatch (pitch +2.5°)")
            assert "warn" in page.get_attribute("#lane-info", "class")

            overlay = canvas_rgba(page, "overlay-canvas")
            assert near(overlay[430, 560], IN_PATH_RED)  # the in-path car's left edge
            assert near(overlay[445, 900], CAR_BLUE)  # the parked car keeps its colour
            assert near(overlay[585, 490], EGO_CYAN)  # halfway along the ego-left line
            assert near(overlay[585, 290], OTHER_WHITE)  # and along the other lane's line
            bev = canvas_rgba(page, "bev-canvas")
            assert (np.abs(bev[..., :3].astype(int) - EGO_CYAN).max(axis=-1) <= 2).sum() > 40
            page.screenshot(path=str(artefacts / "distance_lanes.png"))

            page.uncheck("#layer-lanes")  # the lane layer holds the boundaries too
            assert not near(canvas_rgba(page, "overlay-canvas")[585, 490], EGO_CYAN)
        finally:
            page.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
