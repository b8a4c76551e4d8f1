"""Distance, in-path road users and lane boundaries in the pictures for people (overlay.py):
drawn on a real BDD100K frame at 1280x720 and 960x540, checked pixel by pixel."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from perception.driving.bev import BevGrid, birdseye
from perception.driving.camera import load_camera
from perception.overlay import (
    CATEGORY_COLOURS,
    EGO_BOUNDARY_COLOUR,
    FONT,
    IN_PATH_COLOUR,
    OTHER_BOUNDARY_COLOUR,
    detection_text,
    draw_result,
    font_scale,
    line_width,
    render_bev,
)
from perception.results import Detection, FrameResult, LaneBoundary

REPO = Path(__file__).resolve().parents[1]
STILL = "drives/bdd100k_frames/yolop/adb4871d-4d063244.jpg"
CAMERA = REPO / "perception/cameras/bdd100k_1280x720.yaml"

# At 1280x720; scaled for other sizes.
CAR = Detection(class_id=2, label="car", score=0.87, box=(560, 380, 720, 480), category="car",
                distance_m=12.3, distance_source="both", in_path=True)
PARKED = Detection(class_id=2, label="car", score=0.64, box=(900, 390, 1100, 500),
                   category="car", distance_m=9.8, distance_source="ground", in_path=False)
EGO_LEFT = LaneBoundary(position="ego_left", image_points=[(380.0, 700.0), (600.0, 470.0)])
OTHER = LaneBoundary(position="other", image_points=[(60.0, 700.0), (520.0, 470.0)])


def test_label_text_has_the_distance_when_known() -> None:
    assert detection_text(CAR) == "car 0.87 12.3 m"
    assert detection_text(CAR.model_copy(update={"distance_m": 143.4})) == "car 0.87 143 m"
    assert detection_text(CAR.model_copy(update={"distance_m": None})) == "car 0.87"


def test_text_is_legible_at_960_and_1280() -> None:
    """Capitals at least 15 px tall at 960 px wide, 20 px at 1280 (OpenCV's 0.5 was 10 px)."""
    for width, tallest in ((960, 15), (1280, 20)):
        (_, height), _ = cv2.getTextSize("car 0.87 12.3 m", FONT, font_scale(width), 1)
        assert height >= tallest


def scaled(result: FrameResult, factor: float) -> FrameResult:
    return result.model_copy(update={
        "width": round(result.width * factor), "height": round(result.height * factor),
        "detections": [d.model_copy(update={"box": tuple(v * factor for v in d.box)})
                       for d in result.detections],
        "lane_boundaries": [b.model_copy(update={"image_points": [
            (u * factor, v * factor) for u, v in b.image_points]})
            for b in result.lane_boundaries]})


@pytest.mark.parametrize("size", [(1280, 720), (960, 540)])
def test_boxes_labels_and_lane_boundaries_on_a_real_frame(assets: Path,
                                                          size: tuple[int, int]) -> None:
    image = cv2.resize(cv2.imread(str(assets / STILL)), size)
    base = FrameResult(frame_index=0, source=STILL, timestamp=0.0, width=1280, height=720,
                       detections=[CAR, PARKED], lane_boundaries=[OTHER, EGO_LEFT])
    result = scaled(base, size[0] / 1280)
    drawn = draw_result(image, result)
    assert drawn.shape == image.shape
    width = line_width(size[0])

    in_path, parked = result.detections
    x1, y1, x2, y2 = (round(v) for v in in_path.box)
    middle = (y1 + y2) // 2
    # The road user in the path: a warning-coloured box twice as thick as the others.
    assert (drawn[middle, x1 - width + 1: x1 + width] == IN_PATH_COLOUR).all()
    assert (drawn[middle, x1 + width + 1] != IN_PATH_COLOUR).any()  # just inside the stroke
    px1, py1, _, py2 = (round(v) for v in parked.box)
    parked_row = drawn[(py1 + py2) // 2]
    assert (parked_row[px1 - width // 2: px1 + width // 2 + 1] == CATEGORY_COLOURS["car"]).all()

    # The label above the box is as wide as its text with the distance, in the box's colour.
    scale = font_scale(size[0])
    weight = max(1, round(scale * 1.5))
    (text_width, text_height), baseline = cv2.getTextSize("car 0.87 12.3 m", FONT, scale, weight)
    top = y1 - text_height - baseline - 4
    label_row = drawn[top + 1, x1: x1 + text_width + 7]
    assert (label_row == IN_PATH_COLOUR).all()
    assert (drawn[top + 1, x1 + text_width + 8] != IN_PATH_COLOUR).any()

    # Lane boundaries: the ego line bold in its colour, other lanes thinner in theirs.
    for boundary, colour, thickness in ((result.lane_boundaries[1], EGO_BOUNDARY_COLOUR,
                                         2 * width),
                                        (result.lane_boundaries[0], OTHER_BOUNDARY_COLOUR,
                                         width)):
        (u0, v0), (u1, v1) = boundary.image_points
        u, v = round((u0 + u1) / 2), round((v0 + v1) / 2)
        assert (drawn[v, u] == colour).all()
        run = np.flatnonzero((drawn[v, u - 10: u + 11] == colour).all(axis=1))
        assert thickness - 1 <= len(run) <= 2 * thickness + 1  # a slanted line is wider across


def test_label_of_a_box_at_the_right_edge_stays_in_the_frame() -> None:
    image = np.full((540, 960, 3), 90, np.uint8)
    edge = CAR.model_copy(update={"box": (900.0, 200.0, 959.0, 300.0)})
    drawn = draw_result(image, FrameResult(frame_index=0, source="x", timestamp=0.0, width=960,
                                           height=540, detections=[edge]))
    (text_width, text_height), baseline = cv2.getTextSize(detection_text(edge), FONT,
                                                          font_scale(960), 1)
    label_row = drawn[200 - text_height - baseline - 3]  # the top of the label's patch
    assert (label_row[960 - text_width - 6:] == IN_PATH_COLOUR).all()


def test_bev_writes_each_obstacles_distance_and_draws_ground_lane_boundaries() -> None:
    camera = load_camera(CAMERA)
    ground, below = camera.pixel_to_ground(np.array([[380.0, 700.0], [600.0, 470.0]]))
    assert below.all()
    lanes = [EGO_LEFT.model_copy(update={"ground_points": [tuple(p) for p in ground]}),
             OTHER]  # no ground points: not on the bird's-eye view
    result = FrameResult(frame_index=0, source="x", timestamp=0.0, width=1280, height=720,
                         detections=[CAR, PARKED], lane_boundaries=lanes)
    bev = birdseye(result, camera, BevGrid())
    assert len(bev.obstacles) == 2
    picture = render_bev(bev, None, 2, result.lane_boundaries)
    without = render_bev(bev, None, 2)

    g = bev.grid
    for ob in bev.obstacles:  # white text just right of each obstacle's near edge
        u_right, v_near = g.to_pixel(np.array(ob.x), np.array(ob.y - ob.width / 2), 2)
        patch = picture[int(v_near) - 10: int(v_near), int(u_right) + 3: int(u_right) + 40]
        assert (patch.min(axis=-1) > 180).sum() >= 30  # "11.5 m": light text on a dark patch
        assert (without[int(v_near) - 10: int(v_near), int(u_right) + 3: int(u_right) + 40]
                == patch).all()  # the lane lines are elsewhere
    middle = ground.mean(axis=0)
    u, v = g.to_pixel(middle[0], middle[1], 2).round().astype(int)
    assert (picture[v, u] == EGO_BOUNDARY_COLOUR).all()
    assert (without[v, u] != EGO_BOUNDARY_COLOUR).any()
    assert (picture == render_bev(bev, None, 2, lanes[:1])).all()  # OTHER is image-only
