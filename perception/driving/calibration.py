"""Camera calibration from chessboard photos (`perception calibrate`).

OpenCV chessboard calibration: find the inner corners of the board in every photo, refine them
to sub-pixel, and solve for K and the distortion with `cv2.calibrateCamera`. Photos of another
size than the majority are resized to it (phones and some capture tools add a pixel here and
there). The RMS reprojection error says how well the model fits: about 1 px or less is good.
The camera file gets a default mount that the user edits (see docs/planning.md).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from perception.driving.camera import CameraModel, Mount
from perception.errors import PerceptionError
from perception.frames import read_image

DEFAULT_MOUNT = Mount(x=1.5, y=0.0, z=1.4, roll=0.0, pitch=0.0, yaw=0.0)


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
