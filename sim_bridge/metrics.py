"""Driving metrics of one closed-loop run, from the simulator's ground truth.

Per tick the loop reports where the car is, how fast it goes, whether it is on a driving lane,
the plan's status and how long perception and control took. Collision and lane-invasion events
come from CARLA's sensors on their own thread, so those two counters take a lock. A contact
that lasts several ticks with the same actor counts as one collision.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ROUTE_REACHED_M = 3.0  # a route point counts as reached within this distance


@dataclass
class DrivingMetrics:
    fixed_delta_s: float
    route: list[tuple[float, float]] = field(default_factory=list)  # world x, y of route points
    ticks: int = 0
    distance_m: float = 0.0
    off_road_s: float = 0.0
    frames_missed: int = 0
    safe_stop_ticks: int = 0
    collisions: int = 0
    lane_invasions: int = 0
    speeds: list[float] = field(default_factory=list)
    perception_ms: list[float] = field(default_factory=list)
    control_ms: list[float] = field(default_factory=list)
    interrupted: bool = False
    _last_position: tuple[float, float] | None = None
    _route_reached: int = -1
    _last_contact: dict[int, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def tick(self, position: tuple[float, float], speed_mps: float, on_road: bool,
             perception_ms: float | None, control_ms: float, status: str) -> None:
        self.ticks += 1
        if self._last_position is not None:
            self.distance_m += math.dist(position, self._last_position)
        self._last_position = position
        self.speeds.append(speed_mps)
        if not on_road:
            self.off_road_s += self.fixed_delta_s
        if perception_ms is None:
            self.frames_missed += 1
        else:
            self.perception_ms.append(perception_ms)
        self.control_ms.append(control_ms)
        if status == "safe_stop":
            self.safe_stop_ticks += 1
        self._advance_route(position)

    def _advance_route(self, position: tuple[float, float]) -> None:
        for index in range(self._route_reached + 1, min(len(self.route),
                                                         self._route_reached + 20)):
            if math.dist(position, self.route[index]) <= ROUTE_REACHED_M:
                self._route_reached = index

    def on_collision(self, event: Any) -> None:
        """Collision sensor callback."""
        with self._lock:
            other = event.other_actor.id
            if event.frame - self._last_contact.get(other, -10) > 1:
                self.collisions += 1
            self._last_contact[other] = event.frame

    def on_lane_invasion(self, event: Any) -> None:
        """Lane-invasion sensor callback."""
        with self._lock:
            self.lane_invasions += 1

    @property
    def route_completion(self) -> float | None:
        if len(self.route) < 2:
            return None
        steps = [math.dist(a, b) for a, b in zip(self.route, self.route[1:], strict=False)]
        done = sum(steps[:max(self._route_reached, 0)])
        return done / sum(steps)

    def summary(self) -> dict:
        with self._lock:
            collisions, invasions = self.collisions, self.lane_invasions
        return {
            "ticks": self.ticks, "sim_seconds": round(self.ticks * self.fixed_delta_s, 3),
            "interrupted": self.interrupted,
            "distance_m": round(self.distance_m, 2),
            "route_completion": (None if self.route_completion is None
                                 else round(self.route_completion, 4)),
            "collisions": collisions, "lane_invasions": invasions,
            "off_road_s": round(self.off_road_s, 3),
            "mean_speed_mps": round(float(np.mean(self.speeds)), 3) if self.speeds else 0.0,
            "frames_missed": self.frames_missed, "safe_stop_ticks": self.safe_stop_ticks,
            "perception_ms": _stats(self.perception_ms), "control_ms": _stats(self.control_ms),
        }


def _stats(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "p50": None, "p95": None, "max": None}
    array = np.asarray(values)
    return {"mean": round(float(array.mean()), 3), "p50": round(float(np.median(array)), 3),
            "p95": round(float(np.percentile(array, 95)), 3), "max": round(float(array.max()), 3)}


def format_table(summary: dict) -> str:
    """The summary as a small two-column table for the terminal."""
    rows = []
    for key, value in summary.items():
        if isinstance(value, dict):
            value = "  ".join(f"{k} {v}" for k, v in value.items())
        elif key == "route_completion" and value is not None:
            value = f"{value:.1%}"
        rows.append((key, "-" if value is None else str(value)))
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in rows)
