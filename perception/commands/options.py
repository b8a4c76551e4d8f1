"""Options that several commands share, parsed and checked the same way everywhere."""

from __future__ import annotations

import argparse
import re
from dataclasses import replace
from pathlib import Path

from perception.driving.camera import CameraError, CameraModel, load_camera
from perception.errors import PerceptionError
from perception.logs.foxglove_live import DEFAULT_HOST, DEFAULT_PORT, FoxgloveAddress
from perception.zoo.registry import default_models


def add_models_argument(parser: argparse.ArgumentParser) -> None:
    """`--models a,b`: parse it with `perception.zoo.registry.model_names`."""
    default = ",".join(default_models())
    parser.add_argument("--models", default=default,
                        help="comma-separated zoo names, spec .yaml or .onnx files "
                             f"(default: {default})")


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", action="store_true",
                        help="plan a path, speed and controls per frame (needs --camera)")
    parser.add_argument("--camera", type=Path, metavar="CAMERA.yaml",
                        help="the camera file for --plan (see perception/cameras/)")
    parser.add_argument("--camera-crop", metavar="X,Y",
                        help="the frames are cut from the camera file's image with this "
                             "top-left corner, in its pixels (replaces the file's crop; "
                             "see docs/planning.md, Camera files)")


def planning_camera(args: argparse.Namespace) -> CameraModel | None:
    """The camera of `--plan --camera [--camera-crop X,Y]`, loaded and checked before any
    model loads."""
    if args.camera_crop is not None and args.camera is None:
        raise PerceptionError("--camera-crop needs --camera CAMERA.yaml: it says where the "
                              "frames are cut from that camera's image")
    if args.camera is not None and not args.plan:
        raise PerceptionError("--camera is only used with --plan")
    if not args.plan:
        return None
    if args.camera is None:
        raise PerceptionError("--plan needs --camera CAMERA.yaml (see perception/cameras/)")
    camera = load_camera(args.camera)
    if args.camera_crop is None:
        return camera
    match = re.fullmatch(r"\s*([0-9]{1,6})\s*,\s*([0-9]{1,6})\s*", args.camera_crop)
    if match is None:
        raise PerceptionError(f"--camera-crop must be X,Y in whole pixels >= 0 (e.g. 0,0), got "
                              f"{args.camera_crop!r}")
    try:
        return replace(camera, crop=(int(match[1]), int(match[2])))
    except CameraError as error:
        raise CameraError(f"--camera-crop {args.camera_crop} with {args.camera}: {error}") \
            from None


def add_foxglove_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """`--foxglove`, `--foxglove-port N`, `--foxglove-host H`: publish live for the Foxglove
    app (perception/logs/foxglove_live.py); `what` is the help of `--foxglove`."""
    parser.add_argument("--foxglove", action="store_true", help=what)
    parser.add_argument("--foxglove-port", type=int, metavar="N",
                        help=f"its port (default {DEFAULT_PORT}; 0: any free one); implies "
                             "--foxglove")
    parser.add_argument("--foxglove-host", metavar="H",
                        help=f"the address it listens on (default {DEFAULT_HOST}); implies "
                             "--foxglove")


def foxglove_address(args: argparse.Namespace) -> FoxgloveAddress | None:
    """Where to publish live: with --foxglove, --foxglove-port or --foxglove-host."""
    if not (args.foxglove or args.foxglove_port is not None or args.foxglove_host is not None):
        return None
    port = DEFAULT_PORT if args.foxglove_port is None else args.foxglove_port
    if not 0 <= port <= 65535:
        raise PerceptionError(f"--foxglove-port must be 0-65535 (0: any free port), got {port}")
    return FoxgloveAddress(args.foxglove_host or DEFAULT_HOST, port)
