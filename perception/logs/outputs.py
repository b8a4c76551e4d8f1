"""The files a command writes for a stream of perceived frames: results as JSON Lines, masks,
annotated images or video, bird's-eye pictures, and an MCAP of Foxglove schemas
(foxglove_writer.py) or, with the `ros2` profile, of ROS 2 messages (ros2_writer.py).

`Outputs` is the one writer of `perception run` and `perception replay`. Each file is written
under a temporary name and moved into place on close (files.py), so a failed run never leaves a
half-written file. Writing happens on one background thread, overlapping the next frame's
inference; `write` first waits for the previous frame, so outputs stay in order and at most one
frame waits (`wait()` measures that wait). A Ctrl-C (or SIGTERM) while waiting leaves that frame
in flight, and `close` still waits for it: every output of an interrupted run holds the same
frames. A folder that cannot be written (full, read-only) is an `OutputError`.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from perception.driving.bev import BirdsEye
from perception.driving.camera import CameraModel
from perception.frames import Frame
from perception.logs.files import (
    OutputError,
    VideoOutput,
    atomic_output,
    jsonl_line,
    make_folder,
    writable,
    write_image,
)
from perception.logs.foxglove_writer import FoxgloveWriter, foxglove_mcap
from perception.logs.ros2_writer import Ros2Writer, ros2_mcap
from perception.overlay import draw_path, draw_result, render_bev
from perception.results import FrameResult

MCAP_PROFILES = ("foxglove", "ros2")  # Foxglove protobuf schemas, or ROS 2 messages (CDR)


@dataclass(frozen=True)
class OutputPaths:
    """Where to write; None: not asked for."""

    jsonl: Path | None = None  # one FrameResult JSON per line
    video: Path | None = None  # the frames with results (and the path) drawn, mp4v
    images: Path | None = None  # a folder: <name>.jpg, the frames with results drawn
    masks: Path | None = None  # a folder: <name>_drivable.png, <name>_lanes.png (0/255)
    bev: Path | None = None  # a folder: <name>_bev.png, the bird's-eye view of the plan
    mcap: Path | None = None  # MCAP (foxglove_writer.py, or ros2_writer.py)
    mcap_profile: str = "foxglove"  # one of MCAP_PROFILES

    def files(self) -> list[Path]:
        """The single files asked for (folders aside)."""
        return [path for path in (self.mcap, self.jsonl, self.video) if path is not None]


class Outputs:
    """Opens every output asked for on `stack` (closed with it); `camera` draws the path."""

    def __init__(self, stack: ExitStack, paths: OutputPaths,
                 camera: CameraModel | None = None) -> None:
        self.paths, self.camera = paths, camera
        self.mcap: FoxgloveWriter | Ros2Writer | None = None
        self.jsonl: TextIO | None = None
        self.video: VideoOutput | None = None
        for folder in (paths.images, paths.masks, paths.bev):
            if folder is not None:
                make_folder(folder)
        if paths.mcap is not None:
            mcap = ros2_mcap if paths.mcap_profile == "ros2" else foxglove_mcap
            self.mcap = stack.enter_context(mcap(writable(paths.mcap), camera=camera))
        if paths.jsonl is not None:
            temp = stack.enter_context(atomic_output(writable(paths.jsonl)))
            self.jsonl = stack.enter_context(temp.open("w", encoding="utf-8"))
        if paths.video is not None:
            self.video = VideoOutput(stack.enter_context(atomic_output(writable(paths.video))))
            stack.callback(self.video.release)
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outputs")
        stack.callback(self.thread.shutdown)  # runs first on exit: no write left in flight
        self.pending: Future | None = None

    @property
    def writes_anything(self) -> bool:
        p = self.paths
        return any(v is not None for v in (p.jsonl, p.video, p.images, p.masks, p.bev, p.mcap))

    def wait(self) -> float:
        """Wait for the frame in flight (its error, if any, is raised here); milliseconds
        waited, a command's `write` stage."""
        started = time.perf_counter()
        if self.pending is not None:
            wait_for([self.pending])  # interrupted here, the frame stays pending for close()
            pending, self.pending = self.pending, None
            try:
                pending.result()
            except OSError as error:
                raise OutputError(f"cannot write the outputs: {error}") from None
        return (time.perf_counter() - started) * 1e3

    def write(self, frame: Frame, result: FrameResult, bev: BirdsEye | None = None) -> None:
        """Queue one frame's outputs, once the previous frame's are written; `bev` is the
        grid its plan was made on, if any."""
        self.wait()
        if self.writes_anything:
            self.pending = self.thread.submit(self._write, frame, result, bev)

    def close(self) -> None:
        """Write everything still in flight and finish the video; the stack then renames
        the files into place."""
        self.wait()
        if self.video is not None:
            self.video.finish()

    def _write(self, frame: Frame, result: FrameResult, bev: BirdsEye | None) -> None:
        paths = self.paths
        if self.mcap is not None:
            self.mcap.write(frame, result)
        if paths.bev is not None and bev is not None:
            picture = render_bev(bev, result.plan, lane_boundaries=result.lane_boundaries)
            write_image(paths.bev / f"{frame.name}_bev.png", picture)
        if paths.masks is not None:
            for which in ("drivable", "lanes"):
                mask = result.mask_at_frame_size(which)
                if mask is not None:
                    write_image(paths.masks / f"{frame.name}_{which}.png", mask * 255)
        if paths.images is not None or self.video is not None:
            annotated = draw_result(frame.image, result)
            if result.plan is not None and self.camera is not None:
                draw_path(annotated, self.camera, result.plan.waypoints)
            if self.video is not None:
                self.video.write(frame.timestamp, annotated)
            if paths.images is not None:
                write_image(paths.images / f"{frame.name}.jpg", annotated)
        if self.jsonl is not None:
            self.jsonl.write(jsonl_line(result))
