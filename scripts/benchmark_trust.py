"""Trust on roads we have not seen: distance per road user, safe plans, the hood. Measures only.

    python scripts/benchmark_trust.py [--models multitask-lite] [--json OUT.json]

1. Distance on the shared KITTI object frames with labels (MANIFEST 2.4 with their calib files,
   5.4 with the shipped KITTI camera and its crop): cars, vans and trucks seen from behind
   (heading within 30 degrees), 5-40 m, occlusion <= 1, matched to a detection at IoU >= 0.5;
   truth is the label's z - length / 2. With the right camera and with the camera file made
   wrong on purpose (pitch +-3 degrees, height +-30 %): median relative error, and in-view
   vehicles within 30 m reported beyond 60 m.
2. Planning on every shared BDD100K, Udacity and KITTI frame with its shipped camera, each a
   still (a fresh planner): plans `ok` above 3 m/s with an in-path road user within 20 m by either
   estimate, waypoints on the drivable area; and on the Udacity video (one drive), the
   frame-to-frame change of the path's lateral offset at 10 m.
3. The hood: drivable pixels and road-user boxes left inside the camera's hood polygon after
   planning, on the BDD100K and Udacity frames.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ASSETS = Path(os.environ.get("PERCEPTION_ASSETS", REPO.parent / "shared" / "assets"))
os.environ.setdefault("PERCEPTION_MODELS_MIRROR", str(ASSETS / "models"))

from perception.driving.camera import (  # noqa: E402
    CameraModel,
    fit_to_frame,
    load_camera,
    read_kitti_calib,
)
from perception.driving.distance import estimate_distance  # noqa: E402
from perception.driving.hood import hood_box_fraction, hood_mask  # noqa: E402
from perception.driving.planning import Planner  # noqa: E402
from perception.frames import open_source, read_image  # noqa: E402
from perception.pipeline import Perceiver  # noqa: E402
from perception.results import FrameResult  # noqa: E402
from scripts.benchmark_planning import offset_at, on_drivable  # noqa: E402

DRIVES = ASSETS / "drives"
CAMERAS = REPO / "perception" / "cameras"
WRONG = {"right": {}, "pitch +3": {"pitch": 3.0}, "pitch -3": {"pitch": -3.0},
         "height +30%": {"height": 1.3}, "height -30%": {"height": 0.7}}


def wrong_camera(camera: CameraModel, pitch: float = 0.0, height: float = 1.0) -> CameraModel:
    m = camera.mount
    return replace(camera, mount=replace(m, pitch=m.pitch + pitch, z=m.z * height))


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def kitti_objects(label: Path, width: int, height: int) -> list[tuple[list[float], float]]:
    """(box clipped to the frame, truth distance) of the vehicles the figure counts."""
    objects = []
    for line in label.read_text().splitlines():
        f = line.split()
        if f[0] not in ("Car", "Van", "Truck") or int(f[2]) > 1:
            continue
        length, z, rotation_y = float(f[10]), float(f[13]), float(f[14])
        truth = z - length / 2
        from_behind = abs(math.remainder(rotation_y + math.pi / 2, math.pi)) < math.radians(30)
        if 5.0 <= truth <= 40.0 and from_behind:
            box = [float(v) for v in f[4:8]]
            box[2], box[3] = min(box[2], width - 1.0), min(box[3], height - 1.0)
            objects.append((box, truth))
    return objects


def kitti_frames() -> list[tuple[Path, Path, CameraModel]]:
    shipped = load_camera(CAMERAS / "kitti_1242x375.yaml")
    frames = []
    for image in sorted((DRIVES / "kitti_object" / "image_2").glob("*.png")):
        calib = DRIVES / "kitti_object" / "calib" / f"{image.stem}.txt"
        frames.append((image, DRIVES / "kitti_object" / "label_2" / f"{image.stem}.txt",
                       read_kitti_calib(calib)))
    cropped = DRIVES / "labeled" / "kitti_object_cropped"
    for image in sorted((cropped / "image_2").glob("*.png")):
        frames.append((image, cropped / "label_2" / f"{image.stem}.txt", shipped))
    return frames


def distance_figures(perceiver: Perceiver) -> dict[str, dict]:
    """Per camera variant: matched vehicles, median relative error, reported > 60 m."""
    errors: dict[str, list[float]] = {name: [] for name in WRONG}
    beyond = dict.fromkeys(WRONG, 0)
    matched = missed = 0
    for image_path, label, camera in kitti_frames():
        image = read_image(image_path)
        height, width = image.shape[:2]
        camera = fit_to_frame(camera, width, height)
        result = next(r for _, r in perceiver.stream(open_source(str(image_path))))
        vehicles = [d for d in result.detections if d.category in ("car", "truck", "bus")]
        for box, truth in kitti_objects(label, width, height):
            best = max(vehicles, key=lambda d: iou(d.box, box), default=None)
            if best is None or iou(best.box, box) < 0.5:
                missed += 1
                continue
            matched += 1
            for name, change in WRONG.items():
                est = estimate_distance(best, wrong_camera(camera, **change))
                reported = est.distance_m if est is not None else None
                if reported is None or (truth <= 30.0 and reported > 60.0):
                    beyond[name] += 1
                if reported is not None:
                    errors[name].append(abs(reported - truth) / truth)
    return {name: {"matched": matched, "missed": missed,
                   "median_rel_error": float(np.median(errors[name])) if errors[name] else None,
                   "within_30_reported_beyond_60": beyond[name]} for name in WRONG}


def still_sets() -> list[tuple[str, list[Path], CameraModel | None]]:
    """(set, images, camera); None: the frame's own KITTI calib."""
    bdd = load_camera(CAMERAS / "bdd100k_1280x720.yaml")
    udacity = load_camera(CAMERAS / "udacity_960x540.yaml")
    kitti = load_camera(CAMERAS / "kitti_1242x375.yaml")
    jpg = sorted((DRIVES / "bdd100k_frames").glob("*/*.jpg")) \
        + sorted((DRIVES / "unlabeled" / "bdd100k_more").glob("*/*.jpg")) \
        + sorted((DRIVES / "labeled" / "bdd100k_val_drivable" / "images").glob("*.jpg"))
    return [("bdd100k", jpg, bdd),
            ("udacity", sorted((DRIVES / "udacity_lanelines_p1").glob("*.jpg")), udacity),
            ("kitti", sorted((DRIVES / "kitti_object" / "image_2").glob("*.png")), None),
            ("kitti", sorted((DRIVES / "labeled" / "kitti_object_cropped" / "image_2")
                             .glob("*.png")), kitti),
            ("kitti", sorted((DRIVES / "unlabeled" / "kitti_raw_2011_09_26").glob("*.jpg")),
             kitti)]


