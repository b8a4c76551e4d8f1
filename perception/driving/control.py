"""From a planned path and speed to steer, throttle and brake.

Lateral: pure pursuit. Pick the path point one look-ahead distance away (the distance grows
with speed, which keeps the steering calm on the highway and sharp in town) and steer onto the
circle through it: curvature = 2 sin(alpha) / look-ahead. Longitudinal: a PID on the speed
error; positive output is throttle, negative is brake. Ranges are CARLA's `VehicleControl`:
steer in [-1, 1] (+ right), throttle and brake in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from perception.driving.vehicle_model import VehicleParams


@dataclass(frozen=True)
class ControlConfig:
    lookahead_min_m: float = 4.0
    lookahead_per_mps: float = 0.6  # look-ahead = min + per_mps * speed, capped at max
    lookahead_max_m: float = 20.0
    kp: float = 1.5  # (m/s^2) per (m/s) of speed error
    ki: float = 0.1
    kd: float = 0.0
    integral_limit: float = 4.0  # anti-windup, in (m/s) * s
    hold_brake: float = 0.4  # brake held when stopped with a zero target
    vehicle: VehicleParams = VehicleParams()


@dataclass(frozen=True)
class PidState:
    integral: float = 0.0
    last_error: float | None = None


def lookahead_distance(speed: float, config: ControlConfig = ControlConfig()) -> float:
    return min(config.lookahead_max_m, config.lookahead_min_m + config.lookahead_per_mps * speed)


def pure_pursuit_steer(waypoints: np.ndarray, speed: float,
                       config: ControlConfig = ControlConfig()) -> float:
    """Steer in [-1, 1] (+ right) to follow waypoints (N, 2) given in the vehicle frame."""
    if len(waypoints) == 0:
        return 0.0
    distances = np.hypot(waypoints[:, 0], waypoints[:, 1])
    lookahead = lookahead_distance(speed, config)
    beyond = np.flatnonzero(distances >= lookahead)
    x, y = waypoints[beyond[0]] if len(beyond) else waypoints[-1]
    chord = max(math.hypot(x, y), 1e-3)
    curvature = 2.0 * y / chord**2  # = 2 sin(alpha) / chord, + turns left
    wheel_angle = math.atan(curvature * config.vehicle.wheelbase_m)
    steer = -wheel_angle / math.radians(config.vehicle.max_steer_deg)
    return float(np.clip(steer, -1.0, 1.0)) + 0.0  # + 0.0: straight ahead is 0.0, not -0.0


def speed_pid(target: float, speed: float, dt: float, state: PidState,
              config: ControlConfig = ControlConfig()) -> tuple[float, float, PidState]:
    """Throttle, brake in [0, 1] and the next PID state.

    The PID asks for an acceleration (m/s^2); throttle and brake are that acceleration as a
    fraction of what full throttle and full brake give the car.
    """
    if target <= 0.05 and speed <= 0.3:
        return 0.0, config.hold_brake, PidState()
    error = target - speed
    integral = float(np.clip(state.integral + error * dt, -config.integral_limit,
                             config.integral_limit))
    derivative = 0.0 if state.last_error is None or dt <= 0 else (error - state.last_error) / dt
    accel = config.kp * error + config.ki * integral + config.kd * derivative
    vehicle = config.vehicle
    throttle = float(np.clip(accel / vehicle.max_accel_mps2, 0.0, 1.0))
    brake = float(np.clip(-accel / vehicle.max_decel_mps2, 0.0, 1.0))
    return throttle, brake, PidState(integral, error)
