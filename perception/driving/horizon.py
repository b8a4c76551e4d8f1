"""Does the camera file fit the frames? A check of its pitch against the road's horizon.

On a flat, straight road the two lines of the ego lane are parallel on the ground, so in the
image they meet at the horizon: the row where viewing rays are horizontal. The camera file
says where that row is (from K and the mount pitch); a wrong pitch moves it by about
fy * tan(error) and makes every distance read off the road wrong (a box bottom near the
horizon most of all). Per frame, the near parts of the fitted `ego_left` and `ego_right`
boundaries (perception.lane_lines) are extended straight and intersected.

Only the lane lines are used: the drivable area's edges follow kerbs, parked cars and
verges, which are seldom straight or parallel to the lane, and a wrong edge moves the
crossing far more than a lane line does.

One frame's estimate carries the road's own slope and the car's pitching (braking, bumps), so
over a drive `HorizonCheck` keeps the median of the last `WINDOW` estimates and says nothing
(`unknown`) before it has `MIN_ESTIMATES`. Thresholds:
- a drive: `mismatch` above `MISMATCH_DEG` = 1.5 degrees. On the Udacity video with its camera
  file (perception/cameras/udacity_960x540.yaml, default model) single frames read 0.14 to
  0.76 degrees (5th to 95th percentile) and the running median 0.35 to 0.51: 1.5 degrees is
  three times that, so an honest camera is not flagged on a gently rolling road, and it is
  where distances go clearly wrong (a point 20 m ahead of a camera 1.2 m high reads 14 m or
  36 m);
- a single still: `STILL_MISMATCH_DEG` = 3 degrees, as one frame alone spreads more (a slope,
  a braking car). On the BDD100K stills, whose phones sit differently in every car, the
  shipped (assumed) camera is off by -4.9 to +4.8 degrees.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from perception.driving.camera import CameraModel
from perception.results import CameraCheck, FrameResult, LaneBoundary

MISMATCH_DEG = 1.5
STILL_MISMATCH_DEG = 3.0
WINDOW = 50  # estimates kept (2 s of a 25 fps video where lanes are seen on every frame)
MIN_ESTIMATES = 10
NEAR_SHARE = 0.5  # of a boundary's points, nearest first, fitted straight
MIN_CONVERGENCE = 0.2  # columns per row: ego lines closer to parallel give no usable crossing


def horizon_row(boundaries: list[LaneBoundary], height: int) -> float | None:
    """The row where the ego boundaries' near parts, extended straight, cross (frame pixels);
    None without both boundaries, or where they do not converge above their near parts."""
    lines = {}
    for boundary in boundaries:
        if boundary.position == "other" or len(boundary.image_points) < 3:
            continue
        points = np.array(boundary.image_points)
        near = points[: max(3, math.ceil(NEAR_SHARE * len(points)))]
        if np.ptp(near[:, 1]) < 2:
            continue
        slope, intercept = np.polyfit(near[:, 1], near[:, 0], 1)
        lines[boundary.position] = (slope, intercept, near[:, 1].min())
    if len(lines) < 2:
        return None
    (a_left, b_left, top_left), (a_right, b_right, top_right) = (
        lines["ego_left"], lines["ego_right"])
    if a_right - a_left < MIN_CONVERGENCE:  # the left line leans right going up, and vice versa
        return None
    row = (b_right - b_left) / (a_left - a_right)
    if not -0.5 * height <= row <= min(top_left, top_right):
        return None
    return float(row)


def expected_row(camera: CameraModel) -> float:
    """The camera file's horizon row: where a point far ahead at the camera's height lands."""
    far_ahead = camera.position + np.array([1e6, 0.0, 0.0])
    pixels, _ = camera.project(far_ahead[None])
    return float(pixels[0, 1])


def pitch_error_deg(row: float, camera: CameraModel) -> float:
    """Estimated minus configured pitch (degrees, > 0: the camera looks further down than its
    file says) for a horizon seen at `row`."""
    fy, cy = camera.K[1, 1], camera.K[1, 2]
    return math.degrees(math.atan((cy - row) / fy) - math.atan((cy - expected_row(camera)) / fy))


def camera_check(row: float | None, camera: CameraModel, threshold_deg: float) -> CameraCheck:
    expected = round(expected_row(camera), 1)
    if row is None:
        return CameraCheck(status="unknown", expected_row=expected)
    error = pitch_error_deg(row, camera)
    return CameraCheck(status="mismatch" if abs(error) > threshold_deg else "ok",
                       pitch_error_deg=round(error, 2), horizon_row=round(row, 1),
                       expected_row=expected)


def check_still(result: FrameResult, camera: CameraModel) -> CameraCheck:
    """The check from one frame alone (its `lane_boundaries` already fitted)."""
    return camera_check(horizon_row(result.lane_boundaries, result.height), camera,
                        STILL_MISMATCH_DEG)


class HorizonCheck:
    """The check over a drive: the running median of the last `window` per-frame estimates."""

    def __init__(self, window: int = WINDOW, min_estimates: int = MIN_ESTIMATES,
                 threshold_deg: float = MISMATCH_DEG) -> None:
        self.estimates: deque[float] = deque(maxlen=window)
        self.min_estimates = min_estimates
        self.threshold_deg = threshold_deg

    def update(self, result: FrameResult, camera: CameraModel) -> CameraCheck:
        """Add this frame's estimate (from its `lane_boundaries`, fitted before) and say what
        the drive so far says; `unknown` until `min_estimates` frames gave one."""
        row = horizon_row(result.lane_boundaries, result.height)
        if row is not None:
            self.estimates.append(row)
        if len(self.estimates) < self.min_estimates:
            return camera_check(None, camera, self.threshold_deg)
        return camera_check(float(np.median(self.estimates)), camera, self.threshold_deg)
