"""Helpers for the serving tests: real uvicorn servers on 127.0.0.1, and a small stand-in model.

`StatsPerceiver` has the Perceiver's interface and computes real image statistics (mean
brightness as a score, a bright-pixel mask), so distinct images give distinct results; it can be
held at a gate to make queue-full, deadline and shutdown behaviour deterministic. The
end-to-end tests use the real `Perceiver` with the zoo models from the mirror.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import uvicorn

from perception.frames import Frame
from perception.modelspec import InputSpec, ModelSpec
from perception.results import Detection, FrameResult
from serving.http.app import create_app
from serving.http.server import server_config
from serving.service import ServeConfig, Service

BDD = "drives/bdd100k_frames/twinlitenet"
BDD_CAMERA = Path(__file__).resolve().parents[1] / "perception/cameras/bdd100k_1280x720.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StatsPerceiver:
    """A real, tiny 'model': per-frame brightness statistics; records its batch sizes."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate
        self.entered = threading.Event()  # set once a batch is being worked on
        self.batches: list[int] = []
        self.specs = [ModelSpec("image-stats", "detection", "yolox", InputSpec(64, 64),
                                classes=("bright",))]
        self.model_names = ["image-stats"]

    def perceive(self, frames: list[Frame]) -> list[FrameResult]:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(30)
        self.batches.append(len(frames))
        results = []
        for frame in frames:
            gray = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)
            mean = float(gray.mean())
            score = round(mean / 255.0, 6)
            box = (0.0, 0.0, float(frame.width), float(frame.height))
            result = FrameResult(
                frame_index=frame.index, source=frame.source, timestamp=frame.timestamp,
                width=frame.width, height=frame.height, models=self.model_names,
                detections=[Detection(class_id=0, label="bright", score=score, box=box)],
                timings_ms={"stats": 0.1})
            result.drivable = (gray > mean).astype(np.uint8)
            results.append(result)
        return results

    def close(self) -> None:
        pass


def solid_jpeg(value: int, size: tuple[int, int] = (64, 48)) -> bytes:
    image = np.full((size[1], size[0], 3), value, np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


@contextmanager
def running_server(service: Service, static_dir: Path | None = None
                   ) -> Iterator[tuple[str, Service, object]]:
    """A real uvicorn server in a thread; yields (base URL, service, app)."""
    port = free_port()
    app = create_app(service, static_dir) if static_dir else create_app(service)
    # The server `perception serve` runs: its limits, its JSON protocol errors.
    config = replace(service.config, host="127.0.0.1", port=port)
    server = uvicorn.Server(server_config(app, config, "warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not (server.started and service.ready):
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"server did not start (load error: {service.load_error})")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", service, app
    finally:
        server.should_exit = True
        thread.join(30)


_KEEP_RUNNING: list = []


@cache
def real_server(grpc: bool = True) -> tuple[str, Service, object]:
    """One server with the real models per test process, shared by the serving test files.

    It is not stopped: its threads are daemons and end with the test process.
    """
    from perception.pipeline import Perceiver

    config = ServeConfig(port=0, grpc_port=0 if grpc else None, max_batch=8,
                         cameras={"bdd": BDD_CAMERA}, models=["yolox-nano", "twinlitenet"])
    service = Service(config, lambda: Perceiver.from_names(config.models, fit_lanes=False))
    context = running_server(service)
    _KEEP_RUNNING.append(context)  # a collected context manager would stop the server
    return context.__enter__()


def assert_same_as_v1(as_numpy: Callable[[str], np.ndarray], v1: dict) -> None:
    """A v2 `perception` answer (its outputs by name, as a Triton client's `as_numpy` gives
    them) holds the same detections and masks as our API's JSON for the same image."""
    detections = v1["detections"]
    assert len(detections) > 0
    np.testing.assert_allclose(as_numpy("boxes"), [d["box"] for d in detections], atol=1e-3)
    np.testing.assert_allclose(as_numpy("scores"), [d["score"] for d in detections], atol=1e-6)
    assert as_numpy("classes").tolist() == [d["class_id"] for d in detections]
    assert [label if isinstance(label, str) else label.decode()  # JSON: str, binary: bytes
            for label in as_numpy("labels")] == [d["label"] for d in detections]
    for which in ("drivable", "lanes"):
        png = np.frombuffer(base64.b64decode(v1["masks"][which]["data"]), np.uint8)
        mask = (cv2.imdecode(png, cv2.IMREAD_GRAYSCALE) > 0).astype(np.uint8)
        np.testing.assert_array_equal(as_numpy(which), mask)
