"""Planning cases on synthetic roads seen through a camera, and the fail-safe."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from perception.driving.distance import SIZE_PRIORS
from perception.driving.planning import PlannerConfig, PlannerState, Tactic, plan_frame
from perception.results import Detection, FrameResult
from tests.synthetic_road import (
    CELL_M,
    SIM_CAMERA,
    Car,
    Road,
    RoadCamera,
    arc_centre,
    straight_centre,
)

CRUISE = PlannerConfig().cruise_speed_mps


def plan_on(road: Road, speed: float = 10.0):
    result = RoadCamera(road).observe(0.0, 0.0, 0.0, timestamp=0.0)
    return plan_frame(result, SIM_CAMERA, PlannerState(), now=0.0, speed_mps=speed)


def lateral_error(road: Road, waypoints) -> np.ndarray:
    return np.array([road.cross_track(x, y)[0] for x, y in waypoints])


def test_straight_road():
    out = plan_on(Road(straight_centre(), lanes_left=1, lanes_right=1))
    plan = out.plan
    assert plan.status == "ok" and plan.reasons == []
    xs = np.array(plan.waypoints)[:, 0]
    assert xs[0] <= 6.0 and xs[-1] >= 38.0  # from the first seen road to the end of the grid
    assert np.abs(np.array(plan.waypoints)[:, 1]).max() < 0.15
    assert plan.target_speed_mps == CRUISE
    assert abs(plan.control.steer) < 0.01 and plan.control.throttle > 0 and plan.control.brake == 0


@pytest.mark.parametrize("radius", [50.0, -50.0, 120.0])
def test_curve(radius):
    road = Road(arc_centre(radius), lanes_left=1)
    plan = plan_on(road).plan
    assert plan.status == "ok"
    near = [w for w in plan.waypoints if w[0] <= 25.0]
    assert len(near) >= 15
    assert np.abs(lateral_error(road, near)).max() < 0.3
    assert np.sign(plan.control.steer) == -np.sign(radius)  # steer > 0 is right
    limit = np.sqrt(PlannerConfig().max_lateral_accel_mps2 * abs(radius))
    if limit < CRUISE:
        assert plan.target_speed_mps == pytest.approx(limit, rel=0.25)
        assert any(r.startswith("curve") for r in plan.reasons)


@pytest.mark.parametrize("phase_m", [0.0, 4.5])
def test_broken_lane_line_does_not_pull_the_path(phase_m):
    """Left line broken (3 m dashes every 9 m), right line solid: the path stays centred, the
    gaps are not room to use (they drew it 0.2 m toward the broken line before)."""
    road = Road(straight_centre(), lanes_left=1)
    ys = road.origin[1] + np.arange(road.lanes.shape[0]) * CELL_M
    xs = road.origin[0] + np.arange(road.lanes.shape[1]) * CELL_M
    road.lanes[np.ix_((ys > 1.5) & (ys < 2.1), np.mod(xs + phase_m, 9.0) >= 3.0)] = 0
    plan = plan_on(road).plan
    assert plan.status == "ok"
    assert np.abs(np.array(plan.waypoints)[:, 1]).max() < 0.1


def test_obstacle_ahead_in_lane():
    """Stay in lane behind it (no lane change), slow down to keep the gap."""
    road = Road(straight_centre(), lanes_left=1, cars=[Car(20.0, 0.0)])
    plan = plan_on(road).plan
    assert plan.status == "ok"
    path = np.array(plan.waypoints)
    assert np.abs(path[:, 1]).max() < 0.3
    assert path[-1, 0] < 20.0 - PlannerConfig().margin_m
    assert plan.target_speed_mps < 7.0
    assert any(r.startswith("car in path at") for r in plan.reasons)
    # A box-shaped synthetic car touches the road at its rear face; a real car's wheels touch
    # it an overhang behind that face, which the ground estimate takes off (distance.py).
    [obstacle] = plan.obstacles
    assert obstacle.label == "car" and abs(obstacle.y) < 0.3
    assert 20.0 - SIZE_PRIORS["car"].overhang_m - 0.3 <= obstacle.x <= 20.3


def test_obstacle_beside_lane():
    road = Road(straight_centre(), lanes_left=1, cars=[Car(15.0, 3.6)])
    plan = plan_on(road).plan
    assert plan.status == "ok" and plan.target_speed_mps == CRUISE
    path = np.array(plan.waypoints)
    assert path[-1, 0] >= 38.0 and np.abs(path[:, 1]).max() < 0.3
    assert len(plan.obstacles) == 1


def test_fully_blocked_road():
    cars = [Car(12.0, 0.0), Car(12.0, 3.6), Car(12.5, -3.0)]
    road = Road(straight_centre(), lanes_left=1, lanes_right=1, cars=cars)
    plan = plan_on(road).plan
    path = np.array(plan.waypoints)
    assert path[-1, 0] < 12.0
    # 12 m ahead minus the bumper (3.8 m) and the stop gap (3 m) leaves ~5 m to stop in.
    assert plan.target_speed_mps < 3.0
    assert plan.control.brake > 0.5 and plan.control.throttle == 0
    close = plan_on(Road(straight_centre(), cars=[Car(6.5, 0.0, width=3.8)])).plan
    assert close.target_speed_mps == 0.0


def empty_result(now=0.0, drivable=True, lanes=True) -> FrameResult:
    result = FrameResult(frame_index=0, source="t", timestamp=now, width=640, height=360)
    result.drivable = np.zeros((360, 640), np.uint8) if drivable else None
    result.lanes = np.zeros((360, 640), np.uint8) if lanes else None
    return result


def test_empty_perception_is_a_safe_stop():
    plan = plan_frame(empty_result(), SIM_CAMERA, PlannerState(), now=0.0, speed_mps=10.0).plan
    assert plan.status == "safe_stop" and plan.reasons == ["no drivable area ahead"]
    assert plan.waypoints == [] and plan.target_speed_mps == 0.0
    assert plan.control.throttle == 0.0 and 0 < plan.control.brake <= 0.6


@pytest.mark.parametrize("result, now, reason", [
    (None, 0.0, "no perception result"),
    (empty_result(drivable=False), 0.0, "no drivable-area mask (is a segmentation model loaded?)"),
    (empty_result(now=10.0), 10.8, "perception is stale: 0.80 s old (deadline 0.50 s)"),
    (empty_result(now=float("nan")), 0.0, "perception is stale: nan s old (deadline 0.50 s)"),
])
def test_missing_or_stale_perception(result, now, reason):
    plan = plan_frame(result, SIM_CAMERA, PlannerState(), now=now, speed_mps=10.0).plan
    assert plan.status == "safe_stop" and plan.reasons == [reason] and plan.waypoints == []


def test_stale_frame_of_a_good_road_is_not_used():
    result = RoadCamera(Road(straight_centre())).observe(0.0, 0.0, 0.0, timestamp=5.0)
    plan = plan_frame(result, SIM_CAMERA, PlannerState(), now=6.0, speed_mps=10.0).plan
    assert plan.status == "safe_stop" and plan.waypoints == []


def test_road_starting_far_ahead_is_not_guessed():
    """Drivable road only beyond 20 m: nothing connects us to it, so no path."""
    road = Road(straight_centre(200.0, start=20.0))
    plan = plan_on(road).plan
    assert plan.status == "safe_stop" and plan.reasons == ["no drivable area ahead"]


def test_road_user_on_the_road_hidden_by_the_hood_is_not_driven_through():
    """The road between the bumper and the first drivable row (a hood hides it) is assumed
    free, except where a detected road user stands: a person 6 m ahead, road seen from 9 m."""
    result = FrameResult(frame_index=0, source="t", timestamp=0.0, width=640, height=360)
    horizon = int(SIM_CAMERA.ground_to_pixel(np.array([[200.0, 0.0]]))[0][0, 1]) + 1
    hood = int(SIM_CAMERA.ground_to_pixel(np.array([[9.0, 0.0]]))[0][0, 1])
    result.drivable = np.zeros((360, 640), np.uint8)
    result.drivable[horizon:hood] = 1
    result.lanes = np.zeros((360, 640), np.uint8)
    (u, v), = SIM_CAMERA.ground_to_pixel(np.array([[6.0, 0.0]]))[0]
    result.detections = [Detection(class_id=0, label="person", score=0.9,
                                   box=(u - 20, v - 150, u + 20, v), category="person")]
    plan = plan_frame(result, SIM_CAMERA, PlannerState(), now=0.0, speed_mps=5.0).plan
    assert [(o.label, round(o.x)) for o in plan.obstacles] == [("person", 6)]
    clear = plan.obstacles[0].width / 2 + PlannerConfig().half_width_m
    assert plan.status == "safe_stop" or abs(plan.waypoints[0][1]) > clear


def test_safe_stop_brakes_smoothly():
    state, brakes = PlannerState(), []
    for i in range(8):
        out = plan_frame(None, SIM_CAMERA, state, now=0.1 * i, speed_mps=10.0)
        state = out.state
        brakes.append(out.plan.control.brake)
    assert brakes == sorted(brakes) and brakes[0] <= 0.3 and brakes[-1] == 0.6
    assert max(np.diff(brakes)) <= 0.2 + 1e-9


def test_degraded_without_lane_mask():
    result = RoadCamera(Road(straight_centre())).observe(0.0, 0.0, 0.0, timestamp=0.0)
    result.lanes = None
    plan = plan_frame(result, SIM_CAMERA, PlannerState(), now=0.0, speed_mps=10.0).plan
    assert plan.status == "degraded"
    assert plan.reasons[0] == "no lane mask: keeping to the drivable area"
    assert np.abs(np.array(plan.waypoints)[:, 1]).max() < 0.3


def test_degraded_without_detector():
    result = RoadCamera(Road(straight_centre())).observe(0.0, 0.0, 0.0, timestamp=0.0)
    plan = plan_frame(result, SIM_CAMERA, PlannerState(), now=0.0, speed_mps=10.0,
                      detections_available=False).plan
    assert plan.status == "degraded" and plan.target_speed_mps == 5.0
    assert plan.reasons == ["no detector: obstacles unseen, speed capped at 5.0 m/s"]


def test_stop_sign():
    road = Road(straight_centre())
    result = RoadCamera(road).observe(0.0, 0.0, 0.0, timestamp=0.0)
    # 0.75 m sign, 25 px at f = 500 px: 15 m from the camera, 16.5 m from the rear axle.
    result.detections.append(Detection(class_id=11, label="stop sign", score=0.9,
                                       box=(500, 100, 525, 125), category="stop_sign"))
    out = plan_frame(result, SIM_CAMERA, PlannerState(), now=0.0, speed_mps=8.0)
    assert "stop sign at 16.5 m" in out.plan.reasons
    assert out.plan.target_speed_mps == pytest.approx(np.sqrt(2 * 2.5 * (16.5 - 3.8 - 3.0)),
                                                     abs=1e-3)
    # Standing at the sign: wait stop_sign_wait_s, then go.
    state, t = out.state, 0.0
    while t < 2.5:
        t += 0.5
        result.timestamp = t
        out = plan_frame(result, SIM_CAMERA, state, now=t, speed_mps=0.0)
        state = out.state
    assert state.sign_cleared and not any("stop sign" in r for r in out.plan.reasons)


def test_plan_is_part_of_the_result_json():
    road = Road(straight_centre(), cars=[Car(25.0, 0.0)])
    result = RoadCamera(road).observe(0.0, 0.0, 0.0, timestamp=0.0)
    result.plan = plan_frame(result, SIM_CAMERA, PlannerState(), now=0.0, speed_mps=5.0).plan
    data = json.loads(result.model_dump_json())
    plan = data["plan"]
    assert set(plan) == {"status", "reasons", "waypoints", "target_speed_mps", "control",
                         "obstacles", "image_path"}
    assert set(plan["control"]) == {"steer", "throttle", "brake"}
    assert set(plan["obstacles"][0]) == {"x", "y", "width", "label"}
    assert all(len(w) == 2 for w in plan["waypoints"])
    # The path seen from the camera: every waypoint ahead, nearer ones lower in the image.
    assert len(plan["image_path"]) == len(plan["waypoints"])
    rows = [v for _, v in plan["image_path"]]
    assert rows == sorted(rows, reverse=True)
    assert FrameResult.model_validate(data).plan == result.plan


def test_same_input_same_plan_and_state_is_explicit():
    road = Road(arc_centre(80.0), lanes_left=1)
    result = RoadCamera(road).observe(0.0, 0.0, 0.0, timestamp=0.0)
    first = plan_frame(result, SIM_CAMERA, PlannerState(), now=0.0, speed_mps=8.0)
    again = plan_frame(result, SIM_CAMERA, PlannerState(), now=0.0, speed_mps=8.0)
    assert first.plan == again.plan
    assert first.state.previous == first.plan and first.state.time == 0.0


def lane_strip(centre: np.ndarray, width: float = 3.6) -> np.ndarray:
    """The ground of one lane along a centre line, as a polygon."""
    normal = Road(centre).normals()
    return np.vstack([centre + normal * width / 2, (centre - normal * width / 2)[::-1]])


@pytest.mark.parametrize("route_bends", [False, True])
def test_a_route_picks_the_branch_at_a_fork(route_bends):
    """A one-lane road forks (no lane lines): straight on, or a branch bending right from 5 m.
    The planner alone goes straight on; told the navigation's route (a Tactic with only the
    route's ground, no offset), it keeps to the route, whichever branch that is."""
    road = Road(straight_centre())
    branch = arc_centre(-40.0, length=60.0, lead_in=5.0)
    cv2.fillPoly(road.drivable, [road.to_raster(lane_strip(branch))], 1)
    road.lanes[:] = 0
    result = RoadCamera(road).observe(0.0, 0.0, 0.0, timestamp=0.0)
    alone = plan_frame(result, SIM_CAMERA, PlannerState(), now=0.0, speed_mps=8.0).plan
    route = lane_strip(branch if route_bends else straight_centre(60.0, -5.0))
    tactic = Tactic(offset_m=None, route=(route,))
    told = plan_frame(result, SIM_CAMERA, PlannerState(), now=0.0, speed_mps=8.0,
                      tactic=tactic).plan
    y_at_25 = {name: np.interp(25.0, *np.array(plan.waypoints).T)
               for name, plan in (("alone", alone), ("told", told))}
    assert alone.status == told.status == "ok"
    assert abs(y_at_25["alone"]) < 0.5
    if route_bends:  # the branch's centre is 5.4 m to the right at x = 25 m
        assert y_at_25["told"] < -4.5
    else:
        assert abs(y_at_25["told"]) < 0.5


def test_a_route_keeps_the_whole_car_on_its_road():
    """Two lanes of drivable road without lane lines (a centre line too faint to see): alone,
    the planner centres on both; told that the route is the right one, the car's body stays
    on it (its centre within 3.6 / 2 - half width - margin = 0.55 m of the lane's centre)."""
    road = Road(straight_centre(), lanes_left=1)
    road.lanes[:] = 0
    result = RoadCamera(road).observe(0.0, 0.0, 0.0, timestamp=0.0)
    alone = plan_frame(result, SIM_CAMERA, PlannerState(), now=0.0, speed_mps=8.0).plan
    tactic = Tactic(offset_m=None, route=(lane_strip(straight_centre(60.0, -5.0)),))
    told = plan_frame(result, SIM_CAMERA, PlannerState(), now=0.0, speed_mps=8.0,
                      tactic=tactic).plan
    assert np.array(alone.waypoints)[-1, 1] > 1.2  # toward the middle of the two lanes
    assert np.abs(np.array(told.waypoints)[:, 1]).max() <= 0.6
