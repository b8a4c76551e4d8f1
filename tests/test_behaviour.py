"""The DQN behaviour layer (sim_bridge/behaviour_*.py) in this environment: the observation
builder (from ground truth and from a perceived frame), the action mapping, the Planner's
tactic hook on a synthetic road, the policy file's weights-only loading and its refusals.
MetaDrive runs in tests/test_behaviour_metadrive.py."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from perception.cli import main
from perception.driving.planning import (
    Planner,
    PlannerConfig,
    PlannerState,
    Tactic,
    plan_frame,
    stopping_speed,
)
from perception.errors import PerceptionError
from perception.lane_lines import fit_lane_boundaries
from sim_bridge.behaviour_env import (
    ACTIONS,
    OBSERVATION_SIZE,
    LeadCar,
    Scene,
    command,
    follow_cap,
    in_path_cap,
    lane_change_clear,
    observation,
    passing_cap,
    scene_of,
)
from sim_bridge.behaviour_perception import (
    EGO_LENGTH_M,
    FreshFrames,
    SceneMemory,
    scene_from_perception,
)
from sim_bridge.behaviour_policy import (
    BehaviourLayer,
    PolicyFileError,
    RulePolicy,
    load_policy,
    q_network,
    save_policy,
)
from sim_bridge.metadrive_sim import REAR_AXLE_M
from tests.synthetic_road import SIM_CAMERA, Car, Road, RoadCamera, straight_centre

CRUISE = PlannerConfig().cruise_speed_mps


LEAD = LeadCar(20.0, 8.0)


def scene(left=True, right=False, leads=(None, LEAD, None)) -> Scene:
    return Scene(10.0, 0.35, 3.5, left, right, leads)


def test_observation_scales_and_marks_missing_lanes_and_leads() -> None:
    obs = observation(scene(leads=(None, LeadCar(20.0, 8.0), LeadCar(5.0, 1.0))))
    assert obs.shape == (OBSERVATION_SIZE,) and obs.dtype == np.float32
    assert np.allclose(obs[:5], [1.0, 0.1, 0.875, 1.0, 0.0])
    assert np.allclose(obs[5:7], [1.0, 0.0])  # a left lane with nobody ahead: open road
    assert np.allclose(obs[7:9], [0.25, 0.2])  # 20 m, closing at 2 m/s
    assert np.allclose(obs[9:], [0.0, 0.0])  # no right lane: no room, whoever is "there"


def test_actions_map_to_a_lane_and_a_speed() -> None:
    s = scene()
    assert command(ACTIONS.index("keep_lane"), s).lane_shift == 0
    assert command(ACTIONS.index("change_left"), s).lane_shift == -1
    assert command(ACTIONS.index("change_right"), s).lane_shift == 0  # no lane there
    assert command(ACTIONS.index("keep_lane"), s).target_speed_mps == CRUISE
    follow = command(ACTIONS.index("follow"), s)
    # 20 m gap wanted 1.5 s * 10 m/s + 3 m = 18 m: a little faster than the lead's 8 m/s
    assert follow.lane_shift == 0 and follow.target_speed_mps == pytest.approx(9.0)
    assert follow.follow and not command(ACTIONS.index("keep_lane"), s).follow
    alone = scene(leads=(None, None, None))
    # nobody to follow: cruise, and the in-path rule (not the follow cap) stays in charge
    assert command(ACTIONS.index("follow"), alone) == command(ACTIONS.index("keep_lane"), alone)
    assert RulePolicy().act(observation(s)) == ACTIONS.index("keep_lane")
    assert RulePolicy("follow").act(observation(s)) == ACTIONS.index("follow")


def test_in_path_cap_is_the_planners_rule() -> None:
    assert in_path_cap(None) == np.inf
    assert in_path_cap(2.0) == 0.0  # within the stop gap
    assert in_path_cap(15.0) < 5.0 < in_path_cap(60.0)  # a creep near, faster far
    assert in_path_cap(10.0) <= in_path_cap(20.0) <= in_path_cap(40.0)


def test_passing_cap_limits_the_speed_past_a_slow_car_beside() -> None:
    slow_left = LeadCar(10.0, 1.0)  # nearly stopped, 10 m ahead in the next lane
    assert passing_cap(scene(leads=(slow_left, LEAD, None))) == pytest.approx(5.0)
    assert passing_cap(scene(leads=(None, LEAD, LeadCar(14.0, 6.0)))) == pytest.approx(10.0)
    # the nearer-than rule only: far, or only in our own lane, leaves the speed alone
    assert passing_cap(scene(leads=(LeadCar(40.0, 0.0), LeadCar(5.0, 0.0), None))) == np.inf


def test_follow_cap_keeps_a_stopping_distance_to_a_braking_lead() -> None:
    config = PlannerConfig()
    # a stopped car ahead: exactly the distance to stop short of it, never less than the
    # in-path rule allows
    assert follow_cap(LeadCar(15.0, 0.0)) == pytest.approx(
        stopping_speed(15.0 - config.stop_gap_m, config))
    assert follow_cap(LeadCar(15.0, 0.0)) >= in_path_cap(15.0)
    assert follow_cap(LeadCar(2.0, 0.0)) == 0.0  # within the stop gap
    # a moving car: faster than the creep, and still able to stop if it brakes at 8 m/s^2
    v = follow_cap(LeadCar(15.0, 8.0))
    assert in_path_cap(15.0) < v < 8.0
    ego_stops_in = v * config.reaction_s + v ** 2 / (2 * config.comfort_decel_mps2)
    lead_stops_in = 8.0 ** 2 / (2 * 8.0)
    assert ego_stops_in == pytest.approx(15.0 - config.stop_gap_m + lead_stops_in)
    assert follow_cap(LeadCar(10.0, 8.0)) < v < follow_cap(LeadCar(15.0, 12.0))


class StraightLane:
    """The part of a MetaDrive lane that the behaviour env reads: lane i of a straight road
    along +x, its centre at y = -3.5 i (MetaDrive numbers lanes from the left; its lateral
    coordinate is + to the right)."""

    width = 3.5

    def __init__(self, i: int, road: str = "road") -> None:
        self.index = (road, "next", i)

    def local_coordinates(self, position) -> tuple[float, float]:
        return position[0], -3.5 * self.index[2] - position[1]


class ArcLane(StraightLane):
    """Lane i of a road bending left around (0, RADIUS): it starts at x = 0 heading +x."""

    RADIUS = 40.0

    def radius(self) -> float:
        return self.RADIUS + 3.5 * self.index[2]

    def point(self, s: float) -> tuple[float, float]:
        angle = s / self.radius()
        return self.radius() * np.sin(angle), self.RADIUS - self.radius() * np.cos(angle)

    def local_coordinates(self, position) -> tuple[float, float]:
        dx, dy = position[0], position[1] - self.RADIUS
        return self.radius() * float(np.arctan2(dx, -dy)), float(np.hypot(dx, dy)) - self.radius()


def car(x: float, y: float, lane: int, speed: float = 8.0, lanes=None, road: str = "road",
        heading: float = 0.0) -> SimpleNamespace:
    """A MetaDrive vehicle's attributes as scene_of and lane_change_clear read them."""
    lanes = lanes or [StraightLane(i) for i in range(3)]
    own = type(lanes[0])(lane, road)
    return SimpleNamespace(position=(x, y), heading_theta=heading, lane_index=own.index,
                           lane=own, LENGTH=4.5, speed=speed, navigation=SimpleNamespace(
                               current_ref_lanes=lanes, next_ref_lanes=[]))


