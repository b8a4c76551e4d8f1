"""`perception calibrate IMAGES... --board 9x6 [--square M] --out camera.yaml`

OpenCV chessboard calibration: find the inner corners of the board in every photo, refine them
to sub-pixel, and solve for K and the distortion with `cv2.calibrateCamera`. Photos of another
size than the majority are resized to it (phones and some capture tools add a pixel here and
there). The RMS reprojection error says how well the model fits: about 1 px or less is good.
The camera file gets a default mount that the user edits (see docs/planning.md).

`Undistorter` is the optional preprocessing step: it removes the lens distortion from frames,
after which the camera is `camera.undistorted()` (same K, no distortion).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from perception.driving.camera import CameraModel, Mount, save_camera
from perception.errors import PerceptionError
from perception.frames import IMAGE_SUFFIXES, read_image

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


def parse_board(text: str) -> tuple[int, int]:
    try:
        cols, rows = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise CalibrationError(f"--board must look like 9x6 (inner corners across x down), "
                               f"got {text!r}") from None
    if cols < 2 or rows < 2:
        raise CalibrationError(f"--board needs at least 2x2 inner corners, got {text!r}")
    return cols, rows


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


class Undistorter:
    """Removes lens distortion from frames of a calibrated camera (a preprocessing step).

    Frames come out with the same size and K, so planning then uses `camera.undistorted()`.
    """

    def __init__(self, camera: CameraModel) -> None:
        self.camera = camera
        self.maps = cv2.initUndistortRectifyMap(camera.K, camera.dist, None, camera.K,
                                                (camera.width, camera.height), cv2.CV_16SC2)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if image.shape[:2] != (self.camera.height, self.camera.width):
            raise CalibrationError(f"frame is {image.shape[1]}x{image.shape[0]} but the camera "
                                   f"is {self.camera.width}x{self.camera.height}")
        return cv2.remap(image, *self.maps, cv2.INTER_LINEAR)


def expand(inputs: list[str]) -> list[Path]:
    """Files as given; folders expand to the images inside them, sorted."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise CalibrationError(f"{path}: no images in this folder")
            paths.extend(images)
        else:
            paths.append(path)
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="chessboard photos (files or folders)")
    parser.add_argument("--board", default="9x6",
                        help="inner corners across x down (default 9x6)")
    parser.add_argument("--square", type=float, default=1.0,
                        help="square size in metres (only scales the board poses; default 1)")
    parser.add_argument("--out", required=True, help="camera YAML to write")


def main(args: argparse.Namespace) -> int:
    board = parse_board(args.board)
    if not args.square > 0:  # also refuses nan
        raise CalibrationError(f"--square must be > 0, got {args.square:g}")
    result = calibrate(expand(args.images), board, args.square)
    cam = result.camera
    comment = (f"perception calibrate: {len(result.used)} views, RMS {result.rms:.3f} px.\n"
               "mount is a default: measure and edit it (metres, degrees; pitch > 0 looks down).")
    save_camera(cam, args.out, comment)
    print(f"board found in {len(result.used)} of {len(result.used) + len(result.skipped)} "
          f"images (skipped: {', '.join(p.name for p in result.skipped) or 'none'}; "
          f"resized to {cam.width}x{cam.height}: "
          f"{', '.join(p.name for p in result.resized) or 'none'})", file=sys.stderr)
    print(f"RMS reprojection error {result.rms:.3f} px; fx={cam.K[0, 0]:.1f} fy={cam.K[1, 1]:.1f} "
          f"cx={cam.K[0, 2]:.1f} cy={cam.K[1, 2]:.1f}; wrote {args.out}")
    return 0
