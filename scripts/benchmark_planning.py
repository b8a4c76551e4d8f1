"""Planning on real frames: path quality, stability and time, against simple baselines.

    python scripts/benchmark_planning.py [--frames N]

Perception (yolox-nano + twinlitenet, `Perceiver.stream`) runs once on solidWhiteRight.mp4,
the 13 BDD100K and the 3 KITTI frames; then, on the same results, in the same run:
- ours: the `Planner` with the stated cameras (perception/cameras/, KITTI calib files);
- baseline "straight": a straight path ahead, from the first seen road to 40 m, stopping at
  nothing (what a lane keeper without perception-based planning would drive);
- baseline "no memory": our planner with the consistency-with-the-previous-plan weight at 0.
Figures: share of waypoints on the drivable area (projected back into the image), waypoints
inside a road user's box or footprint, frame-to-frame change of the lateral offset at 10 m on
the video, planning time per frame against perception time per frame. Measures; asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
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

from perception.driving.bev import birdseye, is_ego_hood  # noqa: E402
from perception.driving.camera import CameraModel, load_camera, read_kitti_calib  # noqa: E402
from perception.driving.distance import SIZE_PRIORS  # noqa: E402
from perception.driving.planning import Planner, PlannerConfig  # noqa: E402
from perception.frames import open_source  # noqa: E402
from perception.pipeline import Perceiver  # noqa: E402
from perception.results import FrameResult  # noqa: E402

DRIVES = ASSETS / "drives"
CAMERAS = REPO / "perception" / "cameras"


def on_drivable(result: FrameResult, camera: CameraModel, waypoints) -> tuple[int, int]:
    """(on drivable, seen): waypoints that project into the image, and those of them that land
    on the segmentation's drivable pixels."""
    if not waypoints:
        return 0, 0
    pixels, in_front = camera.ground_to_pixel(np.array(waypoints))
    u, v = pixels[:, 0], pixels[:, 1]
    seen = in_front & (u >= 0) & (u < camera.width) & (v >= 0) & (v < camera.height)
    drivable = result.mask_at_frame_size("drivable")
    return int((drivable[v[seen].astype(int), u[seen].astype(int)] > 0).sum()), int(seen.sum())


def through_road_users(result: FrameResult, camera: CameraModel, waypoints) -> int:
    """Waypoints inside a road user's box in the image (our own hood excepted) or inside its
    footprint on the road (bev.py's obstacles, placed from the boxes' bottom edges)."""
    if not waypoints:
        return 0
    points = np.array(waypoints)
    pixels, _ = camera.ground_to_pixel(points)
    hits = 0
    for det in result.detections:
        if det.category in SIZE_PRIORS and not is_ego_hood(det, camera):
            x1, y1, x2, y2 = det.box
            hits += int(((pixels[:, 0] >= x1) & (pixels[:, 0] <= x2) & (pixels[:, 1] >= y1)
                         & (pixels[:, 1] <= y2)).sum())
    for ob in birdseye(result, camera, near_x=PlannerConfig().front_m).obstacles:
        hits += int(((points[:, 0] >= ob.x) & (points[:, 0] <= ob.x + ob.length)
                     & (np.abs(points[:, 1] - ob.y) <= ob.width / 2)).sum())
    return hits


def offset_at(waypoints, x: float = 10.0) -> float:
    """The path's lateral offset at x metres ahead; nan where the path does not reach x."""
    points = np.array(waypoints).reshape(-1, 2)
    if len(points) < 2 or not points[0, 0] <= x <= points[-1, 0]:
        return float("nan")
    return float(np.interp(x, points[:, 0], points[:, 1]))


def straight_path(camera: CameraModel) -> list[tuple[float, float]]:
    """Straight ahead, one point per metre, from the first road row the camera sees to 40 m."""
    near, _ = camera.pixel_to_ground(np.array([[camera.K[0, 2], camera.height - 1.0]]))
    return [(float(x), 0.0) for x in np.arange(np.ceil(near[0, 0]), 40.5, 1.0)]


