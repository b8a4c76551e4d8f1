"""`perception calibrate IMAGES... --board 9x6 [--square M] --out camera.yaml`

Finds the board in every photo, solves for the camera (perception/driving/calibration.py) and
writes a camera file whose mount the user then measures and edits (see docs/planning.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from perception.driving.calibration import CalibrationError, calibrate
from perception.driving.camera import camera_file_text
from perception.frames import IMAGE_SUFFIXES
from perception.logs.files import make_folder, write_atomically


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
