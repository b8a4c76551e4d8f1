"""Our planner for a CARLA car: the camera and car geometry it plans with, and the models it
plans on (for `perception sim` and the Leaderboard agent alike).

The planner (perception/driving/planning.py) works in the vehicle frame of our camera files:
x forward, y left, origin on the ground under the rear axle, and its controller maps steer = 1
to the car's largest road-wheel angle. CARLA mounts the camera relative to the car's centre and each
car has its own wheelbase and steering lock, so both are read from the ego vehicle's physics
(`get_physics_control()`: wheel positions and `max_steer_angle`) when there is one.

A tick whose image did not arrive steps the planner without a new result: the planner plans on
the last one it had and decides, by its age against the deadline, whether that is still usable
or a safe stop.
Without a detector among the models the planner cannot see obstacles: every plan is then
`degraded` and slow (planning.py), never `ok` at cruise speed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from perception.driving.camera import CameraModel, carla_camera
from perception.driving.control import ControlConfig
from perception.driving.planning import Planner, PlannerConfig
from perception.driving.vehicle_model import VehicleParams
from sim_bridge.camera_spec import CameraSpec
from sim_bridge.sensors import CAMERA_MOUNT


@dataclass(frozen=True)
class CarGeometry:
    wheelbase_m: float = VehicleParams().wheelbase_m
    max_steer_deg: float = VehicleParams().max_steer_deg
    rear_axle_behind_centre_m: float = 1.4  # about half the wheelbase of a mid-size car


def car_geometry(vehicle: Any) -> CarGeometry:
    """Wheelbase, steering lock and rear-axle position of a CARLA car (front wheels first);
    the defaults for a vehicle without four wheels."""
    wheels = vehicle.get_physics_control().wheels
    if len(wheels) != 4:
        return CarGeometry()
    pose = vehicle.get_transform()
    forward = pose.get_forward_vector()

    def along(wheel_pair: list) -> float:  # metres ahead of the car's centre, mid-axle
        x = sum(w.position.x for w in wheel_pair) / len(wheel_pair) / 100.0 - pose.location.x
        y = sum(w.position.y for w in wheel_pair) / len(wheel_pair) / 100.0 - pose.location.y
        return x * forward.x + y * forward.y

    front, rear = along(wheels[:2]), along(wheels[2:])
    return CarGeometry(wheelbase_m=front - rear, max_steer_deg=wheels[0].max_steer_angle,
                       rear_axle_behind_centre_m=-rear)


def camera_model(spec: CameraSpec, car: CarGeometry = CarGeometry()) -> CameraModel:
    """Our camera model of the bridge's CARLA camera, in the planner's vehicle frame."""
    location, rotation = CAMERA_MOUNT.location, CAMERA_MOUNT.rotation
    return carla_camera(spec.width, spec.height, spec.fov,
                        x=location.x + car.rear_axle_behind_centre_m, y=location.y,
                        z=location.z, roll=rotation.roll, pitch=rotation.pitch, yaw=rotation.yaw)


def car_planner(spec: CameraSpec, car: CarGeometry = CarGeometry(),
                detections_available: bool = True) -> Planner:
    """The planner of a car with this camera and geometry; without a detector among the
    models (`detections_available=False`) every plan is degraded and slow."""
    vehicle = replace(VehicleParams(), wheelbase_m=car.wheelbase_m,
                      max_steer_deg=car.max_steer_deg)
    config = replace(PlannerConfig(), control=replace(ControlConfig(), vehicle=vehicle))
    return Planner(camera_model(spec, car), config, detections_available)
