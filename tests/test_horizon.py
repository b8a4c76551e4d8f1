"""The camera check: the horizon seen in the ego lane lines against the camera file's.

Exact on the synthetic road (its camera's pitch is known: 5 degrees), then the default model
on the real Udacity video with its shipped camera, right and 3 degrees wrong.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from synthetic_road import SIM_CAMERA, Road, RoadCamera, straight_centre

from perception.driving.camera import CameraModel, load_camera
from perception.driving.horizon import (
    MIN_ESTIMATES,
    HorizonCheck,
    check_still,
    expected_row,
    horizon_row,
    pitch_error_deg,
)
from perception.lane_lines import fit_lane_boundaries
from perception.results import FrameResult, LaneBoundary

REPO = Path(__file__).resolve().parents[1]
UDACITY_CAMERA = REPO / "perception/cameras/udacity_960x540.yaml"


def with_pitch(camera: CameraModel, pitch: float) -> CameraModel:
    return replace(camera, mount=replace(camera.mount, pitch=pitch))


def fitted(result: FrameResult) -> FrameResult:
    result.lane_boundaries = fit_lane_boundaries(result.lanes, result.width, result.height)
    return result


@pytest.fixture(scope="module")
def drive() -> list[FrameResult]:
    """20 frames along a straight road, the car weaving a little in its lane."""
    camera = RoadCamera(Road(straight_centre(), lanes_left=1))
    return [fitted(camera.observe(2.0 * i, 0.4 * math.sin(i / 3), 0.02 * math.cos(i / 3),
                                  i / 10, i)) for i in range(20)]


def test_expected_row_is_where_the_pitch_puts_the_horizon():
    for pitch, yaw in ((5.0, 0.0), (-1.3, -1.5), (10.0, 4.0)):
        camera = replace(SIM_CAMERA, mount=replace(SIM_CAMERA.mount, pitch=pitch, yaw=yaw))
        assert expected_row(camera) == pytest.approx(180 - 500 * math.tan(math.radians(pitch)),
                                                     abs=0.01)
        assert pitch_error_deg(expected_row(camera), camera) == pytest.approx(0.0, abs=1e-9)
    # Seen 20 rows higher than the file says: the camera looks further down than that.
    assert pitch_error_deg(expected_row(SIM_CAMERA) - 20, SIM_CAMERA) == pytest.approx(
        math.degrees(math.atan(math.tan(math.radians(5.0)) + 20 / 500)) - 5.0, abs=1e-9)


def test_lane_lines_meet_at_the_true_horizon(drive):
    rows = [horizon_row(result.lane_boundaries, result.height) for result in drive]
    assert all(row is not None for row in rows)
    assert np.abs(np.array(rows) - expected_row(SIM_CAMERA)).max() < 3.0  # 0.35 degrees


def test_drive_ok_with_the_right_camera_and_mismatch_with_a_wrong_one(drive):
    for camera_pitch, status, error in ((5.0, "ok", 0.0), (5.8, "ok", -0.8),
                                        (8.0, "mismatch", -3.0), (2.0, "mismatch", 3.0)):
        camera = with_pitch(SIM_CAMERA, camera_pitch)
        check = HorizonCheck()
        answers = [check.update(result, camera) for result in drive]
        assert {a.status for a in answers[: MIN_ESTIMATES - 1]} == {"unknown"}
        assert answers[0].pitch_error_deg is None and answers[0].horizon_row is None
        assert answers[0].expected_row == pytest.approx(expected_row(camera), abs=0.1)
        last = answers[-1]
        assert last.status == status, camera_pitch
        assert last.pitch_error_deg == pytest.approx(error, abs=0.3)
        assert last.horizon_row == pytest.approx(expected_row(SIM_CAMERA), abs=2.0)


def test_frames_without_lanes_keep_the_drive_estimate(drive):
    camera = with_pitch(SIM_CAMERA, 8.0)
    check = HorizonCheck()
    for result in drive[:MIN_ESTIMATES]:
        check.update(result, camera)
    empty = drive[0].model_copy(update={"lane_boundaries": []})
    for _ in range(30):  # a tunnel: no lanes for a while
        answer = check.update(empty, camera)
    assert answer.status == "mismatch" and answer.pitch_error_deg == pytest.approx(-3.0, abs=0.3)


def test_a_still_alone(drive):
    result = drive[5]
    assert check_still(result, SIM_CAMERA).status == "ok"
    assert check_still(result, with_pitch(SIM_CAMERA, 7.0)).status == "ok"  # 2 deg: a still
    wrong = check_still(result, with_pitch(SIM_CAMERA, 9.0))
    assert wrong.status == "mismatch" and wrong.pitch_error_deg == pytest.approx(-4.0, abs=0.3)
    one_line = result.model_copy(update={"lane_boundaries": [
        b for b in result.lane_boundaries if b.position != "ego_right"]})
    unknown = check_still(one_line, SIM_CAMERA)
    assert unknown.status == "unknown" and unknown.pitch_error_deg is None


def test_lines_that_do_not_converge_give_no_horizon():
    def line(position: str, bottom: float, top: float) -> LaneBoundary:
        return LaneBoundary(position=position,
                            image_points=[(bottom + (top - bottom) * t, 700 - 300 * t)
                                          for t in np.linspace(0, 1, 10)])
    # Rows 700 to 400: these two meet 50 rows above their tops.
    assert horizon_row([line("ego_left", 300, 600), line("ego_right", 1000, 700)], 720) \
        == pytest.approx(350.0)
    # Parallel in the image, or parting going up: no horizon.
    assert horizon_row([line("ego_left", 300, 330), line("ego_right", 1000, 1030)], 720) is None
    assert horizon_row([line("ego_left", 300, 200), line("ego_right", 1000, 1100)], 720) is None
    assert horizon_row([line("ego_left", 300, 600), line("other", 1000, 700)], 720) is None


@pytest.fixture(scope="module")
def udacity_video(video_path) -> list[FrameResult]:
    from perception.frames import video_frames
    from perception.pipeline import Perceiver

    frames = [f for f in video_frames(video_path) if f.index % 5 == 0]
    with Perceiver.from_names(["multitask-lite"]) as perceiver:
        return [fitted(result) for result in perceiver.perceive(frames)]


def test_udacity_video_with_its_camera_and_a_wrong_one(udacity_video):
    shipped = load_camera(UDACITY_CAMERA)
    assert len(udacity_video) == 45
    rows = [horizon_row(r.lane_boundaries, r.height) for r in udacity_video]
    assert sum(row is not None for row in rows) >= 0.9 * len(rows)
    right, wrong = HorizonCheck(), HorizonCheck()
    off_by_three = with_pitch(shipped, shipped.mount.pitch + 3.0)
    for result in udacity_video:
        ok, mismatch = right.update(result, shipped), wrong.update(result, off_by_three)
    assert ok.status == "ok" and abs(ok.pitch_error_deg) < 1.0
    assert mismatch.status == "mismatch"
    assert mismatch.pitch_error_deg == pytest.approx(ok.pitch_error_deg - 3.0, abs=0.05)
    assert mismatch.horizon_row == ok.horizon_row
