"""`perception run SOURCE`: perceive an image, a folder of images or a video; write results.

    perception run drive.mp4 --models yolox-nano,twinlitenet --json out.jsonl \\
        --save-masks masks/ --out annotated.mp4
    perception run drive.mp4 --plan --camera perception/cameras/udacity_960x540.yaml \\
        --json out.jsonl --save-bev bev/ --out annotated.mp4

Outputs: JSON Lines (one `FrameResult` per frame), masks as `DIR/<image stem or 6-digit frame
index>_drivable.png` / `_lanes.png` (uint8 0/255 at frame size), annotated images (`--out` a
folder) or an annotated video (`--out` a .mp4/.avi file). With `--plan`, each result carries a
`plan` (perception/driving/planning.py), the overlays draw the path, and `--save-bev DIR` writes
`<name>_bev.png`. Every file is written under a temporary
name in its folder and renamed when complete, so a failed run never leaves a half-written file.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from perception.driving.bev import BirdsEye, draw_path, render_bev
from perception.driving.camera import CameraModel, load_camera
from perception.driving.planning import PlannerState, plan_frame
from perception.errors import PerceptionError
from perception.frames import VIDEO_SUFFIXES, Frame, count_frames, open_source
from perception.logs.outputs import (
    VideoOutput,
    atomic_output,
    jsonl_line,
    stage_stats,
    summary_table,
    writable,
)
from perception.overlay import draw_result
from perception.pipeline import Perceiver
from perception.results import FrameResult
from perception.zoo.registry import default_models, resolve

DEFAULT_MODELS = ",".join(default_models())


class OutputError(PerceptionError):
    """An output path cannot be written."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE",
                        help="an image, a folder of images, a video file or a camera index")
    parser.add_argument("--models", default=DEFAULT_MODELS,
                        help="comma-separated zoo names, spec .yaml or .onnx files "
                             f"(default: {DEFAULT_MODELS})")
    parser.add_argument("--json", type=Path, metavar="OUT.jsonl",
                        help="write one JSON result per frame")
    parser.add_argument("--save-masks", type=Path, metavar="DIR",
                        help="write <name>_drivable.png and <name>_lanes.png per frame")
    parser.add_argument("--out", type=Path, metavar="OUT",
                        help="annotated images (a folder) or an annotated video (.mp4, .avi)")
    parser.add_argument("--plan", action="store_true",
                        help="plan a path, speed and controls per frame (needs --camera)")
    parser.add_argument("--camera", type=Path, metavar="CAMERA.yaml",
                        help="the camera file for --plan (see perception/cameras/)")
    parser.add_argument("--save-bev", type=Path, metavar="DIR",
                        help="with --plan: write <name>_bev.png, the bird's-eye view per frame")
    parser.add_argument("--mirror", help="model mirror folder or URL "
                                         "(default: $PERCEPTION_MODELS_MIRROR)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def main(args: argparse.Namespace) -> int:
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    if not names:
        raise PerceptionError("--models names no model")
    camera = planning_camera(args)
    frames = open_source(args.source)
    total = count_frames(args.source)
    models = [resolve(name, args.mirror) for name in names]
    segments = any(spec.task in ("segmentation", "multitask") for spec, _ in models)
    if args.save_masks and not segments:
        raise PerceptionError("--save-masks needs a segmentation model in --models")
    if args.plan and not segments:
        raise PerceptionError("--plan needs a segmentation model in --models (drivable area)")
    detects = any(spec.task in ("detection", "multitask") for spec, _ in models)
    planner_state = PlannerState()
    perceiver = Perceiver(models)
    timings: list[dict[str, float]] = []
    interrupted = False
    start = time.perf_counter()
    try:
        with ExitStack() as stack:
            outputs = Outputs(args, stack)
            bar = stack.enter_context(tqdm(total=total, unit="frame",
                                           disable=True if args.no_progress else None))
            try:
                for frame, result in perceiver.stream(frames):
                    bev = None
                    if camera is not None:  # offline: the frame's own clock, so never stale
                        t0 = time.perf_counter()
                        planned = plan_frame(result, camera, planner_state,
                                             now=result.timestamp, detections_available=detects)
                        planner_state, result.plan, bev = planned.state, planned.plan, planned.bev
                        result.timings_ms["plan"] = (time.perf_counter() - t0) * 1e3
                    outputs.write(frame, result, bev, camera)
                    timings.append(result.timings_ms)
                    bar.update(1)
            except KeyboardInterrupt:  # how a camera run ends: keep what was written
                interrupted = True
    finally:
        perceiver.close()
    elapsed = time.perf_counter() - start
    counts = {"frames": len(timings), "seconds": elapsed,
              "frames/s": len(timings) / elapsed if elapsed else 0.0}
    print(summary_table(counts, stage_stats(timings)))
    if interrupted:
        print(f"perception: interrupted after {len(timings)} frames; outputs kept",
              file=sys.stderr)
        return 130
    return 0


def planning_camera(args: argparse.Namespace) -> CameraModel | None:
    """The camera for --plan, checked before any model loads."""
    if args.save_bev and not args.plan:
        raise PerceptionError("--save-bev needs --plan")
    if args.camera and not args.plan:
        raise PerceptionError("--camera is only used with --plan")
    if not args.plan:
        return None
    if not args.camera:
        raise PerceptionError("--plan needs --camera CAMERA.yaml (see perception/cameras/)")
    return load_camera(args.camera)


class Outputs:
    """The files a run writes; each one appears under its final name only when complete."""

    def __init__(self, args: argparse.Namespace, stack: ExitStack) -> None:
        self.jsonl = None
        if args.json:
            temp = stack.enter_context(atomic_output(writable(args.json)))
            self.jsonl = stack.enter_context(temp.open("w"))
        self.masks_dir = _folder(args.save_masks) if args.save_masks else None
        self.bev_dir = _folder(args.save_bev) if args.save_bev else None
        self.out = args.out
        self.video: VideoOutput | None = None
        if args.out and args.out.suffix.lower() in VIDEO_SUFFIXES:
            self.video = VideoOutput(stack.enter_context(atomic_output(writable(args.out))))
            stack.callback(self.video.finish)
        elif args.out:
            _folder(args.out)

    def write(self, frame: Frame, result: FrameResult, bev: BirdsEye | None = None,
              camera: CameraModel | None = None) -> None:
        t0 = time.perf_counter()
        if self.bev_dir and bev is not None:
            write_image(self.bev_dir / f"{frame.name}_bev.png", render_bev(bev, result.plan))
        if self.masks_dir:
            for which in ("drivable", "lanes"):
                mask = result.mask_at_frame_size(which)
                if mask is not None:
                    write_image(self.masks_dir / f"{frame.name}_{which}.png", mask * 255)
        if self.out:
            annotated = draw_result(frame.image, result)
            if result.plan is not None and camera is not None:
                draw_path(annotated, camera, result.plan.waypoints)
            if self.video is not None:
                self.video.write(frame.timestamp, annotated)
            else:
                write_image(self.out / f"{frame.name}.jpg", annotated)
        result.timings_ms["write"] = (time.perf_counter() - t0) * 1e3
        if self.jsonl:
            self.jsonl.write(jsonl_line(result))


def _folder(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{path}: cannot create folder ({error.strerror})") from error
    return path


def write_image(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(path.suffix, image)
    if not ok:
        raise OutputError(f"{path}: cannot encode as {path.suffix}")
    with atomic_output(path) as temp:
        temp.write_bytes(data.tobytes())
