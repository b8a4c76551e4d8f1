"""The table a command prints at the end of a run: frame counts, then per-stage latencies."""

from __future__ import annotations

import numpy as np


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


def summary_table(counts: dict[str, float | int], timings: list[dict[str, float]]) -> str:
    """Counts (frames read, processed, ...) then a stage | median | p99 table, plain text."""
    stats = stage_stats(timings)
    width = max([len(name) for name in [*counts, *stats, "stage"]]) + 2
    lines = [f"{name:<{width}}{value:>10.1f}" if isinstance(value, float) else
             f"{name:<{width}}{value:>10d}" for name, value in counts.items()]
    if stats:
        lines.append(f"{'stage':<{width}}{'median ms':>10}{'p99 ms':>10}{'frames':>8}")
        lines += [f"{stage:<{width}}{s['median_ms']:>10.1f}{s['p99_ms']:>10.1f}{s['count']:>8d}"
                  for stage, s in stats.items()]
    return "\n".join(lines)
