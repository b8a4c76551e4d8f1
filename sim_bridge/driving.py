"""Our planner and controller as the loop's driver: perception result -> Plan with controls.

The planner (perception/planning.py) works in the vehicle frame of the calibration files: x
forward, y left, origin on the ground under the rear axle. CARLA mounts the camera relative to
the car's centre, so the mount moves back by the centre-to-rear-axle distance.

A tick whose image did not arrive hands the planner the last result it had: the planner itself
decides, by the result's age against its deadline, whether that is still usable or a safe stop.
"""

from __future__ import annotations

from perception.camera import CameraModel, carla_camera
from perception.planning import PlannerState, plan_frame
from perception.results import FrameResult, Plan
from sim_bridge.sensors import CAMERA_MOUNT, CameraSpec

REAR_AXLE_BEHIND_CENTRE_M = 1.4  # about half the wheelbase of a mid-size car


def camera_model(spec: CameraSpec) -> CameraModel:
    """Our camera model of the bridge's CARLA camera, in the planner's vehicle frame."""
    location, rotation = CAMERA_MOUNT.location, CAMERA_MOUNT.rotation
    return carla_camera(spec.width, spec.height, spec.fov,
                        x=location.x + REAR_AXLE_BEHIND_CENTRE_M, y=location.y, z=location.z,
                        roll=rotation.roll, pitch=rotation.pitch, yaw=rotation.yaw)


class PlannerDriver:
    def __init__(self, camera: CameraModel) -> None:
        self.camera = camera
        self.state = PlannerState()
        self.last_result: FrameResult | None = None

    def __call__(self, result: FrameResult | None, speed_mps: float, now: float) -> Plan:
        if result is not None:
            self.last_result = result
        output = plan_frame(self.last_result, self.camera, self.state, now, speed_mps)
        self.state = output.state
        return output.plan


def planner_driver(spec: CameraSpec) -> PlannerDriver:
    return PlannerDriver(camera_model(spec))
