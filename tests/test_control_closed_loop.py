"""Closed loop: camera -> perfect perception -> planner -> pure pursuit + PID -> bicycle model.

The road is synthetic (tests/synthetic_road.py); every 0.1 s the camera on the simulated car
renders the masks and boxes a perfect perception would give, the planner plans on them through
the full bird's-eye-view path, and its controls drive the kinematic bicycle model for 0.1 s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from perception.driving.control import ControlConfig, PidState, pure_pursuit_steer, speed_pid
from perception.driving.planning import PlannerConfig, PlannerState, plan_frame
from perception.driving.vehicle_model import VehicleState, step
from perception.results import Control
from tests.synthetic_road import SIM_CAMERA, Car, Road, RoadCamera, s_curve_centre, straight_centre

PLAN_DT, SUBSTEPS = 0.1, 5


@dataclass
class Trace:
    t: np.ndarray
    x: np.ndarray
    speed: np.ndarray
    cross_track: np.ndarray
    arc: np.ndarray
    steer: np.ndarray
    throttle: np.ndarray
    brake: np.ndarray
    statuses: list[str]


def drive(road: Road, seconds: float, speed: float = 8.0) -> Trace:
    camera = RoadCamera(road)
    car, state, t = VehicleState(speed=speed), PlannerState(), 0.0
    rows, statuses = [], []
    while t < seconds - 1e-9:
        result = camera.observe(car.x, car.y, car.yaw, timestamp=t)
        out = plan_frame(result, SIM_CAMERA, state, now=t, speed_mps=car.speed)
        state, control = out.state, out.plan.control
        error, arc = road.cross_track(car.x, car.y)
        rows.append((t, car.x, car.speed, error, arc, control.steer, control.throttle,
                     control.brake))
        statuses.append(out.plan.status)
        for _ in range(SUBSTEPS):
            car = step(car, control, PLAN_DT / SUBSTEPS)
        t += PLAN_DT
    return Trace(*np.array(rows).T, statuses)


def sign_changes(values: np.ndarray, deadband: float) -> int:
    signs = np.sign(values[np.abs(values) > deadband])
    return int((np.diff(signs) != 0).sum())


def test_straight_road_holds_the_lane_centre():
    trace = drive(Road(straight_centre(300.0), lanes_left=1), seconds=10.0)
    assert set(trace.statuses) == {"ok"}
    print(f"\nstraight: cross-track RMS {np.sqrt(np.mean(trace.cross_track**2)):.3f} m")
    assert np.sqrt(np.mean(trace.cross_track**2)) < 0.05
    assert np.abs(trace.steer).max() < 0.02
    assert trace.speed[-20:].mean() == pytest.approx(PlannerConfig().cruise_speed_mps, abs=0.5)


def test_s_curve_cross_track_and_no_oscillation():
    road = Road(s_curve_centre(radius=60.0, turn_m=50.0), lanes_left=1)
    trace = drive(road, seconds=15.0)
    assert set(trace.statuses) == {"ok"}
    on_curves = (trace.arc >= 50.0) & (trace.arc <= 150.0)
    assert on_curves.sum() > 50
    rms = float(np.sqrt(np.mean(trace.cross_track[on_curves] ** 2)))
    # No oscillation: the car swings across the centre line no more than the road's two bends
    # ask for, the steering has no jitter around its 1 s moving average, and the speed settles.
    crossings = sign_changes(trace.cross_track, deadband=0.02)
    smooth = np.convolve(trace.steer, np.ones(10) / 10, mode="same")
    jitter = float(np.sqrt(np.mean((trace.steer - smooth)[5:-5] ** 2)))
    settled = trace.speed[(trace.t >= 3.0) & (trace.arc < 180.0)]  # before the road ends
    print(f"\nS-curve: cross-track RMS on the curves {rms:.3f} m (max "
          f"{np.abs(trace.cross_track).max():.2f} m), {crossings} centre-line crossings, "
          f"steering jitter {jitter:.3f}, speed after 3 s {settled.min():.1f}-"
          f"{settled.max():.1f} m/s")
    assert rms <= 0.2, f"cross-track RMS on the curves {rms:.3f} m"
    assert np.abs(trace.cross_track).max() < 0.5
    assert crossings <= 3
    assert jitter < 0.01
    cruise = PlannerConfig().cruise_speed_mps
    assert cruise - 1.5 < settled.min()
    assert trace.speed.max() < cruise + 0.3


def test_stops_behind_a_stopped_car():
    car_at = 60.0
    road = Road(straight_centre(), cars=[Car(car_at, 0.0)])
    trace = drive(road, seconds=15.0, speed=10.0)
    bumper = trace.x + PlannerConfig().front_m
    gap = car_at - bumper
    decel = -np.diff(trace.speed) / PLAN_DT
    print(f"\nstopped car: closest bumper gap {gap.min():.2f} m, max decel {decel.max():.1f} "
          "m/s^2")
    assert gap.min() >= 2.0, f"closest approach {gap.min():.2f} m"
    assert gap[-1] <= 6.0  # it does drive up to the car
    assert trace.speed[-10:].max() == 0.0
    assert np.all(np.diff(trace.x) >= 0)  # never rolls back
    assert decel.max() < 6.0  # firm, not a panic stop
    assert sign_changes(trace.throttle - trace.brake, deadband=0.05) <= 2


def test_pure_pursuit_geometry():
    config = ControlConfig()
    # A point straight ahead: no steering. A point on the left: steer left (< 0).
    assert pure_pursuit_steer(np.array([[5.0, 0.0], [10.0, 0.0]]), 5.0) == 0.0
    left = pure_pursuit_steer(np.array([[5.0, 0.5], [10.0, 2.0]]), 5.0)
    assert -1.0 <= left < 0.0
    # On a circle of radius R through the car, pure pursuit commands curvature 1/R exactly.
    radius = 30.0
    s = np.arange(1.0, 30.0)
    circle = np.column_stack([radius * np.sin(s / radius), radius * (1 - np.cos(s / radius))])
    steer = pure_pursuit_steer(circle, 8.0, config)
    wheel = -steer * np.radians(config.vehicle.max_steer_deg)
    assert np.tan(wheel) / config.vehicle.wheelbase_m == pytest.approx(1 / radius, rel=0.03)
    assert pure_pursuit_steer(np.array([[2.0, 5.0]]), 1.0) == -1.0  # clipped to the range


def test_speed_pid_ranges_and_hold():
    throttle, brake, state = speed_pid(10.0, 5.0, 0.1, PidState())
    assert 0 < throttle <= 1 and brake == 0
    throttle, brake, state = speed_pid(0.0, 15.0, 0.1, state)
    assert throttle == 0 and 0 < brake <= 1
    throttle, brake, _ = speed_pid(0.0, 0.1, 0.1, state)
    assert (throttle, brake) == (0.0, ControlConfig().hold_brake)


def test_bicycle_model():
    car = VehicleState(speed=10.0)
    for _ in range(100):
        car = step(car, Control(steer=0.0, throttle=0.0, brake=0.0), 0.01)
    assert car.x == pytest.approx(10.0, rel=0.01) and car.y == 0.0
    # Constant steering drives a circle of radius wheelbase / tan(angle).
    turning = VehicleState(speed=5.0)
    for _ in range(2000):
        turning = step(turning, Control(steer=-0.2, throttle=0.02, brake=0.0), 0.005)
    radius = 2.8 / np.tan(np.radians(0.2 * 35.0))
    assert turning.yaw > 0  # steer < 0 turns left
    centre = np.array([0.0, radius])
    assert np.hypot(turning.x - centre[0], turning.y - centre[1]) == pytest.approx(radius, rel=0.03)
    stopped = step(VehicleState(speed=0.5), Control(steer=0, throttle=0, brake=1), 0.5)
    assert stopped.speed == 0.0