def unsafe(result: FrameResult, max_speed: float = 3.0, within_m: float = 20.0) -> bool:
    """An `ok` plan above `max_speed` with an in-path road user within `within_m` by either
    of its distance estimates."""
    plan = result.plan
    if plan is None or plan.status != "ok" or plan.target_speed_mps <= max_speed:
        return False
    return any(d.in_path and d.distance_m is not None and d.distance_m <= within_m
               for d in result.detections)


def hood_left(result: FrameResult, camera: CameraModel) -> tuple[int, int]:
    """Drivable pixels and road-user boxes inside the camera's hood polygon."""
    hood = hood_mask(camera)
    if hood is None:
        return 0, 0
    drivable = result.mask_at_frame_size("drivable")
    pixels = int(((drivable > 0) & (hood > 0)).sum()) if drivable is not None else 0
    integral = hood.astype(np.int64).cumsum(0).cumsum(1)
    boxes = sum(1 for d in result.detections
                if d.in_path is not None and hood_box_fraction(d.box, integral) >= 0.5)
    return pixels, boxes


MISMATCHES = {"camera_mismatch": 0, "horizon_mismatch": 0, "box_above_horizon": 0,
              "distances_disagree": 0}


def count_mismatches(row: dict, reasons: list[str]) -> None:
    """Count a plan doubting its camera, and why: the horizon check (the camera file's pitch),
    a box whose bottom edge lies above the horizon (a false box, or a road that climbs), or a
    road user whose size and ground distances disagree."""
    doubts = [r for r in reasons if r.startswith("camera_mismatch")]
    row["camera_mismatch"] += bool(doubts)
    row["horizon_mismatch"] += any("the horizon says" in r for r in doubts)
    row["box_above_horizon"] += any("above the horizon by the ground" in r for r in doubts)
    row["distances_disagree"] += any(" m by the ground" in r for r in doubts)


