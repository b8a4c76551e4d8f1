"""`perception record`: a camera, a video or a KITTI folder to an MCAP drive log.

The log holds `foxglove.CompressedImage` on /camera/image and `foxglove.CameraCalibration` on
/camera/calibration (KITTI's own calibration, else the `--calibration` camera file, else a
nominal pinhole), so it opens in Foxglove and replays with `perception replay LOG.mcap`.

Exit codes: 0 recorded; 2 nothing to record (no file written); 3 the source broke part-way (an
image of a KITTI folder that does not decode, a video cut short): the frames before it are in
the log; a camera records until Ctrl-C or SIGTERM (exit 0). A video or camera whose frames are
above `--max-pixels` (8K by default) is refused (2); such an image of a KITTI folder is skipped
with a warning.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from perception.driving.camera import load_camera
from perception.errors import PerceptionError
from perception.frames import (
    DEFAULT_MAX_PIXELS,
    CorruptRecordError,
    SourceError,
    camera_frames,
    pixel_limit,
    video_frames,
)
from perception.logs.base import EXIT_PARTIAL
from perception.logs.files import writable
from perception.logs.foxglove_writer import foxglove_mcap
from perception.logs.kitti_source import kitti_frames


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--camera", type=int, metavar="N", help="camera device index")
    source.add_argument("--video", type=Path, metavar="F", help="video file")
    source.add_argument("--kitti", type=Path, metavar="DIR",
                        help="KITTI raw drive or object folder (with its calibration)")
    parser.add_argument("--out", type=Path, required=True, metavar="LOG.mcap")
    parser.add_argument("--calibration", type=Path, metavar="CAMERA.yaml",
                        help="camera file (perception/cameras/) whose intrinsics and mount are "
                             "written for frames without a calibration of their own")
    parser.add_argument("--duration", type=float, metavar="S",
                        help="stop after S seconds of log time (default: the whole source; "
                             "a camera records until Ctrl-C)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                        help="refuse frames with more pixels, before decoding them (default "
                             f"{DEFAULT_MAX_PIXELS}, 8K)")


def main(args: argparse.Namespace) -> int:
    if args.duration is not None and args.duration <= 0:
        raise PerceptionError(f"--duration must be positive, got {args.duration}")
    if args.out.suffix != ".mcap":  # replay tells a log's kind by its name
        raise PerceptionError(f"--out {args.out}: an MCAP log's name ends in .mcap")
    max_pixels = pixel_limit(args.max_pixels)
    if args.camera is not None:
        frames = camera_frames(args.camera, max_pixels)
    elif args.video is not None:
        frames = video_frames(args.video, max_pixels)
    else:
        frames = kitti_frames(args.kitti, max_pixels=max_pixels)
    camera = load_camera(args.calibration) if args.calibration is not None else None
    written = 0
    broken: CorruptRecordError | None = None
    with foxglove_mcap(writable(args.out), camera=camera) as writer:
        first = None
        try:
            for frame in tqdm(frames, desc="recording", unit="frame", disable=None):
                first = frame.timestamp if first is None else first
                if args.duration is not None and frame.timestamp - first >= args.duration:
                    break
                writer.write(frame)
                written += 1
        except KeyboardInterrupt:  # the way to stop a camera: keep what was recorded
            pass
        except CorruptRecordError as error:  # keep the frames before the broken one
            broken = error
        if written == 0:
            raise SourceError(f"nothing recorded: {broken or 'the source gave no frames'}; "
                              f"{args.out} was not written")
    print(f"recorded {written} frames to {args.out}", file=sys.stderr)
    if broken is not None:
        print(f"perception: error: stopped early: {broken}", file=sys.stderr)
        return EXIT_PARTIAL
    return 0