def run_sequence(results, cameras, config: PlannerConfig | None, carry_state: bool) -> dict:
    """Plan every result (None config: the straight baseline); sum the figures."""
    totals = {"inside": 0, "seen": 0, "through": 0, "ok": 0, "frames": 0}
    offsets, times, planner = [], [], None
    for result, camera in zip(results, cameras, strict=True):
        if config is None:
            waypoints, status = straight_path(camera), "ok"
        else:
            if planner is None or not carry_state or planner.camera is not camera:
                planner = Planner(camera, config)
            t0 = time.perf_counter()
            plan = planner.step(result, now=result.timestamp)
            times.append((time.perf_counter() - t0) * 1e3)
            waypoints, status = plan.waypoints, plan.status
        inside, seen = on_drivable(result, camera, waypoints)
        totals["inside"] += inside
        totals["seen"] += seen
        totals["through"] += through_road_users(result, camera, waypoints)
        totals["ok"] += status == "ok"
        totals["frames"] += 1
        offsets.append(offset_at(waypoints))
    changes = np.abs(np.diff(offsets))
    totals["on_drivable"] = totals["inside"] / max(1, totals["seen"])
    totals["offset_change_median"] = float(np.nanmedian(changes)) if len(changes) else 0.0
    totals["offset_change_p95"] = float(np.nanpercentile(changes, 95)) if len(changes) else 0.0
    totals["plan_ms"] = times
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=0, help="video frames to use (0: all)")
    args = parser.parse_args()
    perceiver = Perceiver.from_names(["yolox-nano", "twinlitenet"])
    video = DRIVES / "udacity_lanelines_p1" / "solidWhiteRight.mp4"
    video_results = [r for _, r in perceiver.stream(open_source(str(video)))]
    if args.frames:
        video_results = video_results[:args.frames]
    still_results, still_cameras = [], []
    bdd = load_camera(CAMERAS / "bdd100k_1280x720.yaml")
    for path in sorted((DRIVES / "bdd100k_frames").glob("*/*.jpg")):
        still_results += [r for _, r in perceiver.stream(open_source(str(path)))]
        still_cameras.append(bdd)
    for path in sorted((DRIVES / "kitti_object" / "image_2").glob("*.png")):
        result = next(r for _, r in perceiver.stream(open_source(str(path))))
        still_results.append(result)
        calib = DRIVES / "kitti_object" / "calib" / f"{path.stem}.txt"
        still_cameras.append(read_kitti_calib(calib, result.width, result.height))
    perceiver.close()
    perceive_ms = np.median([r.timings_ms["total"] for r in video_results])
    udacity = load_camera(CAMERAS / "udacity_960x540.yaml")
    video_cameras = [udacity] * len(video_results)
    ours = PlannerConfig()
    no_memory = dataclasses.replace(ours, w_consistency=0.0)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    print(f"video: {len(video_results)} frames; stills: {len(still_results)} frames; "
          f"perception median {perceive_ms:.1f} ms/frame")
    header = (f"{'set':<8}{'planner':<12}{'ok':>8}{'on drivable':>13}{'through':>9}"
              f"{'dy10 median':>13}{'dy10 p95':>10}{'plan ms med':>13}{'p99':>8}")
    print(header)
    ours_video_ms = []
    for name, results, cameras, carry in (("video", video_results, video_cameras, True),
                                          ("stills", still_results, still_cameras, False)):
        for label, config in (("ours", ours), ("straight", None), ("no memory", no_memory)):
            if name == "stills" and label == "no memory":
                continue  # single frames: no previous plan either way
            t = run_sequence(results, cameras, config, carry)
            ms = t["plan_ms"] or [float("nan")]
            if (name, label) == ("video", "ours"):
                ours_video_ms = ms
            stability = (f"{t['offset_change_median']:>13.3f}{t['offset_change_p95']:>10.3f}"
                         if name == "video" else f"{'-':>13}{'-':>10}")  # stills: unrelated
            print(f"{name:<8}{label:<12}{t['ok']:>4}/{t['frames']:<3}"
                  f"{t['on_drivable']:>12.1%} {t['through']:>8d}{stability}"
                  f"{np.median(ms):>13.1f}{np.percentile(ms, 99):>8.1f}")
    print(f"planning / perception time per video frame (medians): "
          f"{np.median(ours_video_ms) / perceive_ms:.3f}")


if __name__ == "__main__":
    main()