def test_a_car_drifting_into_our_lane_is_our_lead_whatever_its_lane() -> None:
    ego = car(0.0, -3.5, 1)
    centred = car(10.0, -7.0, 2)  # the right lane's centre: its lead
    assert scene_of(ego, [centred]).leads == (None, None, LeadCar(5.5, 8.0))
    drifting = car(10.0, -5.5, 2)  # still "lane 2" to MetaDrive, 2 m from our lane's centre
    assert scene_of(ego, [drifting]).leads[1] == LeadCar(5.5, 8.0)
    far = car(40.0, -5.5, 2)  # beyond CUT_IN_AHEAD_M: its own lane's
    assert scene_of(ego, [far]).leads[2] is not None and scene_of(ego, [far]).leads[1] is None


def test_on_a_bend_a_car_centred_in_the_next_lane_stays_in_its_lane() -> None:
    lanes = [ArcLane(i) for i in range(3)]
    ego = car(*lanes[1].point(0.0), 1, lanes=lanes)
    outer = lanes[2].point(16.0)  # 16 m on: the bend brings it within 2 m of our heading line
    assert abs(outer[1] - ego.position[1]) < 2.4
    assert scene_of(ego, [car(*outer, 2, lanes=lanes)]).leads[1] is None
    assert scene_of(ego, [car(*outer, 2, lanes=lanes)]).leads[2] is not None


