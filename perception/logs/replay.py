"""Replaying one drive log through perception (and planning), as fast as possible or paced.

`replay_log(log, models, options)` opens the log, reads its first frame before any model loads
(so a wrong path, topic or time range fails at once), perceives every frame (or, paced, the
newest one at a time: pacer.py), plans each with the log's clock when a camera is given, and
writes the outputs asked for (outputs.py). A log that breaks part-way ends the replay with the
frames before the break processed and written; `ReplayReport.error` says where.

With `options.foxglove` every processed frame is also published live (foxglove_live.py), and
where the log tells its length (sources.log_span) the Foxglove app's play, pause, speed and
seek drive the replay (playback.py); a seek starts the planner over.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from perception.driving.camera import CameraModel
from perception.driving.planning import Planner
from perception.frames import DEFAULT_MAX_PIXELS, CorruptRecordError, Frame, SourceError
from perception.logs.base import EXIT_PARTIAL
from perception.logs.foxglove_live import FoxgloveAddress, foxglove_live
from perception.logs.mount import log_time_ns
from perception.logs.outputs import OutputPaths, Outputs
from perception.logs.pacer import Pacer
from perception.logs.playback import Playback, Timeline
from perception.logs.sources import count_log_frames, log_span, open_log
from perception.pipeline import Perceiver
from perception.results import FrameResult

EXIT_INTERRUPTED = 130


@dataclass
class ReplayOptions:
    topic: str | None = None
    rate: float | None = None  # None: every frame, as fast as possible
    start: float | None = None
    end: float | None = None
    loop: bool = False
    outputs: OutputPaths = OutputPaths()
    camera: CameraModel | None = None  # plan every frame with this camera
    progress: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images are skipped, never decoded
    foxglove: FoxgloveAddress | None = None  # publish live there too


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


def replay_log(log: Path, models: list[str], options: ReplayOptions,
               workers: int | None = None) -> ReplayReport:
    """Perceive one log with `models` (on `workers` threads, default one per core) and write
    the outputs asked for. Raises SourceError if the log is unusable (before the models load
    and anything is written); a break part-way ends up in `report.error`."""
    playback = log_playback(log, options) if options.foxglove is not None else None
    source = UntilBroken(playback.frames() if playback is not None else log_frames(log, options))
    report = ReplayReport(log=str(log))
    with ExitStack() as stack:
        live = None
        if options.foxglove is not None:  # a port it cannot listen on fails before the models
            live = stack.enter_context(foxglove_live(options.foxglove.host,
                                                     options.foxglove.port, options.camera,
                                                     playback))
        perceiver = stack.enter_context(Perceiver.from_names(models, workers=workers))
        planner = Planner.for_models(options.camera, perceiver.specs) \
            if options.camera is not None else None
        outputs = Outputs(stack, options.outputs, options.camera)
        started = time.perf_counter()
        pacer = None
        try:  # from here on, a Ctrl-C or SIGTERM keeps the outputs
            whole_log = options.start is None and options.end is None and not options.loop
            total = count_log_frames(log, options.topic) \
                if whole_log and options.progress else None
            # disable=None: a bar only on a terminal
            bar = stack.enter_context(tqdm(desc=log.name, unit="frame", leave=False, total=total,
                                           disable=None if options.progress else True))
            if options.rate is not None:  # a playback paces itself, at the app's speed
                pacer = Pacer(source, options.rate if playback is None else None)
            for frame, result, timings in perceived(perceiver, source, pacer, report):
                if planner is not None:
                    if frame.meta.get("after_seek"):
                        planner.reset()
                    rate = playback.speed if playback is not None else options.rate
                    planner.step(result, now=plan_time(result, timings, rate),
                                 image=frame.image)
                    timings["plan"] = result.timings_ms["plan"]
                timings["write"] = outputs.wait()
                outputs.write(frame, result, planner.bev if planner is not None else None)
                if live is not None:
                    live.publish(frame, result)
                report.timings.append(timings)
                report.processed += 1
                bar.update(1)
        except KeyboardInterrupt:
            report.interrupted = True
        finally:
            if playback is not None:  # ends a wait for the app's play at once
                playback.close()
            if pacer is not None:
                pacer.close()
        report.error = str(source.error) if source.error is not None else None
        report.wall_s = time.perf_counter() - started
        report.read = pacer.arrived if pacer is not None else report.processed
        report.dropped = pacer.dropped if pacer is not None else 0
        outputs.close()
    return report


def log_playback(log: Path, options: ReplayOptions) -> Playback | None:
    """The log as a playback the Foxglove app drives, on a timeline from the first frame to the
    log's end (or --end); None when the log does not tell its length cheaply. Reads the first
    frame now."""
    span = log_span(log)
    end = min(v for v in (span, options.end) if v is not None) \
        if span is not None or options.end is not None else None
    if end is None:
        return None
    head, frames = opened_log(log, options)
    start_ns = log_time_ns(head.timestamp)
    origin_ns = start_ns - log_time_ns(options.start or 0.0)
    timeline = Timeline(origin_ns, start_ns, max(start_ns, origin_ns + log_time_ns(end)))

    def reopen(seconds: float) -> Iterator[Frame]:
        if options.end is not None and seconds >= options.end:
            return iter(())
        return open_log(log, options.topic, seconds, options.end, options.max_pixels)

    return Playback(frames, reopen, timeline, options.rate, options.loop)


def plan_time(result: FrameResult, timings: dict[str, float], rate: float | None) -> float:
    """When, on the log's clock, the plan is made: at the frame's own time when every frame is
    perceived (never stale); paced, when its result was ready, so perception that falls too
    far behind makes the planner stop safely, as it would live."""
    if rate is None:
        return result.timestamp
    return result.timestamp + timings["latency"] / 1e3 * rate


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


def opened_log(log: Path, options: ReplayOptions) -> tuple[Frame, Iterator[Frame]]:
    """(first frame, all the frames in range, that one included). The first frame is read now:
    a log without one in range is unusable."""
    frames = open_log(log, options.topic, options.start, options.end, options.max_pixels)
    try:
        head = next(frames)
    except StopIteration:
        raise SourceError(f"{log}: no frames in the selected topic and time range") from None
    except CorruptRecordError as error:
        raise SourceError(f"{error} (no frame before it)") from None
    return head, itertools.chain([head], frames)


def log_frames(log: Path, options: ReplayOptions) -> Iterator[Frame]:
    """The log's frames, over and over with --loop (times shifted to keep increasing). The
    first frame is read now."""
    _, first_pass = opened_log(log, options)

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
            frames = open_log(log, options.topic, options.start, options.end, options.max_pixels)

    return passes()
