"""The closed loop, the same code for every simulator: tick, perceive, plan, drive.

    tick = sim.tick()                           # one fixed step; exactly this step's image
    result = perceive(Frame(tick.image))        # our models, or the simulator's ground truth
    plan = plan_step(result, now, speed)        # Planner.step: planner + controller -> Plan
    sim.apply(plan.control)                     # steer/throttle/brake, for the next step

A backend (CARLA: bridge.py, MetaDrive: metadrive_sim.py) implements `Simulator`: camera
frames with their timestamps in, `Control` (CARLA's `VehicleControl` ranges: steer in [-1, 1]
with + right, throttle and brake in [0, 1]) out, and the ego car's state and the camera's
ground-truth labels for scoring and recording. Perception and planning are plain callables, so
tests swap them freely.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from perception.frames import Frame
from perception.logs.foxglove_live import FoxgloveLive
from perception.logs.mount import log_time_ns
from perception.results import Control, FrameResult, Plan
from sim_bridge.metrics import DrivingMetrics
from sim_bridge.recording import SimRecorder

Perceive = Callable[[Frame], FrameResult]
PlanStep = Callable[[FrameResult | None, float, float], Plan]  # (result, now s, speed m/s)


@dataclass
class EgoState:
    """The ego car after a step: world position (m), heading (degrees), speed, on a lane."""

    x: float
    y: float
    yaw_deg: float
    speed_mps: float
    on_road: bool


@dataclass
class SimTick:
    """One simulator step: its number and time, and that step's camera image (None when it
    did not arrive in time)."""

    frame_id: int
    time_s: float
    image: np.ndarray | None  # BGR uint8 (H, W, 3)
    image_time_s: float = 0.0
    meta: dict = field(default_factory=dict)  # into Frame.meta (e.g. the semantic image)
    state: dict = field(default_factory=dict)  # extra /sim/state entries (e.g. carla_frame)


class Simulator(Protocol):
    source: str  # Frame.source of its camera frames, e.g. "carla:camera"

    def tick(self) -> SimTick:
        """Advance one fixed step and return its camera frame."""

    def ego(self) -> EgoState:
        """The ego car now."""

    def apply(self, control: Control) -> None:
        """Drive the ego car with `control` from the next step on."""

    def ground_truth(self, frame: Frame) -> FrameResult | None:
        """The simulator's labels of this frame (drivable area, lane lines, road users), or
        None when they are not available or not wanted for this frame."""


@dataclass
class Step:
    """What one step of the loop saw and did."""

    frame: Frame | None
    result: FrameResult | None
    plan: Plan
    ego: EgoState
    truth: FrameResult | None


def step(sim: Simulator, perceive: Perceive, plan_step: PlanStep, metrics: DrivingMetrics,
         recorder: SimRecorder | None, want_truth: bool = False,
         live: FoxgloveLive | None = None) -> Step:
    """One step of the loop: tick, perceive, plan, drive, measure, record and publish live.
    The simulator's labels are fetched when recording or when `want_truth` (scoring)."""
    tick = sim.tick()
    frame = result = None
    perception_ms = None
    start = time.perf_counter()
    if tick.image is not None:
        frame = Frame(tick.image, timestamp=tick.image_time_s, index=metrics.ticks,
                      source=sim.source, name=f"{tick.frame_id:06d}", meta=tick.meta)
        result = perceive(frame)
        perception_ms = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    ego = sim.ego()  # the control applies from the next step: the car has not moved yet
    plan = plan_step(result, tick.time_s, ego.speed_mps)  # None: the planner judges the last
    sim.apply(plan.control)
    control_ms = (time.perf_counter() - start) * 1e3
    if result is not None:  # a plan step need not be a Planner: the recording gets it here
        result.plan = plan
        result.timings_ms["control"] = control_ms
    metrics.tick((ego.x, ego.y), ego.speed_mps, ego.on_road, perception_ms, control_ms,
                 plan.status)
    truth = (sim.ground_truth(frame)
             if frame is not None and (recorder is not None or want_truth) else None)
    if (recorder is not None or live is not None) and frame is not None:
        control = plan.control
        state = {**tick.state, "sim_time": tick.time_s, "x": ego.x, "y": ego.y,
                 "yaw": ego.yaw_deg, "speed_mps": ego.speed_mps, "on_road": ego.on_road,
                 "status": plan.status,
                 "control": {"steer": control.steer, "throttle": control.throttle,
                             "brake": control.brake},
                 "perception_ms": perception_ms, "control_ms": control_ms}
        if recorder is not None:
            recorder.frame(frame, result, state, truth)
        if live is not None:  # never blocks: a slow viewer drops frames, the loop does not
            live.publish(frame, result)
            live.write_json("/sim/state", log_time_ns(frame.timestamp), state)
    return Step(frame, result, plan, ego, truth)
