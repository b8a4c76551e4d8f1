"""What commands leave behind: atomically written output files, JSON Lines results, and the
end-of-run summary table of frame counts and per-stage latencies.

Shared by `perception run` and `perception replay` so both write the same JSONL (one
`FrameResult.model_dump(mode="json")` per line) and print the same table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


def jsonl_line(result: FrameResult) -> str:
    """One result as a JSON Lines line (newline included)."""
    return json.dumps(result.model_dump(mode="json"), separators=(",", ":")) + "\n"


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
