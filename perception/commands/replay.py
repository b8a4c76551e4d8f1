"""`perception replay`: run perception over a recorded drive, as fast as possible or in real time
(the replay itself: perception/logs/replay.py).

    perception replay LOG [--topic T] [--rate R | --max] [--start S] [--end E] [--loop]
                          [--out OUT.mcap [--profile ros2]] [--json OUT.jsonl] [--video OUT.mp4]
                          [--foxglove [--foxglove-port N] [--foxglove-host H]]

`--max` (the default) perceives every frame as fast as the models allow. `--rate R` plays the
log R times its recorded speed, like a live camera: a reader thread releases each frame at its
log time, perception always takes the newest frame, and frames that arrive while it is busy are
dropped (newest wins). A processed frame whose result is ready only after the next frame has
arrived is a deadline miss.

`--plan --camera CAMERA.yaml` plans every processed frame (as `perception run --plan`);
`--ray [ADDRESS] LOGS...` (or several logs) replays many logs (perception/logs/fleet.py).

`--out` writes Foxglove schemas (perception/logs/foxglove_writer.py), or with `--profile ros2`
ROS 2 messages (perception/logs/ros2_writer.py). `--foxglove` also publishes the same topics
live for the Foxglove app (ws://127.0.0.1:8765; perception/logs/foxglove_live.py), at real time
unless `--rate` or `--max` says otherwise; the app's play, pause, speed and seek drive the
replay where the log tells its length. A port it cannot listen on is exit 2, before the models
load.

The log is opened and its first frame read before the models load, so a wrong path, topic
or time range fails at once.

An image above `--max-pixels` (8K by default) is skipped with a warning that says where (topic,
log time, byte offset), never decoded.

Exit codes: 0 done; 2 the log is unusable (nothing written); 3 the log broke part-way (a
truncated or corrupt record, an image that does not decode, a video cut short): the frames
before it were processed and the outputs hold them; 130 interrupted with Ctrl-C or SIGTERM
(outputs kept, the same frames in each; 0 with --loop).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from perception.commands.options import (
    add_foxglove_arguments,
    add_models_argument,
    add_plan_arguments,
    foxglove_address,
    planning_camera,
)
from perception.commands.summary import summary_table
from perception.errors import PerceptionError
from perception.frames import DEFAULT_MAX_PIXELS, pixel_limit
from perception.logs import fleet
from perception.logs.files import make_folder, writable
from perception.logs.outputs import MCAP_PROFILES, OutputPaths
from perception.logs.replay import ReplayOptions, replay_log
from perception.zoo.registry import model_names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("logs", nargs="+", type=Path, metavar="LOG",
                        help="MCAP file, rosbag2 folder (or .db3), ROS 1 .bag, KITTI folder, "
                             "video or image folder; several with --ray")
    parser.add_argument("--topic", help="image topic (listed when the log has several)")
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument("--rate", type=float, metavar="R",
                       help="play at R x recorded speed, dropping frames perception cannot "
                            "keep up with (newest wins)")
    speed.add_argument("--max", action="store_true",
                       help="process every frame as fast as possible (the default)")
    parser.add_argument("--start", type=float, metavar="S", help="seconds from the log start")
    parser.add_argument("--end", type=float, metavar="E", help="seconds from the log start")
    parser.add_argument("--loop", action="store_true", help="start over at the end, until Ctrl-C")
    parser.add_argument("--out", type=Path, metavar="OUT.mcap", help="MCAP output")
    parser.add_argument("--profile", choices=MCAP_PROFILES, default="foxglove",
                        help="what --out (or --out-dir) holds: Foxglove schemas (default) or "
                             "ROS 2 messages (CDR, for ros2 bag play)")
    parser.add_argument("--json", type=Path, metavar="OUT.jsonl",
                        help="one FrameResult JSON per line, as `perception run --json`")
    parser.add_argument("--video", type=Path, metavar="OUT.mp4",
                        help="video of the processed frames with results drawn (mp4v)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                        help="skip images with more pixels, before decoding them (default "
                             f"{DEFAULT_MAX_PIXELS}, 8K)")
    add_foxglove_arguments(parser, "publish live for the Foxglove app too (WebSocket); real time "
                                   "unless --rate or --max")
    add_models_argument(parser)
    add_plan_arguments(parser)
    parser.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                        help="replay many logs on a Ray cluster, one log per task (a local Ray "
                             "on 127.0.0.1 when no address is given)")
    parser.add_argument("--out-dir", type=Path, metavar="DIR",
                        help="with --ray: write DIR/<log>.mcap and DIR/<log>.jsonl per log")


def main(args: argparse.Namespace) -> int:
    if args.ray is not None or len(args.logs) > 1:
        return replay_many(args)
    if args.out_dir is not None:
        raise PerceptionError("--out-dir is for several logs or --ray; for one log use --out, "
                              "--json and --video")
    options = options_from(args)
    check_outputs(args.logs, options.outputs.files())
    report = replay_log(args.logs[0], model_names(args.models), options)
    paced = options.rate is not None
    print(summary_table(report.counts(paced), report.timings), file=sys.stderr)
    if report.error:
        print(f"perception: error: stopped early: {report.error}", file=sys.stderr)
    if report.interrupted:
        print(f"perception: interrupted after {report.processed} frames; outputs kept",
              file=sys.stderr)
        if options.loop:
            return 0
    return report.exit_code


def replay_many(args: argparse.Namespace) -> int:
    """Several logs, or --ray (perception/logs/fleet.py): a table across all logs; exit 0 when
    every log was fully processed, else 2 if any log was unusable, else 3."""
    logs, address = list(args.logs), args.ray
    if address not in (None, "local") and Path(address).exists():  # `--ray a.mcap b.mcap`
        logs, address = [Path(address), *logs], "local"
    if args.out or args.json or args.video:
        raise PerceptionError("with several logs or --ray, use --out-dir DIR for the outputs "
                              "(DIR/<log>.mcap and DIR/<log>.jsonl)")
    options = options_from(args)
    if options.loop:
        raise PerceptionError("--loop replays one log; it does not combine with several")
    if options.foxglove is not None:
        raise PerceptionError("--foxglove replays one log; it does not combine with several")
    if args.out_dir is not None:
        make_folder(args.out_dir)
        # two logs of one name, or --out-dir the logs' own folder
        check_outputs(logs, fleet.output_files(logs, args.out_dir))
    summaries, wall_s = fleet.replay_logs(logs, model_names(args.models), options,
                                          args.out_dir, address)
    print(fleet.fleet_table(summaries, wall_s), file=sys.stderr)
    return fleet.exit_code(summaries)


def options_from(args: argparse.Namespace) -> ReplayOptions:
    if args.rate is not None and args.rate <= 0:
        raise PerceptionError(f"--rate must be positive, got {args.rate}")
    for name in ("start", "end"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise PerceptionError(f"--{name} must be >= 0 seconds from the log start")
    if args.profile != "foxglove" and args.out is None and args.out_dir is None:
        raise PerceptionError(f"--profile {args.profile} is what --out OUT.mcap holds; "
                              "give --out")
    foxglove = foxglove_address(args)
    rate = args.rate
    if foxglove is not None and rate is None and not args.max:
        rate = 1.0  # a viewer watches at real time
    return ReplayOptions(topic=args.topic, rate=rate, start=args.start, end=args.end,
                         loop=args.loop, camera=planning_camera(args),
                         outputs=OutputPaths(mcap=args.out, jsonl=args.json, video=args.video,
                                             mcap_profile=args.profile),
                         max_pixels=pixel_limit(args.max_pixels), foxglove=foxglove)


def check_outputs(logs: list[Path], outputs: list[Path]) -> None:
    """Each output a writable file of its own, none of them a log being replayed (which the
    final rename would overwrite)."""
    paths = [Path(os.path.realpath(writable(path))) for path in outputs]
    if len(set(paths)) != len(paths):
        raise PerceptionError(f"two outputs share a file name: {', '.join(map(str, paths))}")
    for log in logs:
        if Path(os.path.realpath(log)) in paths:  # realpath: a symlink loop is no error here
            raise PerceptionError(f"{log}: an output would overwrite this log")
