"""Bird's-eye view: inverse perspective mapping, obstacles from boxes, pictures, bad masks."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perception.driving.bev import BevError, BevGrid, birdseye, ipm_maps, warp_to_grid
from perception.driving.distance import SIZE_PRIORS
from perception.driving.planning import PlannerState, plan_frame
from perception.overlay import draw_path, render_bev
from perception.results import Detection, FrameResult
from serving.service import bev_payload
from tests.synthetic_road import (
    SIM_CAMERA,
    Car,
    Road,
    RoadCamera,
    ground_homography,
    homography_to_ground,
    straight_centre,
)


def test_ipm_equals_warp_perspective():
    """Without lens distortion the per-cell remap is cv2.warpPerspective with the homography."""
    grid = BevGrid()
    rng = np.random.default_rng(0)
    mask = cv2.resize(rng.integers(0, 2, (36, 64), dtype=np.uint8), (640, 360),
                      interpolation=cv2.INTER_NEAREST)
    ours = warp_to_grid(mask, SIM_CAMERA, grid)
    bev_to_image = ground_homography(SIM_CAMERA) @ homography_to_ground(grid)
    theirs = cv2.warpPerspective(mask, bev_to_image, (grid.cols, grid.rows),
                                 flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    visible = ipm_maps(SIM_CAMERA, grid)[2] > 0
    assert visible.sum() > 0.3 * visible.size
    assert (ours[visible] == theirs[visible]).mean() > 0.99


@settings(deadline=None)
@given(st.floats(0.01, 39.99), st.floats(-9.99, 9.99))
def test_grid_cell_round_trip(x, y):
    grid = BevGrid()
    row, col, inside = grid.to_cell(np.array([x]), np.array([y]))
    assert inside.all()
    cx, cy = grid.cell_centres()
    assert abs(cx[row[0], col[0]] - x) <= grid.metres_per_pixel / 2 + 1e-9
    assert abs(cy[row[0], col[0]] - y) <= grid.metres_per_pixel / 2 + 1e-9
    u, v = grid.to_pixel(np.array(x), np.array(y))
    back = homography_to_ground(grid) @ np.array([u - 0.5, v - 0.5, 1.0])
    np.testing.assert_allclose(back[:2], [x, y], atol=1e-9)


def test_road_lands_in_metres():
    """A 3.6 m lane drawn in the world is 3.6 m wide on the grid, centred on y = 0."""
    road = Road(straight_centre())
    result = RoadCamera(road).observe(0.0, 0.0, 0.0, timestamp=0.0)
    bev = birdseye(result, SIM_CAMERA)
    x, y = bev.grid.cell_centres()
    for distance in (8.0, 15.0, 25.0):
        row = np.argmin(np.abs(x[:, 0] - distance))
        ys = y[row][bev.drivable[row] > 0]
        assert ys.max() - ys.min() == pytest.approx(3.6, abs=0.3)
        assert (ys.max() + ys.min()) / 2 == pytest.approx(0.0, abs=0.15)
    assert bev.lanes[bev.visible > 0].any()
    assert not bev.drivable[bev.visible == 0].any()  # nothing unseen is drivable


def test_obstacle_from_box_bottom():
    road = Road(straight_centre(), lanes_left=1, cars=[Car(20.0, 0.0), Car(14.0, 3.6, width=2.0)])
    result = RoadCamera(road).observe(0.0, 0.0, 0.0, timestamp=0.0)
    bev = birdseye(result, SIM_CAMERA)
    found = sorted(bev.obstacles, key=lambda o: o.x)
    assert [o.label for o in found] == ["car", "car"]
    # Beside us the box also covers the car's flank: the bottom-edge centre is pulled toward
    # our lane and the width grows (the safe side), by a few tenths of a metre.
    # Box-shaped synthetic cars touch the road at their rear face; the ground estimate takes a
    # real car's overhang off (distance.py), so they may come up to that much nearer.
    overhang = SIZE_PRIORS["car"].overhang_m
    assert 14.0 - overhang - 0.3 <= found[0].x <= 14.3
    assert 2.9 <= found[0].y <= 4.0  # the flank pulls it toward our lane: the safe side
    assert 2.0 <= found[0].width <= 2.8
    assert 20.0 - overhang - 0.3 <= found[1].x <= 20.3
    assert found[1].y == pytest.approx(0.0, abs=0.2)


def test_hood_box_and_cut_boxes():
    result = FrameResult(frame_index=0, source="t", timestamp=0.0, width=640, height=360)
    result.drivable = np.ones((360, 640), np.uint8)
    hood = Detection(class_id=2, label="car", score=0.5, box=(20, 300, 620, 359), category="car")
    cut = Detection(class_id=2, label="car", score=0.8, box=(300, 250, 400, 359), category="car")
    sign = Detection(class_id=11, label="stop sign", score=0.8, box=(500, 100, 525, 125),
                     category="stop_sign")
    result.detections = [hood, cut, sign]
    bev = birdseye(result, SIM_CAMERA, near_x=3.8)
    assert len(bev.obstacles) == 1  # the hood is ours, not an obstacle
    assert bev.obstacles[0].x == 3.8  # a box cut by the image bottom is put at the bumper
    # A 0.75 m sign 25 px tall at f = 500 px is 15 m from the camera.
    assert bev.stop_sign_x == pytest.approx(1.5 + 15.0)


def test_masks_of_the_wrong_size():
    result = FrameResult(frame_index=0, source="t", timestamp=0.0, width=640, height=360)
    result.drivable = np.ones((100, 100), np.uint8)  # the model's own size: stretched to fit
    assert birdseye(result, SIM_CAMERA).drivable.any()
    result.lanes = np.ones((90, 160), np.uint8)
    with pytest.raises(BevError, match="drivable mask is 100x100 but lanes mask is 160x90"):
        birdseye(result, SIM_CAMERA)
    result.lanes = None
    result.drivable = np.ones((360, 640, 3), np.uint8)
    with pytest.raises(BevError, match="must be a non-empty 2-D"):
        birdseye(result, SIM_CAMERA)
    other = FrameResult(frame_index=0, source="t", timestamp=0.0, width=1280, height=720)
    with pytest.raises(BevError, match="frame is 1280x720 but the camera file describes 640x360"):
        birdseye(other, SIM_CAMERA)


def test_pictures():
    road = Road(straight_centre(), lanes_left=1, cars=[Car(20.0, 0.0)])
    result = RoadCamera(road).observe(0.0, 0.0, 0.0, timestamp=0.0)
    out = plan_frame(result, SIM_CAMERA, PlannerState(), now=0.0, speed_mps=8.0)
    picture = render_bev(out.bev, out.plan)
    grid = out.bev.grid
    assert picture.shape == (grid.rows * 2, grid.cols * 2, 3) and picture.dtype == np.uint8
    assert (picture == (40, 40, 230)).all(axis=2).sum() > 100  # the car is drawn
    path_pixels = (picture == (255, 0, 255)).all(axis=2)
    assert path_pixels.sum() > 50
    payload = bev_payload(out.bev, out.plan)
    assert payload["metres_per_pixel"] == 0.05 and payload["x_range"] == [0.0, 40.0]
    png = cv2.imdecode(np.frombuffer(base64.b64decode(payload["png"]), np.uint8), cv2.IMREAD_COLOR)
    assert png.shape == picture.shape
    image = np.zeros((360, 640, 3), np.uint8)
    draw_path(image, SIM_CAMERA, out.plan.waypoints)
    drawn = np.argwhere((image == (255, 0, 255)).all(axis=2))
    assert len(drawn) > 100 and drawn[:, 0].min() > 137  # below the horizon (row 136)
    small = draw_path(np.zeros((180, 320, 3), np.uint8), SIM_CAMERA, out.plan.waypoints)
    assert small.any()  # an image of another size gets a scaled camera
