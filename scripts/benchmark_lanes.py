"""Lane boundaries against the TuSimple lane labels (MANIFEST 5.5): found and how close.

    python scripts/benchmark_lanes.py [--models multitask-lite] [--models yolox-nano,twinlitenet]

For each model set (default: both of the above, one table row each), perception runs on the
16 labelled TuSimple frames (10 of `sample_512x288`, 6 of `lanenet_examples` at 1280x720), and
`perception.lane_lines.fit_lane_boundaries` fits the boundaries from the lane mask. The
labelled ego-left and ego-right lanes are chosen by the rule the fit uses: each labelled lane's
near third extended straight to the bottom row, the nearest left and right of the centre column.

Figures per row: the share of frames where our `ego_left` and `ego_right` are both found, each
side's share, the mean horizontal distance of a found ego boundary to its labelled lane (at the
label's rows where both exist, in pixels at 1280x720; per boundary, then averaged), the share of
found ego boundaries within 20 px (TuSimple's threshold: the right line, not a neighbour), and
the fit's time per frame (the fastest of 5 runs, a busy machine's noise left out; the median
over frames). The default model was trained with the 10 `sample_512x288` frames as lane
supervision (perception/zoo/embedded/MODEL_CARD.md); the 6 `lanenet_examples` are held out for
it, so the table also gives the distance on those 6 alone. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ASSETS = Path(os.environ.get("PERCEPTION_ASSETS", REPO.parent / "shared" / "assets"))
os.environ.setdefault("PERCEPTION_MODELS_MIRROR", str(ASSETS / "models"))

from perception.frames import Frame, read_image  # noqa: E402
from perception.lane_lines import fit_lane_boundaries  # noqa: E402
from perception.pipeline import Perceiver  # noqa: E402
from perception.results import LaneBoundary  # noqa: E402
from perception.zoo.registry import model_names  # noqa: E402

TUSIMPLE = ASSETS / "drives" / "labeled" / "tusimple"
SETS = ("sample_512x288", "lanenet_examples")
REFERENCE_WIDTH = 1280  # distances are reported at 1280x720, TuSimple's own size
MATCH_PX = 20.0  # TuSimple's accuracy threshold at 1280 px
FIT_RUNS = 5  # the fit is timed this many times per frame, the fastest kept (a busy machine)


def labelled_frames() -> list[tuple[str, Path, dict]]:
    """(set, image path, label) for every labelled frame."""
    frames = []
    for name in SETS:
        for line in (TUSIMPLE / name / "label_data.json").read_text().splitlines():
            if line.strip():
                label = json.loads(line)
                frames.append((name, TUSIMPLE / name / label["raw_file"], label))
    return frames


def label_lanes(label: dict) -> list[np.ndarray]:
    """Each labelled lane as (N, 2) [u, v] points, near (bottom) first."""
    rows = np.array(label["h_samples"], np.float64)
    lanes = []
    for columns in label["lanes"]:
        columns = np.array(columns, np.float64)
        present = columns >= 0
        if present.sum() >= 2:
            lanes.append(np.column_stack([columns[present], rows[present]])[::-1])
    return lanes


def bottom_column(points: np.ndarray, height: int) -> float:
    """Where the near third of a lane (points near first), extended straight, meets the bottom."""
    near = points[: max(2, len(points) // 3)]
    slope, intercept = np.polyfit(near[:, 1], near[:, 0], 1)
    return float(slope * (height - 1) + intercept)


def ego_labels(lanes: list[np.ndarray], width: int, height: int) -> dict[str, np.ndarray]:
    centre = (width - 1) / 2
    bottoms = [bottom_column(lane, height) for lane in lanes]
    left = [(b, lane) for b, lane in zip(bottoms, lanes, strict=True) if b < centre]
    right = [(b, lane) for b, lane in zip(bottoms, lanes, strict=True) if b > centre]
    ego = {}
    if left:
        ego["ego_left"] = max(left, key=lambda item: item[0])[1]
    if right:
        ego["ego_right"] = min(right, key=lambda item: item[0])[1]
    return ego


def distance(boundary: LaneBoundary, lane: np.ndarray) -> float | None:
    """Mean |u_ours - u_label| at the label's rows that our polyline covers (frame pixels)."""
    ours = np.array(boundary.image_points)[::-1]  # far first: v ascending for np.interp
    rows = lane[:, 1]
    covered = (rows >= ours[0, 1]) & (rows <= ours[-1, 1])
    if not covered.any():
        return None
    return float(np.abs(np.interp(rows[covered], ours[:, 1], ours[:, 0])
                        - lane[covered, 0]).mean())


def measure(names: list[str]) -> dict:
    found = {"ego_left": 0, "ego_right": 0, "both": 0}
    distances: dict[str, list[float]] = {name: [] for name in SETS}
    fit_ms = []
    frames = labelled_frames()
    with Perceiver.from_names(names) as perceiver:
        for index, (name, path, label) in enumerate(frames):
            image = read_image(path)
            result = perceiver.perceive([Frame(image, 0.0, index, str(path))])[0]
            runs = []
            for _ in range(FIT_RUNS):
                start = time.perf_counter()
                boundaries = fit_lane_boundaries(result.lanes, result.width, result.height)
                runs.append((time.perf_counter() - start) * 1e3)
            fit_ms.append(min(runs))
            labels = ego_labels(label_lanes(label), result.width, result.height)
            ours = {b.position: b for b in boundaries if b.position != "other"}
            found["both"] += {"ego_left", "ego_right"} <= set(ours)
            for side in ("ego_left", "ego_right"):
                found[side] += side in ours
                if side in ours and side in labels:
                    gap = distance(ours[side], labels[side])
                    if gap is not None:
                        distances[name].append(gap * REFERENCE_WIDTH / result.width)
    every = [d for name in SETS for d in distances[name]]
    return {"frames": len(frames), "found": found, "distances": distances, "all": every,
            "fit_ms": float(np.median(fit_ms)), "mask": result.lanes.shape}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", action="append",
                        help="comma-separated model names; repeat for more rows "
                             "(default: multitask-lite, then yolox-nano,twinlitenet)")
    args = parser.parse_args()
    model_sets = args.models or ["multitask-lite", "yolox-nano,twinlitenet"]
    print(f"TuSimple lane labels, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs\n")
    print("| models | mask | frames | both ego found | ego_left | ego_right | mean distance "
          "(px @1280) | within 20 px | held-out 6: mean distance | fit ms (median) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for text in model_sets:
        m = measure(model_names(text))
        n, found, every = m["frames"], m["found"], m["all"]
        held_out = m["distances"]["lanenet_examples"]
        print(f"| {text} | {m['mask'][1]}x{m['mask'][0]} | {n} "
              f"| {found['both'] / n:.0%} | {found['ego_left'] / n:.0%} "
              f"| {found['ego_right'] / n:.0%} | {np.mean(every):.1f} "
              f"| {np.mean(np.array(every) <= MATCH_PX):.0%} "
              f"| {np.mean(held_out):.1f} | {m['fit_ms']:.2f} |")


if __name__ == "__main__":
    main()
