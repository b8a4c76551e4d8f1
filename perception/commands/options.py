"""Options that several commands share, parsed and checked the same way everywhere."""

from __future__ import annotations

import argparse
import re
from dataclasses import replace
from pathlib import Path

from perception.driving.camera import CameraError, CameraModel, load_camera
from perception.errors import PerceptionError
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
