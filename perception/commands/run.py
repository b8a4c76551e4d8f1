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

A folder of images is a set of unrelated stills: each is planned on its own (the planner is
reset before every one), unless `--sequence` says the folder is one drive. A video and a camera
are always one drive. No image above `--max-pixels` (8K by default) is decoded: a single image
above it is an error (exit 2), one in a folder is skipped with a warning.

Exit codes: 0 done; 2 bad input or options (nothing written); 3 the video broke part-way (cut
or corrupt: the frames before were processed and written); 130 Ctrl-C or SIGTERM (the outputs
hold the frames done so far, the same frames in each).
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
from perception.frames import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    count_frames,
    open_source,
    pixel_limit,
)
from perception.logs.base import EXIT_PARTIAL
from perception.logs.files import writable
from perception.logs.outputs import OutputPaths, Outputs
from perception.logs.replay import UntilBroken
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
    parser.add_argument("--sequence", action="store_true",
                        help="the folder of images is one drive, in name order: plan it as a "
                             "sequence (default: each image is a still, planned on its own)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                        help="refuse images with more pixels, before decoding them (default "
                             f"{DEFAULT_MAX_PIXELS}, 8K); in a folder such an image is skipped")
    parser.add_argument("--mirror", help="model mirror folder or URL "
                                         "(default: $PERCEPTION_MODELS_MIRROR)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def main(args: argparse.Namespace) -> int:
    names = model_names(args.models)
    if args.save_bev and not args.plan:
        raise PerceptionError("--save-bev needs --plan")
    if args.sequence and not Path(args.source).is_dir():
        raise PerceptionError("--sequence is for a folder of images (a video or a camera is "
                              "always one drive)")
    source_path = Path(args.source)
    stills = (source_path.is_dir() and not args.sequence) or (
        source_path.is_file() and source_path.suffix.lower() in IMAGE_SUFFIXES)
    camera = planning_camera(args)
    source = UntilBroken(open_source(args.source, pixel_limit(args.max_pixels)))
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
    for path in paths.files():  # before the models load
        writable(path)
    perceiver = Perceiver(models)
    timings: list[dict[str, float]] = []
    interrupted = False
    start = time.perf_counter()
    try:
        with ExitStack() as stack:
            outputs = Outputs(stack, paths, camera)
            try:  # from here on, a Ctrl-C or SIGTERM keeps the outputs
                bar = stack.enter_context(tqdm(total=total, unit="frame",
                                               disable=True if args.no_progress else None))
                for frame, result in perceiver.stream(source):
                    if planner is not None:  # offline: the frame's own clock, so never stale
                        if stills:
                            planner.reset(still=True)
                        planner.step(result, now=result.timestamp,
                                     image=None if stills else frame.image)
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
    if source.error is not None:
        print(f"perception: error: stopped early: {source.error}; the {len(timings)} frames "
              "before it were written", file=sys.stderr)
        return EXIT_PARTIAL
    return 0