def test_the_fail_safe_vetoes_a_lane_change_beside_or_ahead_of_a_faster_car() -> None:
    ego = car(0.0, -3.5, 1, speed=8.0)
    assert lane_change_clear(ego, [], 0)
    assert not lane_change_clear(ego, [car(1.0, 0.0, 0)], 0)  # alongside
    assert not lane_change_clear(ego, [car(6.0, 0.0, 0)], 0)  # 1.5 m ahead
    assert not lane_change_clear(ego, [car(-9.0, 0.0, 0)], 0)  # 4.5 m behind
    assert lane_change_clear(ego, [car(-16.0, 0.0, 0, speed=8.0)], 0)  # 11.5 m, same speed
    assert not lane_change_clear(ego, [car(-16.0, 0.0, 0, speed=15.0)], 0)  # closing at 7 m/s
    assert lane_change_clear(ego, [car(20.0, 0.0, 0, speed=2.0)], 0)  # ahead: the in-path cap's
    assert lane_change_clear(ego, [car(1.0, -7.0, 2)], 0)  # the other side's car does not count
    # by where it is, not by its lane index: still on the previous road, or over the far line
    assert not lane_change_clear(ego, [car(-9.0, 0.0, 0, road="previous")], 0)
    assert not lane_change_clear(ego, [car(1.0, 2.0, 0)], 0)  # 2 m off lane 0's centre


class AlwaysLeft:
    def act(self, observation: np.ndarray) -> int:
        return ACTIONS.index("change_left")


def test_the_camera_loops_behaviour_layer_keeps_the_veto() -> None:
    ego = car(0.0, -3.5, 1)
    layer = BehaviourLayer(AlwaysLeft())
    blocked = layer.tactic(ego, [car(0.5, 0.0, 0)])  # someone beside us on the left
    assert layer.target_lane == 1 and blocked.offset_m == pytest.approx(0.0)
    free = BehaviourLayer(AlwaysLeft()).tactic(ego, [])
    assert free.offset_m == pytest.approx(3.5)  # the left lane's centre, 3.5 m to our left
    # keeping the lane steers back toward its centre (it once pushed the car further off)
    kept = BehaviourLayer(RulePolicy()).tactic(car(0.0, -3.8, 1), [])
    assert kept.offset_m == pytest.approx(0.3)  # 0.3 m right of the centre: go 0.3 m left


def test_a_camera_that_returns_the_same_pixels_after_moving_is_refused() -> None:
    fresh, image = FreshFrames(), np.zeros((4, 4, 3), np.uint8)
    fresh.check(image, np.zeros(2))
    fresh.check(image.copy(), np.array([0.01, 0.0]))  # stopped: the same picture is right
    fresh.check(image + 1, np.array([1.0, 0.0]))  # moved, and the picture changed
    with pytest.raises(PerceptionError, match="previous frame"):
        fresh.check(image + 1, np.array([2.0, 0.0]))


def plan(road: Road, tactic: Tactic | None):
    result = RoadCamera(road).observe(0.0, 0.0, 0.0, timestamp=0.0)
    return plan_frame(result, SIM_CAMERA, PlannerState(), now=0.0, speed_mps=10.0,
                      tactic=tactic).plan


def test_a_tactic_moves_the_path_a_lane_and_caps_the_speed() -> None:
    road = Road(straight_centre(), lanes_left=1, lanes_right=1)
    kept = np.array(plan(road, None).waypoints)
    assert np.abs(kept[:, 1]).max() < 0.15  # the rules: the lane centre
    changed = plan(road, Tactic(offset_m=3.6, max_speed_mps=7.0))
    path = np.array(changed.waypoints)
    assert path[-1, 1] == pytest.approx(3.6, abs=0.3)  # ends in the left lane's centre
    assert changed.target_speed_mps == 7.0
    assert "behaviour: at most 7.0 m/s" in changed.reasons


def test_the_in_path_rule_overrides_a_tactic() -> None:
    road = Road(straight_centre(), lanes_left=1, cars=[Car(20.0, 0.0)])
    fast = plan(road, Tactic(max_speed_mps=30.0))
    assert fast.target_speed_mps < 7.0
    assert any(r.startswith("car in path at") for r in fast.reasons)


def test_policy_round_trip_weights_only(tmp_path) -> None:
    torch.manual_seed(0)
    network = q_network(OBSERVATION_SIZE, len(ACTIONS))
    path = tmp_path / "dqn.pt"
    save_policy(network.state_dict(), path, {"seed": 0})
    assert json.loads(path.with_suffix(".json").read_text())["observation_size"] == 11
    policy = load_policy(path)
    obs = observation(scene())
    expected = network(torch.as_tensor(obs)[None])[0].detach().numpy()
    assert np.allclose(policy.q_values(obs), expected)
    assert policy.act(obs) == int(np.argmax(expected))


