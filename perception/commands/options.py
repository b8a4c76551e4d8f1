"""Options that several commands share, parsed and checked the same way everywhere."""

from __future__ import annotations

import argparse
from pathlib import Path

from perception.driving.camera import CameraModel, load_camera
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


def planning_camera(args: argparse.Namespace) -> CameraModel | None:
    """The camera of `--plan --camera`, loaded and checked before any model loads."""
    if args.camera is not None and not args.plan:
        raise PerceptionError("--camera is only used with --plan")
    if not args.plan:
        return None
    if args.camera is None:
        raise PerceptionError("--plan needs --camera CAMERA.yaml (see perception/cameras/)")
    return load_camera(args.camera)
