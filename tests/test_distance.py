"""Distance per road user, two ways, and a planner that never drives at a car: synthetic roads
seen through a camera (the truth is known), then the camera file made wrong on purpose."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from perception.driving.camera import CameraModel
from perception.driving.corridor import box_in_corridor, corridor_mask, horizon_row
from perception.driving.distance import SIZE_PRIORS, estimate_distance
from perception.driving.planning import Planner, PlannerConfig
from perception.results import Detection, FrameResult
from tests.synthetic_road import SIM_CAMERA, Car, Road, RoadCamera, straight_centre


def tilted(camera: CameraModel, pitch: float = 0.0, height: float = 1.0) -> CameraModel:
    """The same camera with its file's pitch moved by `pitch` degrees and height scaled."""
    m = camera.mount
    return replace(camera, mount=replace(m, pitch=m.pitch + pitch, z=m.z * height))


def car_ahead(distance: float, y: float = 0.0) -> FrameResult:
    """A 1.55 m tall car with its rear face `distance` metres ahead of the camera."""
    x = SIM_CAMERA.mount.x + distance
    road = Road(straight_centre(), lanes_left=1, cars=[Car(x, y, height=1.55)])
    return RoadCamera(road).observe(0.0, 0.0, 0.0, timestamp=0.0)


@pytest.mark.parametrize("distance", [8.0, 15.0, 30.0])
def test_both_estimates_agree_with_the_right_camera(distance):
    [det] = car_ahead(distance).detections
    est = estimate_distance(det, SIM_CAMERA)
    assert est.source == "both" and not est.disagree
    # The synthetic car is a box touching the road at its face; the ground estimate takes a
    # real car's overhang off (a wheel contact), so it reads up to that much nearer.
    overhang = SIZE_PRIORS["car"].overhang_m
    assert distance - overhang - 0.3 <= est.ground_m <= distance + 0.3
    assert est.size_m == pytest.approx(distance, rel=0.05)
    assert est.distance_m == pytest.approx(distance, rel=0.06)


@pytest.mark.parametrize("pitch, height", [(3.0, 1.0), (-3.0, 1.0), (0.0, 1.3), (0.0, 0.7)])
def test_a_wrong_camera_is_caught_or_harmless(pitch, height):
    """Off by 3 degrees or 30 % in height, the reported distance stays near the truth (the size
    estimate needs no mount) and the planner never places the car farther than the truth."""
    [det] = car_ahead(20.0).detections
    est = estimate_distance(det, tilted(SIM_CAMERA, pitch, height))
    assert est.distance_m == pytest.approx(20.0, rel=0.25)
    assert est.nearest_m <= 20.0 * 1.05


def test_the_car_at_354_m():
    """The new user's case: a car 12 m ahead whose box bottom sits a few rows below the
    camera file's horizon. Ground distance explodes; the size says 12 m; the plan is degraded
    (camera_mismatch) and slow enough to stop before the nearer estimate."""
    result = car_ahead(12.0)
    [det] = result.detections
    truth = SIM_CAMERA
    # A camera file that looks 6 degrees less down than the truth: the box bottom of the car
    # at 12 m (6.7 degrees below the horizon) lands just below the file's horizon.
    wrong = tilted(truth, pitch=-6.0)
    est = estimate_distance(det, wrong)
    assert est.ground_m is None or est.ground_m > 100.0
    assert est.disagree and est.source == "size"
    assert est.size_m == pytest.approx(12.0, rel=0.1)
    plan = Planner(wrong).step(result, now=0.0, speed_mps=10.0)
    assert plan.status != "ok"
    assert any(r.startswith("camera_mismatch") for r in plan.reasons)
    assert plan.target_speed_mps <= PlannerConfig().creep_speed_mps
    assert det.in_path is True and det.distance_source == "size"


def test_corridor_in_path_and_next_lane():
    corridor = corridor_mask(SIM_CAMERA, np.empty((0, 2)), half_width_m=1.25, near_m=3.8)
    horizon = horizon_row(SIM_CAMERA)
    assert 0 < horizon < SIM_CAMERA.height / 2  # pitched 5 degrees down
    [ahead] = car_ahead(20.0).detections
    [beside] = car_ahead(20.0, y=3.6).detections
    assert box_in_corridor(ahead.box, corridor, horizon)
    assert not box_in_corridor(beside.box, corridor, horizon)
    above = (300.0, horizon - 40.0, 340.0, horizon - 5.0)  # a sign gantry, not on the road
    assert not box_in_corridor(above, corridor, horizon)


def test_never_at_speed_toward_a_road_user_in_path():
    """Whatever the estimates say, a road user in the corridor caps the speed: a car 15 m
    ahead means creeping, and one with no usable estimate means stopping."""
    result = car_ahead(15.0)
    plan = Planner(SIM_CAMERA).step(result, now=0.0, speed_mps=10.0)
    assert result.detections[0].in_path is True
    assert plan.target_speed_mps <= PlannerConfig().creep_speed_mps
    assert any(r.startswith("car in path at") for r in plan.reasons)

    blind = car_ahead(15.0)
    [det] = blind.detections
    det.category, det.label = "person", "person"  # a prior, but a box cut at the bottom and
    det.box = (det.box[0], 0.0, det.box[2], float(SIM_CAMERA.height - 1))  # the top: no estimate
    plan = Planner(SIM_CAMERA).step(blind, now=0.0, speed_mps=10.0)
    assert plan.target_speed_mps == 0.0


def test_detections_carry_their_distances_in_the_json():
    result = car_ahead(20.0)
    Planner(SIM_CAMERA).step(result, now=0.0)
    line = result.model_dump(mode="json")
    det = line["detections"][0]
    assert det["distance_source"] == "both" and det["in_path"] is True
    assert det["distance_m"] == pytest.approx(20.0, rel=0.06)


def test_other_classes_get_no_distance():
    det = Detection(class_id=9, label="traffic light", score=0.9, box=(10, 10, 20, 30),
                    category="traffic_light")
    assert estimate_distance(det, SIM_CAMERA) is None


def test_a_box_under_a_pixel_still_gets_a_distance():
    """A far car the detector boxes smaller than a pixel, its feet above the file's horizon:
    taken as one pixel tall (nearer than it is), not as 'distance unknown', which would stop
    the car for something at the horizon."""
    horizon = horizon_row(SIM_CAMERA)
    det = Detection(class_id=2, label="car", score=0.5, category="car",
                    box=(320.0, horizon - 1.0, 320.6, horizon - 0.4))
    est = estimate_distance(det, SIM_CAMERA)
    assert est.ground_m is None and est.size_m == pytest.approx(500.0 * 1.55, rel=0.01)