def planning_figures(perceiver: Perceiver) -> dict[str, dict]:
    figures = {}
    for name, images, camera in still_sets():
        row = figures.setdefault(name, {"frames": 0, "ok": 0, "unsafe": 0, "inside": 0,
                                        "seen": 0, "hood_pixels": 0, "hood_boxes": 0,
                                        **MISMATCHES})
        for image in images:
            cam = camera or read_kitti_calib(
                DRIVES / "kitti_object" / "calib" / f"{image.stem}.txt")
            result = next(r for _, r in perceiver.stream(open_source(str(image))))
            planner = Planner.for_models(cam, perceiver.specs)
            plan = planner.step(result, now=result.timestamp)
            fitted = fit_to_frame(cam, result.width, result.height)
            inside, seen = on_drivable(result, fitted, plan.waypoints)
            pixels, boxes = hood_left(result, fitted)
            row["frames"] += 1
            row["ok"] += plan.status == "ok"
            row["unsafe"] += unsafe(result)
            row["inside"] += inside
            row["seen"] += seen
            row["hood_pixels"] += pixels
            row["hood_boxes"] += boxes
            count_mismatches(row, plan.reasons)
    video = DRIVES / "udacity_lanelines_p1" / "solidWhiteRight.mp4"
    camera = load_camera(CAMERAS / "udacity_960x540.yaml")
    planner = Planner.for_models(camera, perceiver.specs)
    offsets, row = [], {"frames": 0, "ok": 0, "unsafe": 0, "inside": 0, "seen": 0,
                        **MISMATCHES}
    for _, result in perceiver.stream(open_source(str(video))):
        plan = planner.step(result, now=result.timestamp)
        inside, seen = on_drivable(result, camera, plan.waypoints)
        row["frames"] += 1
        row["ok"] += plan.status == "ok"
        row["unsafe"] += unsafe(result)
        row["inside"] += inside
        row["seen"] += seen
        count_mismatches(row, plan.reasons)
        offsets.append(offset_at(plan.waypoints, 10.0))
    row["offset_change_median_m"] = float(np.nanmedian(np.abs(np.diff(offsets))))
    figures["udacity video"] = row
    for row in figures.values():
        row["on_drivable"] = row["inside"] / max(1, row["seen"])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="multitask-lite",
                        help="comma-separated models (default: multitask-lite)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    perceiver = Perceiver.from_names(args.models.split(","))
    try:
        distance = distance_figures(perceiver)
        planning = planning_figures(perceiver)
    finally:
        perceiver.close()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; models: {args.models}\n")
    print("| KITTI camera | matched | median rel. error | within 30 m reported > 60 m |")
    print("|---|---:|---:|---:|")
    for name, row in distance.items():
        print(f"| {name} | {row['matched']} (missed {row['missed']}) | "
              f"{row['median_rel_error']:.3f} | {row['within_30_reported_beyond_60']} |")
    print("\n| frames | n | ok | ok > 3 m/s, in-path user <= 20 m | on drivable | "
          "camera_mismatch (horizon / box above it / distances disagree) | "
          "hood: drivable px / boxes |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, row in planning.items():
        hood = (f"{row['hood_pixels']} / {row['hood_boxes']}" if "hood_pixels" in row
                else "-")
        print(f"| {name} | {row['frames']} | {row['ok']} | {row['unsafe']} | "
              f"{row['on_drivable']:.1%} | {row['camera_mismatch']} ({row['horizon_mismatch']} / "
              f"{row['box_above_horizon']} / {row['distances_disagree']}) | {hood} |")
    print(f"\nvideo: frame-to-frame change of the lateral offset at 10 m, median "
          f"{planning['udacity video']['offset_change_median_m']:.3f} m")
    if args.json:
        args.json.write_text(json.dumps({"models": args.models, "distance": distance,
                                         "planning": planning}, indent=1))


if __name__ == "__main__":
    main()
