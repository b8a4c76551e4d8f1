"""What commands leave behind: atomically written output files, annotated videos, JSON Lines
results, and the end-of-run summary table of frame counts and per-stage latencies.

Shared by `perception run`, `replay` and `record` (and the simulator's recorder) so all write
files the same way, the same JSONL (one `FrameResult.model_dump(mode="json")` per line) and
print the same table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from perception.errors import PerceptionError
from perception.results import FrameResult


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it onto `path` only if the block succeeds.

    The temporary name keeps the suffix (OpenCV picks a video container by it) and lives in the
    same folder, so `os.replace` is atomic: an interrupted run leaves nothing under the final
    name, never a half-written file.
    """
    path = Path(path)
    temp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        yield temp
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def writable(path: Path) -> Path:
    """`path` if a file can be written there (its folder exists, it is not a folder)."""
    if path.is_dir():
        raise PerceptionError(f"{path}: is a folder, expected a file name")
    if not path.parent.is_dir():
        raise PerceptionError(f"{path.parent}: no such folder (for {path.name})")
    return path


class VideoOutput:
    """An mp4v video (the OpenCV wheels carry no H.264 encoder) of rendered frames. It opens at
    the second frame, whose distance from the first gives the frame rate; every frame is resized
    to the first frame's size."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer: cv2.VideoWriter | None = None
        self.size = (0, 0)
        self.first: tuple[float, np.ndarray] | None = None  # (timestamp, image) until opened

    def write(self, timestamp: float, image: np.ndarray) -> None:
        if self.writer is None and self.first is None:
            self.first = (timestamp, image)
            return
        if self.writer is None:
            self._open(timestamp - self.first[0])
        self._put(image)

    def finish(self) -> None:
        """Write a lone first frame, then close the file."""
        if self.writer is None and self.first is not None:
            self._open(0.0)
        self.release()

    def release(self) -> None:
        if self.writer is not None:
            self.writer.release()

    def _open(self, gap_s: float) -> None:
        fps = min(120.0, max(1.0, 1.0 / gap_s)) if gap_s > 0 else 10.0
        first_image = self.first[1]
        self.size = (first_image.shape[1], first_image.shape[0])
        self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*"mp4v"), fps,
                                      self.size)
        if not self.writer.isOpened():
            raise PerceptionError(f"{self.path}: OpenCV cannot write an mp4v video here")
        self._put(first_image)
        self.first = None

    def _put(self, image: np.ndarray) -> None:
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size)
        self.writer.write(image)


def result_json(result: FrameResult) -> str:
    """One result as compact JSON, as `perception run --json` writes it."""
    return json.dumps(result.model_dump(mode="json"), separators=(",", ":"))


def jsonl_line(result: FrameResult) -> str:
    """One result as a JSON Lines line (newline included)."""
    return result_json(result) + "\n"


def stage_stats(timings: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Median and 99th percentile in ms per stage, over the frames that report the stage."""
    stages: dict[str, list[float]] = {}
    for frame_timings in timings:
        for stage, ms in frame_timings.items():
            stages.setdefault(stage, []).append(ms)
    return {stage: {"median_ms": float(np.median(values)),
                    "p99_ms": float(np.percentile(values, 99)),
                    "count": len(values)}
            for stage, values in stages.items()}


def summary_table(counts: dict[str, float | int], stats: dict[str, dict[str, float]]) -> str:
    """Counts (frames read, processed, ...) then a stage | median | p99 table, plain text."""
    width = max([len(name) for name in [*counts, *stats, "stage"]]) + 2
    lines = [f"{name:<{width}}{value:>10.1f}" if isinstance(value, float) else
             f"{name:<{width}}{value:>10d}" for name, value in counts.items()]
    if stats:
        lines.append(f"{'stage':<{width}}{'median ms':>10}{'p99 ms':>10}{'frames':>8}")
        lines += [f"{stage:<{width}}{s['median_ms']:>10.1f}{s['p99_ms']:>10.1f}{s['count']:>8d}"
                  for stage, s in stats.items()]
    return "\n".join(lines)