def test_bad_policy_files_are_refused_in_one_line(tmp_path) -> None:
    path = tmp_path / "dqn.pt"
    save_policy(q_network(OBSERVATION_SIZE, len(ACTIONS)).state_dict(), path, {})
    meta = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps(meta | {"observation_size": 7}))
    with pytest.raises(PolicyFileError, match="made for 7 observations"):
        load_policy(path)
    path.with_suffix(".json").write_text(json.dumps(meta))
    torch.save(q_network(7, len(ACTIONS)).state_dict(), path)  # another network's tensors
    with pytest.raises(PolicyFileError, match="not this policy's weights"):
        load_policy(path)
    path.write_bytes(b"not a torch file")
    with pytest.raises(PolicyFileError, match="not this policy's weights"):
        load_policy(path)
    torch.save({"code": RulePolicy()}, path)  # a pickle of an object: weights-only refuses
    with pytest.raises(PolicyFileError, match="not this policy's weights"):
        load_policy(path)
    with pytest.raises(PolicyFileError, match="not found"):
        load_policy(tmp_path / "missing.pt")


def test_cli_refuses_a_bad_policy_with_exit_2(tmp_path, capsys) -> None:
    bad = tmp_path / "dqn.pt"
    bad.write_bytes(b"garbage")
    bad.with_suffix(".json").write_text("[1, 2]")
    assert main(["behaviour", "evaluate", "--policy", str(bad), "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a behaviour policy's JSON" in err
    assert main(["behaviour", "evaluate", "--policy", str(bad), "--traffic", "1.5"]) == 2
    assert "must be in [0, 1]" in capsys.readouterr().err


def perceived(road: Road, speed: float, memory: SceneMemory, image: np.ndarray | None = None
              ) -> Scene:
    """A synthetic frame through our Planner (lanes and road users placed as when it drives),
    then mapped to the behaviour layer's scene."""
    result = RoadCamera(road).observe(0.0, 0.0, 0.0, timestamp=0.0)
    result.lane_boundaries = fit_lane_boundaries(result.lanes, result.width, result.height)
    Planner(SIM_CAMERA).step(result, 0.0, speed)
    image = np.full((360, 640, 3), 128, np.uint8) if image is None else image
    return scene_from_perception(result, image, SIM_CAMERA, speed, memory)


def test_perception_scene_has_the_lanes_and_the_road_users_per_lane() -> None:
    road = Road(straight_centre(), lane_width=3.6, lanes_left=1, lanes_right=1,
                cars=[Car(30.0, 0.0), Car(20.0, 3.6)])
    memory = SceneMemory()
    seen = perceived(road, 10.0, memory)
    assert seen.speed_mps == 10.0  # the speedometer's
    assert seen.lane_width_m == pytest.approx(3.6, abs=0.3)
    assert seen.offset_m == pytest.approx(0.0, abs=0.2)
    assert seen.lane_left and seen.lane_right
    left, ego, right = seen.leads
    assert right is None
    # bumper gaps: the car's rear edge less the ego's front (rear axle + half its length)
    front = REAR_AXLE_M + EGO_LENGTH_M / 2
    assert ego.gap_m == pytest.approx(30.0 - front, rel=0.15)
    assert left.gap_m == pytest.approx(20.0 - front, rel=0.15)
    assert ego.speed_mps == left.speed_mps == 10.0  # first sight: not closing
    # half a second later both gaps are 2 m shorter: closing at 4 m/s
    road = Road(straight_centre(), lane_width=3.6, lanes_left=1, lanes_right=1,
                cars=[Car(28.0, 0.0), Car(18.0, 3.6)])
    later = perceived(road, 10.0, memory)
    assert later.leads[1].speed_mps == pytest.approx(6.0, abs=1.5)
    assert later.leads[0].speed_mps == pytest.approx(6.0, abs=1.5)
    obs = observation(later)
    assert obs.shape == (OBSERVATION_SIZE,) and obs[8] == pytest.approx(0.4, abs=0.15)


def test_perception_scene_without_lanes_beside_or_across_a_yellow_line() -> None:
    road = Road(straight_centre(), lane_width=3.6, lanes_left=1)
    memory = SceneMemory()
    seen = perceived(road, 5.0, memory)
    assert seen.lane_left and not seen.lane_right and seen.leads == (None, None, None)
    result = RoadCamera(road).observe(0.0, 0.0, 0.0, timestamp=0.0)
    result.lane_boundaries = fit_lane_boundaries(result.lanes, result.width, result.height)
    image = np.full((360, 640, 3), 128, np.uint8)
    for boundary in result.lane_boundaries:
        if boundary.position == "ego_left":  # paint it yellow (BGR)
            for u, v in boundary.image_points:
                image[int(round(v)), int(round(u))] = (0, 200, 230)
    Planner(SIM_CAMERA).step(result, 0.0, 5.0)
    assert not scene_from_perception(result, image, SIM_CAMERA, 5.0, SceneMemory()).lane_left


def test_cli_refuses_bad_observe_and_route_with_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["behaviour", "evaluate", "--observe", "eyes"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'eyes'" in capsys.readouterr().err
    assert main(["behaviour", "evaluate", "--route-m", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--route-m -1: must be > 0" in err
