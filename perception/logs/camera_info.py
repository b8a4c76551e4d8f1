"""A camera's intrinsic calibration as drive logs carry it (ROS CameraInfo, Foxglove, KITTI).

Log readers attach one to `Frame.meta["camera_info"]` when the log has it; the Foxglove writer
turns it into `foxglove.CameraCalibration`. Matrices are flat, row-major, as in ROS.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from perception.driving.camera import projection_intrinsics


@dataclass
class CameraInfo:
    width: int
    height: int
    K: list[float]  # 3x3 intrinsics
    P: list[float]  # 3x4 projection (rectified)
    D: list[float] = field(default_factory=list)  # distortion coefficients
    distortion_model: str = "plumb_bob"

    @classmethod
    def from_projection(cls, P: list[float], width: int, height: int) -> CameraInfo:
        """From a 3x4 projection matrix of a rectified image (KITTI's P2): K is its left 3x3,
        checked as a camera file's is (CameraError: not finite, focal length <= 0, principal
        point outside the image)."""
        K = projection_intrinsics(P, width, height)
        return cls(width, height, K=[float(v) for v in K.ravel()], P=[float(v) for v in P],
                   D=[0.0] * 5)

    @classmethod
    def nominal(cls, width: int, height: int) -> CameraInfo:
        """A pinhole guess for an uncalibrated camera: focal length = image width (about 53
        degrees horizontal field of view), principal point at the centre, no distortion."""
        f, cx, cy = float(width), width / 2.0, height / 2.0
        return cls(width, height, K=[f, 0, cx, 0, f, cy, 0, 0, 1],
                   P=[f, 0, cx, 0, 0, f, cy, 0, 0, 0, 1, 0], D=[0.0] * 5)
