"""A kinematic bicycle model: how a car moves for given steer, throttle and brake.

Used by the closed-loop tests and by the CARLA fake. The reference point is the rear-axle
centre (the vehicle-frame origin), so the path curvature is tan(steer angle) / wheelbase.
Throttle and brake map linearly to acceleration; the car never rolls backwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from perception.results import Control


@dataclass(frozen=True)
class VehicleParams:
    wheelbase_m: float = 2.8
    max_steer_deg: float = 35.0  # road-wheel angle at steer = +-1
    max_accel_mps2: float = 3.0  # at throttle 1 (a small car at city speeds)
    max_decel_mps2: float = 8.0  # at brake 1
    drag_per_s: float = 0.02  # speed-proportional rolling resistance and air drag
    steer_time_constant_s: float = 0.1  # first-order lag of the steering rack


@dataclass(frozen=True)
class VehicleState:
    """World pose of the rear-axle centre: x, y metres, yaw radians (counter-clockwise +)."""

    x: float = 0.0
    y: float = 0.0
    yaw: float = 0.0
    speed: float = 0.0
    steer_angle: float = 0.0  # actual road-wheel angle, radians (+ left)


def step(state: VehicleState, control: Control, dt: float,
         params: VehicleParams = VehicleParams()) -> VehicleState:
    """Advance by dt seconds. `control.steer` > 0 turns right (CARLA's convention)."""
    commanded = -control.steer * math.radians(params.max_steer_deg)
    alpha = min(1.0, dt / params.steer_time_constant_s) if params.steer_time_constant_s else 1.0
    steer_angle = state.steer_angle + alpha * (commanded - state.steer_angle)
    accel = (control.throttle * params.max_accel_mps2 - control.brake * params.max_decel_mps2
             - params.drag_per_s * state.speed)
    speed = max(0.0, state.speed + accel * dt)
    mean_speed = 0.5 * (state.speed + speed)
    yaw_rate = mean_speed * math.tan(steer_angle) / params.wheelbase_m
    mid_yaw = state.yaw + 0.5 * yaw_rate * dt
    return replace(state, x=state.x + mean_speed * math.cos(mid_yaw) * dt,
                   y=state.y + mean_speed * math.sin(mid_yaw) * dt,
                   yaw=state.yaw + yaw_rate * dt, speed=speed, steer_angle=steer_angle)
