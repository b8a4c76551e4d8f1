"""Driving metrics: distance, route completion, off-road time, collision grouping, latencies."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sim_bridge.metrics import DrivingMetrics, format_table


def collision(frame: int, other: int) -> SimpleNamespace:
    return SimpleNamespace(frame=frame, other_actor=SimpleNamespace(id=other))


def test_metrics_of_a_short_drive() -> None:
    route = [(float(x), 0.0) for x in range(0, 21, 2)]  # 20 m along x
    metrics = DrivingMetrics(fixed_delta_s=0.05, route=route)
    for tick in range(11):  # 1 m per tick, off the road for the last 3 ticks
        metrics.tick((float(tick), 0.0), speed_mps=20.0, on_road=tick < 8,
                     perception_ms=None if tick == 5 else 10.0, control_ms=2.0,
                     status="safe_stop" if tick == 10 else "ok")
    for frame, other in ((100, 7), (101, 7), (102, 7), (110, 7), (101, 8)):
        metrics.on_collision(collision(frame, other))
    metrics.on_lane_invasion(SimpleNamespace(frame=100))
    summary = metrics.summary()
    assert summary["distance_m"] == pytest.approx(10.0)
    assert summary["route_completion"] == pytest.approx(0.6)  # reached x=12 (within 3 m of 10)
    assert summary["off_road_s"] == pytest.approx(0.15)
    assert summary["collisions"] == 3  # actor 7 twice (a gap between contacts), actor 8 once
    assert summary["lane_invasions"] == 1
    assert summary["frames_missed"] == 1 and summary["safe_stop_ticks"] == 1
    assert summary["perception_ms"]["mean"] == pytest.approx(10.0)
    assert summary["mean_speed_mps"] == pytest.approx(20.0)
    table = format_table(summary)
    assert "route_completion  60.0%" in table and "collisions" in table


def test_no_route_no_completion() -> None:
    metrics = DrivingMetrics(fixed_delta_s=0.05)
    metrics.tick((0.0, 0.0), 0.0, True, 1.0, 1.0, "ok")
    assert metrics.summary()["route_completion"] is None
