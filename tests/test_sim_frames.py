"""Frames are matched to ticks by frame number, never by arrival order."""

from __future__ import annotations

import itertools
import random
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

carla = pytest.importorskip("carla", reason="needs the carla wheel (the [sim] extra)")

from perception.results import Control, FrameResult, Plan  # noqa: E402
from sim_bridge import fake_carla  # noqa: E402
from sim_bridge.bridge import SimConfig, run  # noqa: E402
from sim_bridge.camera_spec import CameraSpec  # noqa: E402
from sim_bridge.sensors import FrameBuffer, image_to_bgr  # noqa: E402

PORTS = itertools.count(2400, 2)


def data(frame: int) -> SimpleNamespace:
    return SimpleNamespace(frame=frame)


def test_take_returns_exactly_the_asked_frame_whatever_the_arrival_order() -> None:
    buffer = FrameBuffer()
    for frame in (5, 3, 4):
        buffer.put(data(frame))
    assert buffer.take(4, timeout=0.0).frame == 4
    assert buffer.stale == 1  # frame 3: the loop has moved past it
    buffer.put(data(3))  # a straggler of a frame already passed
    assert buffer.stale == 2
    assert buffer.take(5, timeout=0.0).frame == 5
    start = time.monotonic()
    assert buffer.take(6, timeout=0.05) is None  # never came: the caller treats it as missing
    assert time.monotonic() - start < 1.0
    buffer.put(data(6))  # too late now
    assert buffer.stale == 3 and buffer.take(7, timeout=0.0) is None


def test_take_waits_for_a_frame_arriving_on_another_thread_out_of_order() -> None:
    buffer = FrameBuffer()
    frames = list(range(100, 140))
    shuffled = frames[:]
    random.Random(1).shuffle(shuffled)

    def produce() -> None:
        for frame in shuffled:
            time.sleep(0.001)
            buffer.put(data(frame))

    producer = threading.Thread(target=produce)
    producer.start()
    taken = [buffer.take(frame, timeout=2.0) for frame in frames]
    producer.join()
    assert [d.frame for d in taken] == frames


def test_image_to_bgr_reads_carlas_bgra_layout() -> None:
    bgra = np.zeros((2, 3, 4), np.uint8)
    bgra[1, 2] = (10, 20, 30, 255)
    image = SimpleNamespace(raw_data=bgra.tobytes(), width=3, height=2)
    bgr = image_to_bgr(image)
    assert bgr.shape == (2, 3, 3) and tuple(bgr[1, 2]) == (10, 20, 30)


def test_closed_loop_uses_each_ticks_own_image_under_shuffled_late_callbacks() -> None:
    """Callbacks shuffled, jittered, and every 4th image held back until after the next tick:
    each perceived image is the one rendered at its tick, and a held-back one is dropped."""
    scenario = fake_carla.Scenario(shuffle_callbacks=True, callback_jitter_s=0.003,
                                   straggle_every=4, seed=3)
    server = fake_carla.FakeServer(scenario).start("127.0.0.1", next(PORTS))
    perceived, plans_at = [], []

    def perceive(frame):
        perceived.append((frame.meta["carla_frame"], frame.timestamp))
        return FrameResult(frame_index=frame.index, source=frame.source,
                           timestamp=frame.timestamp, width=frame.width, height=frame.height)

    def driver(result, now, speed):
        plans_at.append((now, None if result is None else result.timestamp))
        return Plan(status="ok" if result else "safe_stop", target_speed_mps=3.0,
                    control=Control(steer=0.0, throttle=0.2, brake=0.0))

    try:
        host, port = server.address.split(":")
        summary = run(SimConfig(host=host, port=int(port), camera=CameraSpec(96, 64, 90.0),
                                ticks=24, sensor_timeout_s=0.15, ground_truth=True),
                      lambda rig: perceive, lambda rig: driver, fake_carla.FakeClient)
    finally:
        server.stop()
    assert summary["frames_missed"] == 6  # ticks 4, 8, ..., 24: their image came too late
    assert len(perceived) == 18
    for (now, result_time) in plans_at:
        assert result_time is None or result_time == pytest.approx(now)  # same tick's image
