"""The camera on the car, as every output of frames places it: the frames `base_link` (the
vehicle, where the plan lives) and `camera` (optical axes: x right, y down, z forward), the
camera's mount between them, and its calibration for frames whose log carries none.

Shared by the Foxglove MCAP (foxglove_writer.py), the live Foxglove server (foxglove_live.py)
and the ROS 2 MCAP (ros2_writer.py), so that all three tell the same geometry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from perception.driving.camera import R_OPTICAL, CameraModel
from perception.frames import Frame
from perception.logs.camera_info import CameraInfo

CAMERA_FRAME = "camera"
VEHICLE_FRAME = "base_link"
# Nominal camera mount, used when no camera model is given: 1.5 m above the vehicle origin,
# looking straight ahead (rotation R_OPTICAL: optical axes x right, y down, z forward).
NOMINAL_POSITION = (0.0, 0.0, 1.5)


@dataclass(frozen=True)
class CameraMount:
    position: tuple[float, float, float] = NOMINAL_POSITION  # m, in base_link
    rotation: np.ndarray = field(default_factory=lambda: R_OPTICAL)  # optical -> vehicle
    default_info: CameraInfo | None = None  # for frames without a calibration of their own

    @classmethod
    def of(cls, camera: CameraModel | None) -> CameraMount:
        """The mount and calibration of a camera file (perception/driving/camera.py), or the
        nominal mount without one."""
        if camera is None:
            return cls()
        return cls(tuple(camera.position), camera.rotation, camera_info_of_model(camera))

    def camera_info(self, frame: Frame) -> CameraInfo:
        """The frame's own calibration from its log, else the camera file's when the sizes
        match, else a nominal pinhole."""
        own = frame.meta.get("camera_info")
        if own is not None:
            return own
        info = self.default_info
        if info is None or (info.width, info.height) != (frame.width, frame.height):
            return CameraInfo.nominal(frame.width, frame.height)
        return info

    def quaternion(self) -> tuple[float, float, float, float]:
        """The mount's rotation as a unit quaternion (x, y, z, w)."""
        return rotation_quaternion(self.rotation)


def camera_info_of_model(camera: CameraModel) -> CameraInfo:
    K = camera.K.reshape(-1).tolist()
    return CameraInfo(camera.width, camera.height, K=K,
                      P=[*K[0:3], 0.0, *K[3:6], 0.0, *K[6:9], 0.0], D=camera.dist.tolist())


def rotation_quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """A 3x3 rotation matrix as a unit quaternion (x, y, z, w), through OpenCV's axis-angle
    (exact at 180 degrees too, where sign-from-off-diagonal formulas fail)."""
    rvec, _ = cv2.Rodrigues(np.asarray(rotation, dtype=np.float64))
    angle = float(np.linalg.norm(rvec))
    x, y, z = (rvec.ravel() / angle * math.sin(angle / 2)) if angle > 0 else (0.0, 0.0, 0.0)
    return float(x), float(y), float(z), math.cos(angle / 2)


def log_time_ns(timestamp: float) -> int:
    """A frame's timestamp (s) as a log time (ns)."""
    return int(round(timestamp * 1e9))
