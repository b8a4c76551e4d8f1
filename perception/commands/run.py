"""`perception run SOURCE`: perceive an image, a folder of images or a video; write results.

    perception run drive.mp4 --models yolox-nano,twinlitenet --json out.jsonl \\
        --save-masks masks/ --out annotated.mp4
    perception run drive.mp4 --plan --camera perception/cameras/udacity_960x540.yaml \\
        --json out.jsonl --save-bev bev/ --out annotated.mp4

Outputs: JSON Lines (one `FrameResult` per frame), masks as `DIR/<image stem or 6-digit frame
index>_drivable.png` / `_lanes.png` (uint8 0/255 at frame size), annotated images (`--out` a
folder) or an annotated video (`--out` a .mp4/.avi file). With `--plan`, each result carries a
`plan` (perception/driving/planning.py), the overlays draw the path, and `--save-bev DIR` writes
`<name>_bev.png`. Files are written by perception/logs/outputs.py: each under a temporary name,
renamed when complete, so a failed run never leaves a half-written file.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from tqdm import tqdm

from perception.commands.options import add_models_argument, add_plan_arguments, planning_camera
from perception.commands.summary import summary_table
from perception.driving.planning import Planner
from perception.errors import PerceptionError
from perception.frames import VIDEO_SUFFIXES, count_frames, open_source
from perception.logs.outputs import OutputPaths, Outputs
from perception.pipeline import Perceiver
from perception.zoo.registry import model_names, resolve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE",
                        help="an image, a folder of images, a video file or a camera index")
    add_models_argument(parser)
    parser.add_argument("--json", type=Path, metavar="OUT.jsonl",
                        help="write one JSON result per frame")
    parser.add_argument("--save-masks", type=Path, metavar="DIR",
                        help="write <name>_drivable.png and <name>_lanes.png per frame")
    parser.add_argument("--out", type=Path, metavar="OUT",
                        help="annotated images (a folder) or an annotated video (.mp4, .avi)")
    add_plan_arguments(parser)
    parser.add_argument("--save-bev", type=Path, metavar="DIR",
                        help="with --plan: write <name>_bev.png, the bird's-eye view per frame")
    parser.add_argument("--mirror", help="model mirror folder or URL "
                                         "(default: $PERCEPTION_MODELS_MIRROR)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def main(args: argparse.Namespace) -> int:
    names = model_names(args.models)
    if args.save_bev and not args.plan:
        raise PerceptionError("--save-bev needs --plan")
    camera = planning_camera(args)
    frames = open_source(args.source)
    total = count_frames(args.source)
    models = [resolve(name, args.mirror) for name in names]
    specs = [spec for spec, _ in models]
    if args.save_masks and not any(spec.segments for spec in specs):
        raise PerceptionError("--save-masks needs a segmentation model in --models")
    planner = Planner.for_models(camera, specs) if camera is not None else None
    video = args.out is not None and args.out.suffix.lower() in VIDEO_SUFFIXES
    paths = OutputPaths(jsonl=args.json, masks=args.save_masks, bev=args.save_bev,
                        video=args.out if video else None,
                        images=args.out if not video else None)
    perceiver = Perceiver(models)
    timings: list[dict[str, float]] = []
    interrupted = False
    start = time.perf_counter()
    try:
        with ExitStack() as stack:
            outputs = Outputs(stack, paths, camera)
            bar = stack.enter_context(tqdm(total=total, unit="frame",
                                           disable=True if args.no_progress else None))
            try:
                for frame, result in perceiver.stream(frames):
                    if planner is not None:  # offline: the frame's own clock, so never stale
                        planner.step(result, now=result.timestamp)
                    result.timings_ms["write"] = outputs.wait()  # in the JSONL, as always
                    outputs.write(frame, result, planner.bev if planner is not None else None)
                    timings.append(result.timings_ms)
                    bar.update(1)
            except KeyboardInterrupt:  # how a camera run ends: keep what was written
                interrupted = True
            outputs.close()
    finally:
        perceiver.close()
    elapsed = time.perf_counter() - start
    counts = {"frames": len(timings), "seconds": elapsed,
              "frames/s": len(timings) / elapsed if elapsed else 0.0}
    print(summary_table(counts, timings))
    if interrupted:
        print(f"perception: interrupted after {len(timings)} frames; outputs kept",
              file=sys.stderr)
        return 130
    return 0
