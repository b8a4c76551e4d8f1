"""Lane lines as lanes: boundaries fitted from lane masks, and placed on the road with a camera.

Exact cases on the synthetic road (tests/synthetic_road.py: a perfect segmenter's lane mask
for a known camera, lanes 3.6 m wide), then the default model on the real Udacity stills.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from synthetic_road import CELL_M, SIM_CAMERA, Road, RoadCamera, arc_centre, straight_centre

from perception.driving.camera import load_camera
from perception.driving.lanes import lanes_on_ground
from perception.lane_lines import fit_lane_boundaries
from perception.results import LaneBoundary

REPO = Path(__file__).resolve().parents[1]
UDACITY_CAMERA = REPO / "perception/cameras/udacity_960x540.yaml"


def ego(boundaries: list[LaneBoundary]) -> dict[str, LaneBoundary]:
    return {b.position: b for b in boundaries if b.position != "other"}


def fit(result) -> list[LaneBoundary]:
    return fit_lane_boundaries(result.lanes, result.width, result.height)


def truth_column(road_y: float, rows: np.ndarray) -> np.ndarray:
    """Where the road line `road_y` metres left of the camera crosses the given frame rows.

    The raster draws a line centred on its cells' corners and looks cells up by their
    interiors: the painted line sits half a cell left of `road_y`."""
    ground = np.column_stack([np.linspace(3.0, 80.0, 400), np.full(400, road_y + CELL_M / 2)])
    pixels, _ = SIM_CAMERA.ground_to_pixel(ground)
    return np.interp(rows, pixels[::-1, 1], pixels[::-1, 0])


def columns_apart(a: LaneBoundary, b: LaneBoundary) -> float:
    """The largest horizontal distance between two boundaries over the rows both cover."""
    a, b = np.array(a.image_points)[::-1], np.array(b.image_points)[::-1]  # far first
    rows = np.linspace(max(a[0, 1], b[0, 1]), min(a[-1, 1], b[-1, 1]), 20)
    assert rows[-1] - rows[0] > 100
    return float(np.abs(np.interp(rows, a[:, 1], a[:, 0])
                        - np.interp(rows, b[:, 1], b[:, 0])).max())


def dashed(road: Road, line_y: float, dash_m: float = 2.0, period_m: float = 5.0) -> Road:
    """The road with its line at `line_y` (world, straight road) painted as dashes."""
    band = slice(int((line_y - 0.3 - road.origin[1]) / CELL_M),
                 int((line_y + 0.3 - road.origin[1]) / CELL_M))
    x = road.origin[0] + np.arange(road.lanes.shape[1]) * CELL_M
    road.lanes[band, (x % period_m) > dash_m] = 0
    return road


def test_straight_road_ego_lines_in_frame_pixels():
    """Four lines on a 3-lane road: the two beside the car are ego_left and ego_right, they
    follow the true lines within a pixel or two, near (bottom) to far, sorted left to right."""
    road = Road(straight_centre(), lanes_left=1, lanes_right=1)
    result = RoadCamera(road).observe(0.0, 0.3, 0.0, 0.0)
    assert result.lanes.shape == (180, 320)  # the mask at half the frame size
    boundaries = fit(result)
    assert [b.position for b in boundaries] == ["other", "ego_left", "ego_right", "other"]
    for boundary, line_y in ((ego(boundaries)["ego_left"], 1.8 - 0.3),
                             (ego(boundaries)["ego_right"], -1.8 - 0.3)):
        points = np.array(boundary.image_points)
        assert np.all(np.diff(points[:, 1]) < 0)  # near to far
        assert points[0, 1] > 350  # reaches the bottom of the 640x360 frame
        assert len(points) >= 15
        error = np.abs(points[:, 0] - truth_column(line_y, points[:, 1]))
        assert error.mean() < 1.0 and error.max() < 2.5


def test_dashed_line_is_one_boundary():
    road = dashed(Road(straight_centre()), line_y=-1.8)
    result = RoadCamera(road).observe(0.0, 0.0, 0.0, 0.0)
    count, _ = cv2.connectedComponents(result.lanes)
    assert count - 1 >= 5  # solid left line + at least 4 dashes
    boundaries = fit(result)
    assert [b.position for b in boundaries] == ["ego_left", "ego_right"]
    right = np.array(ego(boundaries)["ego_right"].image_points)
    assert right[0, 1] > 320 and right[-1, 1] < 200  # spans 3 dashes (the nearest: 70 rows)
    assert np.abs(right[:, 0] - truth_column(-1.8, right[:, 1])).mean() < 2.0


def test_curve_is_followed():
    road = Road(arc_centre(radius=150.0, lead_in=5.0))
    result = RoadCamera(road).observe(0.0, 0.0, 0.0, 0.0)
    boundaries = fit(result)
    assert [b.position for b in boundaries] == ["ego_left", "ego_right"]
    near_line = cv2.dilate(result.mask_at_frame_size("lanes"), np.ones((7, 7), np.uint8))
    for boundary in boundaries:  # the points lie on (or beside) the line's pixels
        u, v = np.round(np.array(boundary.image_points)).astype(int).T
        on_line = near_line[np.clip(v, 0, 359), np.clip(u, 0, 639)]
        assert on_line[: len(on_line) * 3 // 4].all()  # the near three quarters: all
        assert on_line.mean() > 0.85  # the far end bends more than a parabola does


def test_lines_meeting_at_the_horizon_stay_apart():
    """A V where the two ego lines touch at the top: cut apart, still left and right."""
    mask = np.zeros((288, 512), np.uint8)
    cv2.line(mask, (60, 287), (256, 120), 1, 4)
    cv2.line(mask, (452, 287), (256, 120), 1, 4)
    boundaries = fit_lane_boundaries(mask, 1280, 720)
    assert [b.position for b in boundaries] == ["ego_left", "ego_right"]
    left, right = (np.array(b.image_points) for b in boundaries)
    assert left[0, 0] < 200 and right[0, 0] > 1080  # at the bottom, 1280x720 pixels
    for line in (left, right):  # each follows its own line up to near the apex (row 300)
        assert line[0, 1] > 700 and line[-1, 1] < 360
    rows = np.linspace(360, 700, 20)
    assert np.all(np.interp(rows, left[::-1, 1], left[::-1, 0])
                  < np.interp(rows, right[::-1, 1], right[::-1, 0]) - 50)


def test_noise_and_road_markings_are_not_lines():
    rng = np.random.default_rng(0)
    specks = np.zeros((288, 512), np.uint8)
    ys, xs = rng.integers(0, 287, 300), rng.integers(0, 511, 300)
    specks[ys, xs] = specks[ys + 1, xs] = specks[ys, xs + 1] = specks[ys + 1, xs + 1] = 1
    assert fit_lane_boundaries(specks, 1280, 720) == []
    handful = np.zeros((288, 512), np.uint8)
    handful[200:206, 100:103] = 1  # 18 px
    assert fit_lane_boundaries(handful, 1280, 720) == []
    stop_line = np.zeros((288, 512), np.uint8)
    stop_line[240:246, 150:360] = 1
    assert fit_lane_boundaries(stop_line, 1280, 720) == []
    assert fit_lane_boundaries(np.zeros((288, 512), np.uint8), 1280, 720) == []
    # The same specks over a real road's mask change nothing of its ego lines.
    result = RoadCamera(Road(straight_centre())).observe(0.0, 0.0, 0.0, 0.0)
    clean = ego(fit(result))
    noisy_mask = np.maximum(result.lanes, cv2.resize(specks, (320, 180),
                                                     interpolation=cv2.INTER_NEAREST))
    noisy = ego(fit_lane_boundaries(noisy_mask, 640, 360))
    assert set(noisy) == {"ego_left", "ego_right"}
    for side in noisy:
        assert columns_apart(noisy[side], clean[side]) < 2.0


def test_mask_resolution_does_not_matter():
    """The same road as 320x180 and 640x360 masks: the same boundaries in frame pixels."""
    road = Road(straight_centre(), lanes_right=1)
    half = RoadCamera(road, mask_scale=0.5).observe(0.0, -0.4, 0.0, 0.0)
    full = RoadCamera(road, mask_scale=1.0).observe(0.0, -0.4, 0.0, 0.0)
    assert full.lanes.shape == (360, 640)
    small, large = ego(fit(half)), ego(fit(full))
    assert set(small) == set(large) == {"ego_left", "ego_right"}
    for side in small:
        assert columns_apart(small[side], large[side]) < 3.0


def test_on_ground_width_and_offset():
    """The synthetic lane is 3.6 m wide and the car 0.5 m right of its centre."""
    road = Road(straight_centre(), lanes_left=1)
    result = RoadCamera(road).observe(0.0, -0.5, 0.0, 0.0)
    placed, lane = lanes_on_ground(fit(result), SIM_CAMERA)
    assert lane is not None
    assert lane.width_m == pytest.approx(3.6, abs=0.1)
    assert lane.offset_m == pytest.approx(-0.5, abs=0.1)
    for boundary in placed:
        ground = np.array(boundary.ground_points)
        assert len(ground) >= 3
        ahead = ground[:, 0] - SIM_CAMERA.mount.x
        assert np.all((ahead > 0) & (ahead <= 60.0))
    left = np.array(ego(placed)["ego_left"].ground_points)
    assert np.abs(left[:, 1] - (1.8 + 0.5)).max() < 0.15  # the line, metres left of the car
    # Only one ego boundary, or a lane no car drives in: no ego lane.
    assert lanes_on_ground([b for b in placed if b.position != "ego_right"], SIM_CAMERA)[1] \
        is None
    squeezed = [b.model_copy(update={"image_points": [(u * 0.3 + 224, v)
                                                      for u, v in b.image_points]})
                for b in placed]
    assert lanes_on_ground(squeezed, SIM_CAMERA)[1] is None  # about 1 m wide


def test_above_the_horizon_has_no_ground_points():
    sky = LaneBoundary(position="other", image_points=[(320.0, 100.0), (330.0, 60.0)])
    placed, lane = lanes_on_ground([sky], SIM_CAMERA)
    assert placed[0].ground_points == [] and lane is None


@pytest.fixture(scope="module")
def udacity_stills(drives):
    from perception.frames import folder_frames
    from perception.pipeline import Perceiver

    with Perceiver.from_names(["multitask-lite"]) as perceiver:
        return perceiver.perceive(list(folder_frames(drives / "udacity_lanelines_p1")))


def test_default_model_on_udacity_stills(udacity_stills):
    """All 6 stills: both ego lines, and with the shipped camera a lane of highway width with
    the car near its centre."""
    camera = load_camera(UDACITY_CAMERA)
    assert len(udacity_stills) == 6
    for result in udacity_stills:
        boundaries = fit_lane_boundaries(result.lanes, result.width, result.height)
        assert {"ego_left", "ego_right"} <= {b.position for b in boundaries}, result.source
        _, lane = lanes_on_ground(boundaries, camera)
        assert lane is not None and 3.4 < lane.width_m < 3.9, result.source
        assert abs(lane.offset_m) < 0.5, result.source
