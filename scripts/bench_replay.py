"""Replay throughput against `perception run` on the same video, and paced deadline misses.

    nice -n 10 python scripts/bench_replay.py [--runs 3] [--video PATH] [--models M]

Each command runs as its own process, alternating, `--runs` times; the figure is the median
wall time per command (model loading included in both). Prints a Markdown table for
docs/benchmarks.md. Measures only; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("PERCEPTION_ASSETS", REPO.parent / "shared" / "assets"))
VIDEO = ASSETS / "drives" / "udacity_lanelines_p1" / "solidWhiteRight.mp4"


def perception(*args: str) -> tuple[float, str]:
    """(wall seconds, stderr) of `python -m perception ARGS`; fails loudly on a nonzero exit."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.setdefault("PERCEPTION_MODELS_MIRROR", str(ASSETS / "models"))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "perception", *args], env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"perception {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return wall, done.stderr


def counts(stderr: str) -> dict[str, float]:
    """The count lines of replay's summary table."""
    found = {}
    for name in ("frames read", "processed", "dropped", "deadline misses", "frames/s"):
        match = re.search(rf"^{name}\s+([\d.]+)$", stderr, re.MULTILINE)
        if match:
            found[name] = float(match.group(1))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--video", type=Path, default=VIDEO)
    parser.add_argument("--models", default="yolox-nano,twinlitenet")
    args = parser.parse_args()
    capture = cv2.VideoCapture(str(args.video))
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    work = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    log = work / "drive.mcap"
    perception("record", "--video", str(args.video), "--out", str(log))

    commands = {
        "perception run VIDEO --json": ["run", str(args.video), "--models", args.models,
                                        "--json", str(work / "run.jsonl")],
        "perception replay VIDEO --max --json": ["replay", str(args.video), "--max",
                                                 "--models", args.models,
                                                 "--json", str(work / "replay.jsonl")],
        "perception replay LOG.mcap --max --json": ["replay", str(log), "--max",
                                                    "--models", args.models,
                                                    "--json", str(work / "log.jsonl")],
        "perception replay LOG.mcap --max --json --out": [
            "replay", str(log), "--max", "--models", args.models,
            "--json", str(work / "log.jsonl"), "--out", str(work / "out.mcap")],
    }
    walls: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, command in commands.items():
            walls[name].append(perception(*command)[0])
    paced = [counts(perception("replay", str(log), "--rate", "1", "--models", args.models)[1])
             for _ in range(args.runs)]

    baseline = statistics.median(walls["perception run VIDEO --json"])
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}, "
          f"load average {os.getloadavg()[0]:.2f}; {args.video.name} ({frames} frames), "
          f"{args.runs} runs each, models {args.models}")
    print("\n| command | median wall s | frames/s | vs run |\n|---|---:|---:|---:|")
    for name, values in walls.items():
        wall = statistics.median(values)
        print(f"| `{name}` | {wall:.1f} | {frames / wall:.2f} | {wall / baseline:.3f} |")
    print("\n| `replay LOG.mcap --rate 1` run | read | processed | dropped | deadline misses |"
          "\n|---|---:|---:|---:|---:|")
    for i, c in enumerate(paced, 1):
        print(f"| {i} | {c.get('frames read', 0):.0f} | {c.get('processed', 0):.0f} | "
              f"{c.get('dropped', 0):.0f} | {c.get('deadline misses', 0):.0f} |")


if __name__ == "__main__":
    main()
