"""`perception replay`: run perception over a recorded drive, as fast as possible or in real time.

    perception replay LOG [--topic T] [--rate R | --max] [--start S] [--end E] [--loop]
                          [--out OUT.mcap] [--json OUT.jsonl] [--video OUT.mp4]

`--max` (the default) perceives every frame as fast as the models allow. `--rate R` plays the
log R times its recorded speed, like a live camera: a reader thread releases each frame at its
log time, perception always takes the newest frame, and frames that arrive while it is busy are
dropped (newest wins). A processed frame whose result is ready only after the next frame has
arrived is a deadline miss.

`--plan --camera CAMERA.yaml` plans every processed frame (as `perception run --plan`);
`--ray [ADDRESS] LOGS...` hands many logs to perception/commands/fleet.py.

The log is opened and its first frame read before the models load, so a wrong path, topic
or time range fails at once.

Exit codes: 0 done; 2 the log is unusable (nothing written); 3 the log broke part-way (a
truncated or corrupt record, an image that does not decode): the frames before it were
processed and the outputs hold them; 130 interrupted with Ctrl-C (outputs kept, 0 with --loop).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from perception.commands.run import DEFAULT_MODELS
from perception.driving.bev import draw_path
from perception.driving.camera import CameraModel, load_camera
from perception.driving.planning import PlannerState, plan_frame
from perception.errors import PerceptionError
from perception.frames import Frame, SourceError
from perception.logs.foxglove_writer import FoxgloveWriter, foxglove_mcap
from perception.logs.outputs import (
    VideoOutput,
    atomic_output,
    jsonl_line,
    stage_stats,
    summary_table,
    writable,
)
from perception.logs.pacer import Pacer
from perception.logs.sources import EXIT_PARTIAL, CorruptRecordError, count_log_frames, open_log
from perception.overlay import draw_result
from perception.pipeline import Perceiver
from perception.results import FrameResult

EXIT_INTERRUPTED = 130


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
    parser.add_argument("--out", type=Path, metavar="OUT.mcap", help="Foxglove MCAP output")
    parser.add_argument("--json", type=Path, metavar="OUT.jsonl",
                        help="one FrameResult JSON per line, as `perception run --json`")
    parser.add_argument("--video", type=Path, metavar="OUT.mp4",
                        help="video of the processed frames with results drawn (mp4v)")
    parser.add_argument("--models", default=DEFAULT_MODELS,
                        help=f"comma-separated zoo names (default {DEFAULT_MODELS})")
    parser.add_argument("--plan", action="store_true",
                        help="plan a path, speed and controls per frame (needs --camera)")
    parser.add_argument("--camera", type=Path, metavar="CAMERA.yaml",
                        help="the camera file for --plan (see perception/cameras/)")
    parser.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                        help="replay many logs on a Ray cluster, one log per task (a local Ray "
                             "on 127.0.0.1 when no address is given)")
    parser.add_argument("--out-dir", type=Path, metavar="DIR",
                        help="with --ray: write DIR/<log>.mcap and DIR/<log>.jsonl per log")


@dataclass
class ReplayOptions:
    topic: str | None = None
    rate: float | None = None  # None: every frame, as fast as possible
    start: float | None = None
    end: float | None = None
    loop: bool = False
    out: Path | None = None
    json: Path | None = None
    video: Path | None = None
    camera: CameraModel | None = None  # plan every frame with this camera
    progress: bool = True


@dataclass
class ReplayReport:
    log: str
    read: int = 0
    processed: int = 0
    dropped: int = 0
    deadline_misses: int = 0
    wall_s: float = 0.0
    timings: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None  # where the log broke, for exit code 3
    interrupted: bool = False

    @property
    def frames_per_s(self) -> float:
        return self.processed / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.error else EXIT_INTERRUPTED if self.interrupted else 0

    def counts(self, paced: bool) -> dict[str, int | float]:
        counts: dict[str, int | float] = {"frames read": self.read,
                                          "processed": self.processed,
                                          "dropped": self.dropped}
        if paced:
            counts["deadline misses"] = self.deadline_misses
        counts["frames/s"] = self.frames_per_s
        return counts

    def table(self, paced: bool) -> str:
        return summary_table(self.counts(paced), stage_stats(self.timings))


def main(args: argparse.Namespace) -> int:
    if args.ray is not None or len(args.logs) > 1:
        from perception.commands.fleet import main as fleet_main
        return fleet_main(args)
    if args.out_dir is not None:
        raise PerceptionError("--out-dir is for several logs or --ray; for one log use --out, "
                              "--json and --video")
    options = options_from(args)
    check_outputs(args.logs, [options.out, options.json, options.video])
    report = replay_log(args.logs[0], model_names(args.models), options)
    print(report.table(paced=options.rate is not None), file=sys.stderr)
    if report.error:
        print(f"perception: error: stopped early: {report.error}", file=sys.stderr)
    if report.interrupted:
        print(f"perception: interrupted after {report.processed} frames; outputs kept",
              file=sys.stderr)
        if options.loop:
            return 0
    return report.exit_code


def options_from(args: argparse.Namespace) -> ReplayOptions:
    if args.rate is not None and args.rate <= 0:
        raise PerceptionError(f"--rate must be positive, got {args.rate}")
    for name in ("start", "end"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise PerceptionError(f"--{name} must be >= 0 seconds from the log start")
    if args.camera is not None and not args.plan:
        raise PerceptionError("--camera is only used with --plan")
    if args.plan and args.camera is None:
        raise PerceptionError("--plan needs --camera CAMERA.yaml (see perception/cameras/)")
    camera = load_camera(args.camera) if args.plan else None
    return ReplayOptions(topic=args.topic, rate=args.rate, start=args.start, end=args.end,
                         loop=args.loop, out=args.out, json=args.json, video=args.video,
                         camera=camera)


def check_outputs(logs: list[Path], outputs: list[Path | None]) -> None:
    """Each output a writable file of its own, none of them a log being replayed (which the
    final rename would overwrite)."""
    paths = [writable(path).resolve() for path in outputs if path is not None]
    if len(set(paths)) != len(paths):
        raise PerceptionError(f"two outputs share a file name: {', '.join(map(str, paths))}")
    for log in logs:
        if log.resolve() in paths:
            raise PerceptionError(f"{log}: an output would overwrite this log")


def model_names(models: str) -> list[str]:
    names = [name.strip() for name in models.split(",") if name.strip()]
    if not names:
        raise PerceptionError("--models names no model")
    return names


def replay_log(log: Path, models: list[str], options: ReplayOptions,
               workers: int | None = None) -> ReplayReport:
    """Perceive one log with `models` (on `workers` threads, default one per core) and write
    the outputs asked for. Raises SourceError if the log is unusable (before the models load
    and anything is written); a break part-way ends up in `report.error`."""
    source = UntilBroken(log_frames(log, options))
    report = ReplayReport(log=str(log))
    with ExitStack() as stack:
        perceiver = stack.enter_context(Perceiver.from_names(models, workers=workers))
        planner = Planner(options.camera, perceiver, options.rate) if options.camera else None
        outputs = Outputs(stack, options)
        whole_log = options.start is None and options.end is None and not options.loop
        total = count_log_frames(log, options.topic) if whole_log and options.progress else None
        # disable=None: a bar only on a terminal
        bar = stack.enter_context(tqdm(desc=log.name, unit="frame", leave=False, total=total,
                                       disable=None if options.progress else True))
        started = time.perf_counter()
        pacer = Pacer(source, options.rate) if options.rate is not None else None
        try:
            for frame, result, timings in perceived(perceiver, source, pacer, report):
                if planner is not None:
                    planner.plan(result, timings)
                t0 = time.perf_counter()
                outputs.write(frame, result)
                timings["write"] = (time.perf_counter() - t0) * 1e3
                report.timings.append(timings)
                report.processed += 1
                bar.update(1)
        except KeyboardInterrupt:
            report.interrupted = True
        finally:
            if pacer is not None:
                pacer.close()
        report.error = str(source.error) if source.error is not None else None
        report.wall_s = time.perf_counter() - started
        report.read = pacer.arrived if pacer is not None else report.processed
        report.dropped = pacer.dropped if pacer is not None else 0
        outputs.close()
    return report


def perceived(perceiver: Perceiver, source: Iterable[Frame], pacer: Pacer | None,
              report: ReplayReport) -> Iterator[tuple[Frame, FrameResult, dict[str, float]]]:
    """(frame, result, stage timings): every frame through the perceiver's pipelined stream,
    or, paced, the newest frame at a time with its latency from arrival to result."""
    if pacer is None:
        for frame, result in perceiver.stream(source):
            yield frame, result, dict(result.timings_ms)
        return
    while (item := pacer.next()) is not None:
        frame, arrived = item
        result = perceiver.perceive([frame])[0]
        timings = {**result.timings_ms, "latency": (time.perf_counter() - arrived) * 1e3}
        report.deadline_misses += pacer.newer_waiting()
        yield frame, result, timings


class Planner:
    """Plans each perceived frame on the log's clock. With --max the plan is made at the
    frame's own time (never stale); paced, at the log time when the result was ready, so
    perception that falls too far behind makes the planner stop safely, as it would live."""

    def __init__(self, camera: CameraModel, perceiver: Perceiver, rate: float | None) -> None:
        if not any(m.spec.task in ("segmentation", "multitask") for m in perceiver.models):
            raise PerceptionError("--plan needs a segmentation model in --models "
                                  "(drivable area)")
        self.camera, self.rate = camera, rate
        self.detects = any(m.spec.task in ("detection", "multitask") for m in perceiver.models)
        self.state = PlannerState()

    def plan(self, result: FrameResult, timings: dict[str, float]) -> None:
        now = result.timestamp
        if self.rate is not None:
            now += timings["latency"] / 1e3 * self.rate
        t0 = time.perf_counter()
        planned = plan_frame(result, self.camera, self.state, now=now,
                             detections_available=self.detects)
        self.state, result.plan = planned.state, planned.plan
        timings["plan"] = result.timings_ms["plan"] = (time.perf_counter() - t0) * 1e3


class UntilBroken:
    """A log's frames up to a corrupt record. The error is kept in `error` rather than raised,
    so the frames before it that are still in the pipeline get finished and written."""

    def __init__(self, frames: Iterator[Frame]) -> None:
        self.frames = frames
        self.error: CorruptRecordError | None = None

    def __iter__(self) -> Iterator[Frame]:
        try:
            yield from self.frames
        except CorruptRecordError as error:
            self.error = error


def log_frames(log: Path, options: ReplayOptions) -> Iterator[Frame]:
    """The log's frames, over and over with --loop (times shifted to keep increasing). The
    first frame is read now: a log without one in range is unusable."""
    frames = open_log(log, options.topic, options.start, options.end)
    try:
        head = next(frames)
    except StopIteration:
        raise SourceError(f"{log}: no frames in the selected topic and time range") from None
    except CorruptRecordError as error:
        raise SourceError(f"{error} (no frame before it)") from None
    first_pass = itertools.chain([head], frames)

    def passes() -> Iterator[Frame]:
        frames, offset = first_pass, 0.0
        while True:
            first = last = gap = None
            for frame in frames:
                if last is not None:
                    gap = frame.timestamp - last
                first = frame.timestamp if first is None else first
                last = frame.timestamp
                frame.timestamp += offset
                yield frame
            if not options.loop or last is None:
                return
            offset += last - first + (gap or 0.1)
            frames = open_log(log, options.topic, options.start, options.end)

    return passes()


class Outputs:
    """The files asked for, each written to a temporary name and moved into place on close.

    Writing happens on one background thread, overlapping the next frame's inference; `write`
    first waits for the previous frame, so outputs stay in order and at most one frame waits.
    """

    def __init__(self, stack: ExitStack, options: ReplayOptions) -> None:
        self.mcap: FoxgloveWriter | None = None
        self.jsonl: TextIO | None = None
        self.video: VideoOutput | None = None
        self.camera = options.camera
        if options.out is not None:
            self.mcap = stack.enter_context(foxglove_mcap(options.out, camera=options.camera))
        if options.json is not None:
            temp = stack.enter_context(atomic_output(options.json))
            self.jsonl = stack.enter_context(temp.open("w", encoding="utf-8"))
        if options.video is not None:
            self.video = VideoOutput(stack.enter_context(atomic_output(options.video)))
            stack.callback(self.video.release)
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outputs")
        stack.callback(self.thread.shutdown)  # runs first on exit: no write left in flight
        self.pending: Future | None = None

    def write(self, frame: Frame, result: FrameResult) -> None:
        self.flush()
        if self.mcap is not None or self.jsonl is not None or self.video is not None:
            self.pending = self.thread.submit(self._write, frame, result)

    def flush(self) -> None:
        """Wait for the frame in flight; its error, if any, is raised here."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()

    def close(self) -> None:
        self.flush()
        if self.video is not None:
            self.video.finish()

    def _write(self, frame: Frame, result: FrameResult) -> None:
        if self.mcap is not None:
            self.mcap.write(frame, result)
        if self.jsonl is not None:
            self.jsonl.write(jsonl_line(result))
        if self.video is not None:
            image = draw_result(frame.image, result)
            if result.plan is not None and self.camera is not None:
                draw_path(image, self.camera, result.plan.waypoints)
            self.video.write(frame.timestamp, image)
