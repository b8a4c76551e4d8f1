"""`perception calibrate IMAGES... --board 9x6 [--square M] --out camera.yaml`, or
`perception calibrate --from-drive VIDEO --camera CAMERA.yaml --out camera.yaml
[--lane-width 3.7] [--every N] [--models ...]`

Chessboard photos: finds the board in every photo, solves for the camera
(perception/driving/calibration.py) and writes a camera file whose mount the user then
measures and edits (see docs/planning.md).

A drive (no chessboard): runs the models over the video's frames (every Nth), fits the lane
boundaries and proposes the mount pitch (the ego lane lines' horizon) and height (the ego
lane `--lane-width` wide) of the camera file given; writes it with the rest unchanged and a
header saying what was estimated from how many frames.
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

from perception.commands.options import add_models_argument
from perception.driving.calibration import (
    CalibrationError,
    DriveCalibration,
    calibrate,
    calibrate_from_drive,
)
from perception.driving.camera import CameraModel, camera_file_text, fit_to_frame, load_camera
from perception.frames import IMAGE_SUFFIXES, SourceError, open_source
from perception.lane_lines import fit_lane_boundaries
from perception.logs.files import make_folder, write_atomically
from perception.pipeline import Perceiver
from perception.results import LaneBoundary
from perception.zoo.registry import model_names

DEFAULT_LANE_WIDTH_M = 3.7  # a US interstate lane, line centre to line centre


def parse_board(text: str) -> tuple[int, int]:
    try:
        cols, rows = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise CalibrationError(f"--board must look like 9x6 (inner corners across x down), "
                               f"got {text!r}") from None
    if cols < 2 or rows < 2:
        raise CalibrationError(f"--board needs at least 2x2 inner corners, got {text!r}")
    return cols, rows


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
    parser.add_argument("images", nargs="*", help="chessboard photos (files or folders)")
    parser.add_argument("--board", default="9x6",
                        help="inner corners across x down (default 9x6)")
    parser.add_argument("--square", type=float, default=1.0,
                        help="square size in metres (only scales the board poses; default 1)")
    parser.add_argument("--out", required=True, help="camera YAML to write")
    drive = parser.add_argument_group(
        "from a drive", "no chessboard: propose the mount pitch and height of a camera file "
        "from a video of a drive on a road with painted lane lines")
    drive.add_argument("--from-drive", metavar="VIDEO",
                       help="a video (or a folder of frames) of one drive")
    drive.add_argument("--camera", type=Path, metavar="CAMERA.yaml",
                       help="the camera file to correct (its K, distortion and the rest of its "
                            "mount are kept)")
    drive.add_argument("--lane-width", type=float, default=DEFAULT_LANE_WIDTH_M,
                       help="the lanes' width there, metres between the lines' centres "
                            f"(default {DEFAULT_LANE_WIDTH_M})")
    drive.add_argument("--every", type=int, default=1, metavar="N",
                       help="use every Nth frame (default 1: all)")
    add_models_argument(drive)


def main(args: argparse.Namespace) -> int:
    if args.from_drive is not None:
        return from_drive(args)
    if args.camera is not None:
        raise CalibrationError("--camera is only used with --from-drive")
    if not args.images:
        raise CalibrationError("give chessboard photos (files or folders), or --from-drive "
                               "VIDEO --camera CAMERA.yaml")
    board = parse_board(args.board)
    if not args.square > 0:  # also refuses nan
        raise CalibrationError(f"--square must be > 0, got {args.square:g}")
    result = calibrate(expand(args.images), board, args.square)
    cam = result.camera
    comment = (f"perception calibrate: {len(result.used)} views, RMS {result.rms:.3f} px.\n"
               "mount is a default: measure and edit it (metres, degrees; pitch > 0 looks down).")
    out = Path(args.out)
    make_folder(out.parent)
    write_atomically(out, camera_file_text(cam, comment))
    print(f"board found in {len(result.used)} of {len(result.used) + len(result.skipped)} "
          f"images (skipped: {', '.join(p.name for p in result.skipped) or 'none'}; "
          f"resized to {cam.width}x{cam.height}: "
          f"{', '.join(p.name for p in result.resized) or 'none'})", file=sys.stderr)
    print(f"RMS reprojection error {result.rms:.3f} px; fx={cam.K[0, 0]:.1f} fy={cam.K[1, 1]:.1f} "
          f"cx={cam.K[0, 2]:.1f} cy={cam.K[1, 2]:.1f}; wrote {args.out}")
    return 0


def from_drive(args: argparse.Namespace) -> int:
    if args.images:
        raise CalibrationError("give chessboard photos or --from-drive VIDEO, not both")
    if args.camera is None:
        raise CalibrationError("--from-drive needs --camera CAMERA.yaml (the camera to correct: "
                               "its K is used as it is)")
    if not (math.isfinite(args.lane_width) and 2.0 <= args.lane_width <= 5.5):
        raise CalibrationError(f"--lane-width must be between 2 and 5.5 m, got {args.lane_width:g}")
    if args.every < 1:
        raise CalibrationError(f"--every must be 1 or more, got {args.every}")
    camera = load_camera(args.camera)
    names = model_names(args.models)
    if not Path(args.from_drive).exists():
        raise SourceError(f"{args.from_drive}: no such file or folder")
    frames = (f for f in open_source(args.from_drive) if f.index % args.every == 0)
    boundaries, fitted = drive_boundaries(frames, camera, names)
    try:
        result = calibrate_from_drive(boundaries, fitted, args.lane_width)
    except CalibrationError as error:
        raise CalibrationError(f"{args.from_drive}: {error}") from None
    proposed = replace(camera, mount=result.camera.mount)
    out = Path(args.out)
    make_folder(out.parent)
    write_atomically(out, camera_file_text(proposed, drive_comment(args, camera, result)))
    old, new = camera.mount, proposed.mount
    height = (f"height {new.z:.2f} m (was {old.z:g})" if new.z != old.z else
              f"height kept at {old.z:g} m (the ego lane was measured in only "
              f"{result.width_frames} frames)")
    print(f"pitch {new.pitch:.2f} deg (was {old.pitch:g}) from the ego lane lines in "
          f"{result.horizon_frames} of {result.frames} frames; {height}; wrote {args.out}")
    return 0


def drive_boundaries(frames, camera: CameraModel, names: list[str]
                     ) -> tuple[list[list[LaneBoundary]], CameraModel]:
    """Each frame's fitted lane boundaries, and the camera fitted to the frames' size."""
    boundaries: list[list[LaneBoundary]] = []
    fitted = None
    with Perceiver.from_names(names) as perceiver:
        for _, result in perceiver.stream(frames):
            if result.lanes is None:
                raise CalibrationError(f"--models {','.join(names)} gives no lane lines; "
                                       "name a lane segmentation model (the default does)")
            fitted = fitted or fit_to_frame(camera, result.width, result.height)
            boundaries.append(fit_lane_boundaries(result.lanes, result.width, result.height))
    if fitted is None:
        raise CalibrationError("the drive has no frames")
    return boundaries, fitted


def drive_comment(args: argparse.Namespace, camera: CameraModel,
                  result: DriveCalibration) -> str:
    old, new = camera.mount, result.camera.mount
    frames = "all frames" if args.every == 1 else f"1 frame in {args.every}"
    lines = [f"perception calibrate --from-drive {Path(args.from_drive).name} ({frames}, "
             f"models {args.models}), from {args.camera}:",
             f"- pitch {new.pitch:g} deg (was {old.pitch:g}): the ego lane lines meet at row "
             f"{result.horizon_row:.1f} of the {result.camera.width}x{result.camera.height} "
             f"frames (median of {result.horizon_frames} of {result.frames} frames; per-frame "
             f"spread +-{result.spread_deg:.2f} deg). Hills and curves bias it.",
             ]
    if new.z != old.z:
        lines.append(f"- z {new.z:g} m (was {old.z:g}): makes the ego lane {args.lane_width:g} m "
                     f"wide (--lane-width; with the new pitch it measured "
                     f"{result.measured_width_m:.2f} m at {old.z:g} m, median of "
                     f"{result.width_frames} frames).")
    else:
        lines.append(f"- z kept at {old.z:g} m: the ego lane was measured in only "
                     f"{result.width_frames} frames.")
    lines.append("K, dist and the rest of the mount are the given camera file's.")
    return "\n".join(textwrap.fill(line, 96, subsequent_indent="  ") for line in lines)
