"""Planning on real frames with real perception (YOLOX-Nano + TwinLiteNet on ONNX Runtime).

Cameras: perception/cameras/udacity_960x540.yaml for solidWhiteRight.mp4,
bdd100k_1280x720.yaml for the BDD100K frames (both stated assumptions, documented in the files)
and each KITTI frame's own calib file. Checks, as the issue asks:
- >= 98% of waypoints lie inside the drivable area: each waypoint is projected back into the
  camera image and looked up in the segmentation's drivable mask (frames with a plan).
- no path through a detected road user: no waypoint projects inside a vehicle or person box
  (our own hood excepted) and none lies in an obstacle's footprint on the ground.
- frame to frame, the path's lateral offset at 10 m changes by <= 0.2 m (median) on the video.
The measures are scripts/benchmark_planning.py's, so the test and docs/benchmarks.md agree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from perception.cli import main as cli_main
from perception.driving.camera import load_camera, read_kitti_calib
from perception.driving.planning import PlannerState, plan_frame
from perception.frames import open_source
from perception.pipeline import Perceiver
from perception.results import FrameResult, Plan
from scripts.benchmark_planning import offset_at, on_drivable, through_road_users

CAMERAS = Path(__file__).resolve().parents[1] / "perception" / "cameras"


@pytest.fixture(scope="module")
def perceiver(models_mirror):
    perceiver = Perceiver.from_names(["yolox-nano", "twinlitenet"])
    yield perceiver
    perceiver.close()


def perceive(perceiver: Perceiver, spec: str) -> list[FrameResult]:
    return [result for _, result in perceiver.stream(open_source(spec))]


def test_video(perceiver, video_path, record_property):
    camera = load_camera(CAMERAS / "udacity_960x540.yaml")
    results = perceive(perceiver, str(video_path))
    assert len(results) == 221
    state, statuses, inside, counted, through, offsets = PlannerState(), [], 0, 0, 0, []
    for result in results:
        out = plan_frame(result, camera, state, now=result.timestamp)
        state, plan = out.state, out.plan
        statuses.append(plan.status)
        a, b = on_drivable(result, camera, plan.waypoints)
        inside, counted = inside + a, counted + b
        through += through_road_users(result, camera, plan.waypoints)
        offsets.append(offset_at(plan.waypoints, 10.0))
    changes = np.abs(np.diff(offsets))
    figures = {"frames": len(results), "ok": statuses.count("ok"), "waypoints": counted,
               "on_drivable": inside / counted, "through_road_users": through,
               "offset_change_median_m": float(np.nanmedian(changes)),
               "offset_change_p95_m": float(np.nanpercentile(changes, 95))}
    record_property("figures", json.dumps(figures))
    print(figures)
    assert statuses.count("ok") >= 0.95 * len(results)  # a clear highway, every lane seen
    assert inside / counted >= 0.98
    assert through == 0
    assert np.isnan(offsets).sum() <= 0.05 * len(offsets)
    assert figures["offset_change_median_m"] <= 0.2


def frame_sets(drives: Path) -> list[tuple[str, Path, Path | None]]:
    bdd = sorted((drives / "bdd100k_frames").glob("*/*.jpg"))
    kitti = sorted((drives / "kitti_object" / "image_2").glob("*.png"))
    return ([("bdd", p, None) for p in bdd]
            + [("kitti", p, drives / "kitti_object" / "calib" / f"{p.stem}.txt") for p in kitti])


def test_bdd_and_kitti_frames(perceiver, drives, record_property):
    bdd_camera = load_camera(CAMERAS / "bdd100k_1280x720.yaml")
    rows, inside, counted = [], 0, 0
    for kind, path, calib in frame_sets(drives):
        result = perceive(perceiver, str(path))[0]
        camera = bdd_camera if calib is None else read_kitti_calib(calib, result.width,
                                                                  result.height)
        plan = plan_frame(result, camera, PlannerState(), now=result.timestamp,
                          speed_mps=8.0).plan
        a, b = on_drivable(result, camera, plan.waypoints)
        inside, counted = inside + a, counted + b
        through = through_road_users(result, camera, plan.waypoints)
        rows.append((kind, path.name, plan.status, len(plan.waypoints), a, b, through))
        assert through == 0, f"{path.name}: path through a road user"
        close = [d for d in result.detections if d.in_path and d.distance_m is not None
                 and d.distance_m <= 20.0]
        assert not (close and plan.status == "ok" and plan.target_speed_mps > 3.0), \
            f"{path.name}: ok at {plan.target_speed_mps} m/s toward a road user in path"
        if plan.status == "safe_stop":
            assert plan.waypoints == [] and plan.reasons
        else:
            assert plan.waypoints, f"{path.name}: a plan without waypoints"
    record_property("frames", json.dumps(rows))
    print(*rows, sep="\n")
    assert len(rows) == 16
    assert inside / counted >= 0.98
    # The KITTI courtyard frame (000000) has no road: the planner must stop, not guess.
    assert [r[2] for r in rows if r[1] == "000000.png"] == ["safe_stop"]
    # The BDD100K camera file is assumed (phones sit differently in every car): where a road
    # user's two distance estimates disagree, the plan is `degraded` (camera_mismatch), not ok.
    assert sum(r[2] != "safe_stop" for r in rows if r[0] == "bdd") >= 10


def test_run_with_plan(drives, tmp_path, monkeypatch):
    source = drives / "bdd100k_frames" / "yolop" / "7dd9ef45-f197db95.jpg"
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["perception"])
    code = cli_main(["run", str(source), "--plan", "--camera",
                     str(CAMERAS / "bdd100k_1280x720.yaml"), "--json", str(tmp_path / "r.jsonl"),
                     "--save-bev", str(tmp_path / "bev"), "--out", str(out), "--no-progress"])
    assert code == 0
    line = json.loads((tmp_path / "r.jsonl").read_text())
    plan = Plan.model_validate(line["plan"])
    assert plan.status in ("ok", "degraded") and plan.waypoints
    assert "plan" in line["timings_ms"]
    assert sorted(p.name for p in (tmp_path / "bev").iterdir()) == ["7dd9ef45-f197db95_bev.png"]
    assert (out / "7dd9ef45-f197db95.jpg").is_file()


@pytest.mark.parametrize("extra, message", [
    (["--plan"], "perception: error: --plan needs --camera CAMERA.yaml (see perception/cameras/)"),
    (["--save-bev", "bev"], "perception: error: --save-bev needs --plan"),
    (["--plan", "--camera", "missing.yaml"],
     "perception: error: missing.yaml: no such camera file"),
    (["--plan", "--camera", str(CAMERAS / "kitti_1242x375.yaml")],
     "perception: error: a 1280x720 frame cut from the camera's 1242x375 image at crop (0, 0) "
     "reaches past its edge (crop x + frame width must be <= 1242, crop y + frame height "
     "<= 375)"),
])
def test_run_with_plan_bad_input(drives, tmp_path, monkeypatch, capsys, extra, message):
    source = drives / "bdd100k_frames" / "yolop" / "7dd9ef45-f197db95.jpg"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["perception"])
    code = cli_main(["run", str(source), "--json", "r.jsonl", "--no-progress", *extra])
    assert code == 2
    assert capsys.readouterr().err.strip() == message
    assert not (tmp_path / "r.jsonl").exists()
