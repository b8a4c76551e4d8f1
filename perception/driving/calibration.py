"""Camera calibration (`perception calibrate`): from chessboard photos, or a mount from a drive.

Chessboard: OpenCV's calibration: find the inner corners of the board in every photo, refine
them to sub-pixel, and solve for K and the distortion with `cv2.calibrateCamera`. Photos of
another size than the majority are resized to it (phones and some capture tools add a pixel
here and there). The RMS reprojection error says how well the model fits: about 1 px or less
is good. The camera file gets a default mount that the user edits (see docs/planning.md).

From a drive (no chessboard; K known): the mount pitch and height of a camera file, from the
lane boundaries fitted on a video of a drive along a straight road with painted lines. The
pitch puts the camera's horizon at the median row where the ego lane's lines meet
(perception/driving/horizon.py); then, with that pitch, the height is scaled so that the ego
lane is as wide as the user says lanes are there (the ground under a fixed pixel moves in
proportion to the height, so the measured width does too). Curves and hills bias single
frames; the median over many frames does not follow them.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from perception.driving.camera import CameraModel, Mount
from perception.driving.horizon import horizon_row, pitch_error_deg
from perception.driving.lanes import lanes_on_ground, measure_ego_lane
from perception.errors import PerceptionError
from perception.frames import read_image
from perception.results import LaneBoundary

DEFAULT_MOUNT = Mount(x=1.5, y=0.0, z=1.4, roll=0.0, pitch=0.0, yaw=0.0)
MIN_DRIVE_FRAMES = 10  # frames whose ego lane lines give a horizon (or a width) to trust
HEIGHT_RANGE_M = (0.3, 5.0)  # a car's bumper to a truck's cab roof


class CalibrationError(PerceptionError):
    """Chessboard photos that cannot give a calibration."""


@dataclass
class Calibration:
    camera: CameraModel
    rms: float
    used: list[Path]  # photos where the whole board was found
    skipped: list[Path]  # photos without a complete board
    resized: list[Path]  # photos resized to the majority size


def find_corners(gray: np.ndarray, board: tuple[int, int]) -> np.ndarray | None:
    flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
    found, corners = cv2.findChessboardCorners(gray, board, flags=flags)
    if not found:
        return None
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 1e-3)
    return cv2.cornerSubPix(gray, corners, (11, 11), (-1, -1), criteria)


def calibrate(paths: list[Path], board: tuple[int, int], square: float = 1.0) -> Calibration:
    if not paths:
        raise CalibrationError("no images given")
    images = {path: read_image(path) for path in paths}
    size, _ = Counter((im.shape[1], im.shape[0]) for im in images.values()).most_common(1)[0]
    resized = [p for p, im in images.items() if (im.shape[1], im.shape[0]) != size]
    cols, rows = board
    board_points = np.zeros((cols * rows, 3), np.float32)
    board_points[:, :2] = np.mgrid[0:cols, 0:rows].T.reshape(-1, 2) * square
    object_points, image_points, used, skipped = [], [], [], []
    for path, image in images.items():
        if (image.shape[1], image.shape[0]) != size:
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        corners = find_corners(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), board)
        if corners is None:
            skipped.append(path)
            continue
        object_points.append(board_points)
        image_points.append(corners)
        used.append(path)
    if not used:
        raise CalibrationError(f"no {cols}x{rows} chessboard (inner corners) found in any of "
                               f"the {len(paths)} image(s); check --board and that the whole "
                               "board is in view")
    if len(used) < 3:
        raise CalibrationError(f"the {cols}x{rows} board was found in only {len(used)} image(s); "
                               "at least 3 views from different angles are needed")
    rms, K, dist, _, _ = cv2.calibrateCamera(object_points, image_points, size, None, None)
    camera = CameraModel(size[0], size[1], K, dist.reshape(-1), DEFAULT_MOUNT)
    return Calibration(camera, float(rms), used, skipped, resized)


@dataclass
class DriveCalibration:
    camera: CameraModel  # the camera given, with the proposed pitch (and height)
    frames: int  # frames looked at
    horizon_frames: int  # frames whose ego lane lines crossed: the pitch's evidence
    horizon_row: float  # their median, frame pixels
    spread_deg: float  # median absolute deviation of the per-frame pitch, degrees
    width_frames: int  # frames where the ego lane was measured: the height's evidence
    measured_width_m: float | None  # its median with the new pitch and the old height


def calibrate_from_drive(frames: list[list[LaneBoundary]], camera: CameraModel,
                         lane_width_m: float) -> DriveCalibration:
    """Propose the mount pitch and height from each frame's fitted lane boundaries.

    `camera` must be at the frames' size; the height is kept where fewer than
    `MIN_DRIVE_FRAMES` frames measure the ego lane.
    """
    rows = [row for row in (horizon_row(b, camera.height) for b in frames) if row is not None]
    if len(rows) < MIN_DRIVE_FRAMES:
        raise CalibrationError(
            f"the ego lane's two lines were found in {len(rows)} of {len(frames)} frame(s); "
            f"at least {MIN_DRIVE_FRAMES} are needed: give a drive along a road with painted "
            "lines on both sides of the lane")
    row = float(np.median(rows))
    pitched = _with_horizon_at(camera, row)
    per_frame = np.array([pitch_error_deg(r, camera) for r in rows])
    spread = float(np.median(np.abs(per_frame - np.median(per_frame))))
    widths = [lane.width_m for lane in (measure_ego_lane(lanes_on_ground(b, pitched)[0], pitched)
                                        for b in frames) if lane is not None]
    measured = float(np.median(widths)) if widths else None
    proposed = pitched
    if len(widths) >= MIN_DRIVE_FRAMES:
        height = pitched.mount.z * lane_width_m / measured
        if not HEIGHT_RANGE_M[0] <= height <= HEIGHT_RANGE_M[1]:
            raise CalibrationError(
                f"a {lane_width_m:g} m lane would put the camera {height:.2f} m above the road "
                f"(the lane measures {measured:.2f} m with the camera at {pitched.mount.z:g} m); "
                "check --lane-width and the camera's K")
        proposed = replace(pitched, mount=replace(pitched.mount, z=round(height, 3)))
    return DriveCalibration(proposed, len(frames), len(rows), row, spread, len(widths), measured)


def _with_horizon_at(camera: CameraModel, row: float) -> CameraModel:
    """The camera with the mount pitch that puts its horizon at `row` (a few fixed-point steps:
    exact in one for a camera without yaw and roll)."""
    for _ in range(4):
        error = pitch_error_deg(row, camera)
        if math.isclose(error, 0.0, abs_tol=1e-4):
            break
        mount = replace(camera.mount, pitch=round(camera.mount.pitch + error, 4))
        camera = replace(camera, mount=mount)
    return camera
