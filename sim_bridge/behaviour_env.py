"""The behaviour layer's world: observations, actions and the physics-only MetaDrive env the DQN
trains in (docs/simulators.md, "Behaviour layer").

What is trained: every `DECISION_STEPS` MetaDrive steps (0.5 s) the policy picks one of
`ACTIONS`. The action sets a *target lane* (keep, one to the left, one to the right) and a
*speed mode* (cruise, or follow the lead car); an executor drives MetaDrive's car there on
ground truth (a PID on the target lane's centre line, like MetaDrive's own IDM policy, and a
speed controller). The planner's in-path rule always caps the speed (`in_path_cap`: stop before
a road user ahead in the ego or target lane and creep within `creep_within_m`, with
perception/driving/planning.py's own numbers), whatever the policy chose; only `follow`, which
knows the lead car's speed, trades the creep for a stopping distance to that car braking hard
(`follow_cap`). The rule policy is the same executor with "keep lane" always: our planner's
behaviour on this road ("follow" always is the second baseline). Three ground-truth
rules of the executor hold for both policies: we pass a car near ahead in the next lane at most
PASS_MARGIN_MPS faster than it (`passing_cap`), a car drifting into our lane near ahead is a
lead car whatever lane it is in (MetaDrive's traffic cuts in), and the fail-safe vetoes a lane
change into a lane with a car alongside or closing from behind (`lane_change_clear`: a stand-in
for the side and rear view a car has and our front camera has not); a vetoed change keeps the
lane.

At run time in the camera loop (`perception sim --behaviour dqn`) the same action becomes a
`Tactic` for our Planner: the target lane's centre as its preferred lateral offset and the
follow speed as a speed cap (sim_bridge/behaviour_policy.py).

For evaluation the policy may observe our perception instead (`make_env(config, scenes)`,
sim_bridge/behaviour_perception.py); the executor still drives on ground truth.

MetaDrive is imported lazily: the observation builder and the action mapping import everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from perception.driving.planning import PlannerConfig, stopping_speed

ACTIONS = ("keep_lane", "change_left", "change_right", "follow")
DECISION_STEPS = 5  # MetaDrive steps of 0.1 s per decision
STEP_S = 0.1
LEAD_RANGE_M = 80.0  # a lead car farther than this is "none"
SPEED_SCALE_MPS = 10.0
HARD_BRAKE_MPS2 = 3.0  # a deceleration above this is a hard brake
FOLLOW_TIME_GAP_S = 1.5
LEAD_BRAKE_MPS2 = 8.0  # the hardest a followed car is assumed to brake (follow_cap)
CUT_IN_AHEAD_M = 20.0  # a car this near ahead (bumper gap) ...
CUT_IN_ASIDE_M = 2.4  # ... with its centre this near our lane's centre is in our lane
PASS_WITHIN_M = 15.0  # passing a car this near ahead in the next lane ...
PASS_MARGIN_MPS = 4.0  # ... at most this much faster than it (it may pull out)
SIDE_AHEAD_M = 4.0  # a lane change needs nobody in the target lane from alongside to this ahead,
SIDE_BEHIND_M = 6.0  # nor behind nearer than this,
SIDE_CLOSING_S = 2.0  # nor nearer than this many seconds of its closing speed
SIDE_OVERLAP_M = 0.6  # a car whose centre is this far beyond a lane's line is still in it
PLANNER = PlannerConfig()
OBSERVATION_NAMES = (
    "ego_speed", "lateral_offset", "lane_width", "lane_left", "lane_right",
    "gap_left", "closing_left", "gap_ego", "closing_ego", "gap_right", "closing_right")
OBSERVATION_SIZE = len(OBSERVATION_NAMES)


@dataclass(frozen=True)
class LeadCar:
    """The nearest car ahead in one lane: bumper-to-bumper gap and its speed."""

    gap_m: float
    speed_mps: float


@dataclass(frozen=True)
class Scene:
    """What the behaviour layer knows at one moment (ground truth in training)."""

    speed_mps: float
    offset_m: float  # from the ego lane's centre, + left
    lane_width_m: float
    lane_left: bool
    lane_right: bool
    leads: tuple[LeadCar | None, LeadCar | None, LeadCar | None]  # left, ego, right lane


def observation(scene: Scene) -> np.ndarray:
    """The policy's input, scaled to about [-1, 1] (OBSERVATION_NAMES): a missing lead car is a
    gap of LEAD_RANGE_M closing at 0; a missing lane is a gap of 0 (no room there)."""
    values = [scene.speed_mps / SPEED_SCALE_MPS, scene.offset_m / scene.lane_width_m,
              scene.lane_width_m / 4.0, float(scene.lane_left), float(scene.lane_right)]
    for lead, exists in zip(scene.leads, (scene.lane_left, True, scene.lane_right), strict=True):
        if not exists:
            values += [0.0, 0.0]
        elif lead is None:
            values += [1.0, 0.0]
        else:
            values += [min(lead.gap_m, LEAD_RANGE_M) / LEAD_RANGE_M,
                       (scene.speed_mps - lead.speed_mps) / SPEED_SCALE_MPS]
    return np.asarray(values, np.float32)


@dataclass(frozen=True)
class Command:
    """What one action asks of the executor: the lane to be in (relative to the current
    target lane, clamped to the road), the speed to drive before the in-path cap, and whether
    it follows the ego lane's lead car (then `follow_cap` replaces the in-path creep)."""

    lane_shift: int
    target_speed_mps: float
    follow: bool = False


def command(action: int, scene: Scene, cruise_mps: float = PLANNER.cruise_speed_mps) -> Command:
    """An action as a target lane and speed; a change toward a lane that is not there keeps
    the lane. `follow` holds the ego lane's lead car's speed, less when nearer than
    FOLLOW_TIME_GAP_S (the gap closes back to it over ~2 s)."""
    name = ACTIONS[action]
    if name == "change_left":
        return Command(-1 if scene.lane_left else 0, cruise_mps)
    if name == "change_right":
        return Command(1 if scene.lane_right else 0, cruise_mps)
    lead = scene.leads[1]
    if name == "follow" and lead is not None:
        wanted_gap = FOLLOW_TIME_GAP_S * scene.speed_mps + PLANNER.stop_gap_m
        speed = lead.speed_mps + (lead.gap_m - wanted_gap) / 2.0
        return Command(0, float(np.clip(speed, 0.0, cruise_mps)), follow=True)
    return Command(0, cruise_mps)


def in_path_cap(gap_m: float | None, config: PlannerConfig = PLANNER) -> float:
    """The planner's in-path rule on a bumper gap (planning.in_path_limits): able to stop
    `stop_gap_m` short, and down to a creep within `creep_within_m`."""
    if gap_m is None:
        return math.inf
    creep = config.creep_speed_mps + stopping_speed(gap_m - config.creep_within_m, config)
    return min(stopping_speed(gap_m - config.stop_gap_m, config), creep)


def passing_cap(scene: Scene) -> float:
    """The speed cap for passing: at most PASS_MARGIN_MPS faster than a car less than
    PASS_WITHIN_M ahead in the next lane on either side. MetaDrive's traffic pulls into our lane
    slowly, from beside us; a car that much slower may be about to (both policies)."""
    return min((lead.speed_mps + PASS_MARGIN_MPS for lead in (scene.leads[0], scene.leads[2])
                if lead is not None and lead.gap_m < PASS_WITHIN_M), default=math.inf)


def follow_cap(lead: LeadCar, config: PlannerConfig = PLANNER) -> float:
    """The speed cap behind a lead car whose speed is known (`follow`): still able to stop
    `stop_gap_m` short of it if it brakes at LEAD_BRAKE_MPS2 this instant while we react for
    `reaction_s` and brake at `comfort_decel_mps2` (a responsibility-sensitive-safety
    distance). It replaces the in-path creep, which is there because one camera frame cannot
    tell a moving car from a stopped one; it is never below the cap for a stopped car."""
    room = lead.gap_m - config.stop_gap_m + lead.speed_mps ** 2 / (2 * LEAD_BRAKE_MPS2)
    return stopping_speed(room, config)


@dataclass
class DriveTally:
    """One episode's figures for `perception behaviour evaluate`."""

    steps: int = 0
    speed_sum: float = 0.0
    lane_changes: int = 0
    vetoed_changes: int = 0  # lane changes the fail-safe refused (lane_change_clear)
    hard_brakes: int = 0
    crashed: bool = False
    out_of_road: bool = False
    route_completion: float = 0.0
    distance_m: float = 0.0
    braking: bool = field(default=False, repr=False)  # within a hard brake (counted once)

    def summary(self) -> dict:
        return {"crashed": self.crashed, "out_of_road": self.out_of_road,
                "route_completion": self.route_completion, "distance_m": self.distance_m,
                "mean_speed_mps": self.speed_sum / max(self.steps, 1),
                "lane_changes": self.lane_changes, "vetoed_changes": self.vetoed_changes,
                "hard_brakes": self.hard_brakes}


@dataclass(frozen=True)
class BehaviourEnvConfig:
    map: str = "SCSCS"  # MetaDrive blocks; its default 3 lanes of 3.5 m
    traffic: float = 0.2
    start_seed: int = 0
    scenarios: int = 50
    route_m: float = 400.0
    max_decisions: int = 160  # 80 s


# reward terms
PROGRESS_PER_M = 0.1
SPEED_BONUS = 0.1  # per decision at cruise speed
CRASH_PENALTY = 5.0
OFF_ROAD_PENALTY = 5.0
HARD_BRAKE_PENALTY = 0.3
LANE_CHANGE_PENALTY = 0.15


def scene_of(agent: Any, others: list[Any]) -> Scene:
    """The scene from MetaDrive's ground truth: `agent` is its ego car, `others` the rest."""
    lanes = list(agent.navigation.current_ref_lanes)
    index = min(agent.lane_index[2], len(lanes) - 1)
    lane = lanes[index]
    _, lateral = lane.local_coordinates(agent.position)
    leads: list[LeadCar | None] = [None, None, None]
    heading = np.array([math.cos(agent.heading_theta), math.sin(agent.heading_theta)])
    roads = {lane.index[:2] for lane in lanes + list(agent.navigation.next_ref_lanes or [])}
    for vehicle in others:
        if vehicle.lane_index[:2] not in roads:  # another road (or the other way)
            continue
        # its lane index says which lane (also on the next road, where extrapolating the ego
        # lane's coordinates misplaces it on a bend); the distance along the ego's heading
        # says how far ahead
        offset = np.asarray(vehicle.position) - np.asarray(agent.position)
        slot = vehicle.lane_index[2] - index + 1  # 0 left, 1 ego, 2 right
        ahead = float(offset @ heading)
        gap = ahead - (agent.LENGTH + vehicle.LENGTH) / 2
        aside = abs(float(offset[0] * heading[1] - offset[1] * heading[0]))
        if slot in (0, 2) and ahead > 0 and gap < CUT_IN_AHEAD_M:
            # how far it sits off its own lane's centre toward ours (+ right in MetaDrive's
            # lane coordinates), measured along its lane, so that a bend does not count
            toward = vehicle.lane.local_coordinates(vehicle.position)[1] * (1 - slot)
            if lane.width - toward < CUT_IN_ASIDE_M:
                slot = 1  # drifting into our lane: ours, whatever its lane index says
        if (0 <= slot <= 2 and ahead > 0 and -1.0 < gap < LEAD_RANGE_M
                and aside < 2.5 * lane.width and (leads[slot] is None
                                                  or gap < leads[slot].gap_m)):
            leads[slot] = LeadCar(max(gap, 0.0), float(vehicle.speed))
    return Scene(float(agent.speed), -float(lateral), float(lane.width), index > 0,
                 index < len(lanes) - 1, (leads[0], leads[1], leads[2]))


def lane_change_clear(agent: Any, others: list[Any], lane: int) -> bool:
    """The fail-safe's check before moving into lane `lane` (an index on the ego's road):
    nobody there from alongside to SIDE_AHEAD_M ahead, nor behind within SIDE_BEHIND_M or
    SIDE_CLOSING_S of its closing speed. MetaDrive's ground truth, for both policies. Cars are
    placed in that lane's own coordinates (extended behind its start), not by their lane
    index: a car still on the previous road, or straddling the far line, counts."""
    target = list(agent.navigation.current_ref_lanes)[lane]
    ego_s, _ = target.local_coordinates(agent.position)
    for vehicle in others:
        s, lateral = target.local_coordinates(vehicle.position)
        if abs(lateral) > target.width / 2 + SIDE_OVERLAP_M:
            continue
        ahead = float(s - ego_s)
        gap = abs(ahead) - (agent.LENGTH + vehicle.LENGTH) / 2  # bumper to bumper
        if ahead >= 0 and gap < SIDE_AHEAD_M:
            return False
        closing = float(vehicle.speed) - float(agent.speed)
        if ahead < 0 and gap < max(SIDE_BEHIND_M, SIDE_CLOSING_S * closing):
            return False
    return True


def next_target_lane(agent: Any, others: list[Any], current: int, shift: int) -> tuple[int, bool]:
    """The target lane after a command's `shift` (clamped to the road), and whether the
    fail-safe vetoed the change (`lane_change_clear`: then the lane is kept)."""
    wanted = int(np.clip(current + shift, 0, len(agent.navigation.current_ref_lanes) - 1))
    if wanted == current or lane_change_clear(agent, others, wanted):
        return wanted, False
    return current, True


class SceneSource(Protocol):
    """Where the policy's scene comes from, when not ground truth (behaviour_perception.py):
    `config` adds to MetaDrive's, `start` follows each reset, `scene` is called per decision."""

    config: dict

    def start(self, md: Any) -> None: ...

    def scene(self, md: Any) -> Scene: ...


def make_env(config: BehaviourEnvConfig, scenes: SceneSource | None = None) -> Any:
    """The gymnasium env (MetaDrive, physics only) the DQN trains and is evaluated in. The
    policy observes ground truth (`scene_of`), or `scenes`' scene; the executor always drives
    on ground truth."""
    import gymnasium as gym
    from metadrive.component.vehicle.PID_controller import PIDController
    from metadrive.envs import MetaDriveEnv
    from metadrive.utils.math import wrap_to_pi

    class BehaviourEnv(gym.Env):
        observation_space = gym.spaces.Box(-5.0, 5.0, (OBSERVATION_SIZE,), np.float32)
        action_space = gym.spaces.Discrete(len(ACTIONS))

        def __init__(self) -> None:
            self.config = config
            self.md = MetaDriveEnv({
                "use_render": False, "log_level": 40, "map": config.map,
                "traffic_density": config.traffic, "num_scenarios": config.scenarios,
                "start_seed": config.start_seed, "horizon": None,
                "out_of_road_done": False, "crash_vehicle_done": False,
                "crash_object_done": False, **(scenes.config if scenes else {})})
            self.next_seed = config.start_seed

        def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
            """`options={"scenario": SEED}` picks MetaDrive's scenario; else they come in
            turn (`seed` seeds gymnasium's generator only, as stable-baselines3 expects)."""
            super().reset(seed=seed)
            scenario = (options or {}).get("scenario")
            if scenario is None:
                scenario = self.next_seed
                self.next_seed = (config.start_seed
                                  + (scenario - config.start_seed + 1) % config.scenarios)
            self.md.reset(seed=scenario)
            if scenes is not None:
                scenes.start(self.md)
            self.heading_pid = PIDController(1.7, 0.01, 3.5)
            self.lateral_pid = PIDController(0.3, 0.002, 0.05)
            self.target_lane = self.md.agent.lane_index[2]
            self.tally = DriveTally()
            self.decisions = 0
            self.target_speed = 0.0
            self.observed = self.observed_scene()
            return observation(self.observed), {}

        def close(self) -> None:
            self.md.close()

        # --- ground truth -----------------------------------------------------------------

        def lanes(self) -> list[Any]:
            return list(self.md.agent.navigation.current_ref_lanes)

        def scene(self) -> Scene:
            return scene_of(self.md.agent, self.others())

        def observed_scene(self) -> Scene:
            """What the policy sees: ground truth, or the scene source's."""
            return self.scene() if scenes is None else scenes.scene(self.md)

        def others(self) -> list[Any]:
            from metadrive.component.vehicle.base_vehicle import BaseVehicle

            return [o for o in self.md.engine.get_objects().values()
                    if isinstance(o, BaseVehicle) and o is not self.md.agent]

        # --- one decision -----------------------------------------------------------------

        def step(self, action: int) -> tuple:
            order = command(int(action), self.observed)  # the scene the policy saw
            before_lane = self.target_lane
            self.target_lane, vetoed = next_target_lane(self.md.agent, self.others(),
                                                        self.target_lane, order.lane_shift)
            self.tally.vetoed_changes += vetoed
            travelled = self.md.agent.navigation.travelled_length
            reward, done, hard = 0.0, False, False
            for _ in range(DECISION_STEPS):
                speed_before = float(self.md.agent.speed)
                info = self.md.step(self.drive(order))[-1]
                tally = self.tally
                tally.steps += 1
                speed = float(self.md.agent.speed)
                tally.speed_sum += speed
                braking = (speed_before - speed) / STEP_S > HARD_BRAKE_MPS2
                if braking and not tally.braking:
                    tally.hard_brakes += 1
                    hard = True
                tally.braking = braking
                tally.crashed |= bool(info.get("crash_vehicle") or info.get("crash_object")
                                      or info.get("crash_building"))
                tally.out_of_road |= bool(info.get("out_of_road"))
                tally.route_completion = float(info.get("route_completion", 0.0))
                tally.distance_m = float(self.md.agent.navigation.travelled_length)
                done = (tally.crashed or tally.out_of_road or info.get("arrive_dest", False)
                        or tally.distance_m >= config.route_m)
                if done:
                    break
            if self.target_lane != before_lane:
                self.tally.lane_changes += 1
            self.decisions += 1
            progress = self.md.agent.navigation.travelled_length - travelled
            reward += PROGRESS_PER_M * progress
            reward += SPEED_BONUS * min(float(self.md.agent.speed) / PLANNER.cruise_speed_mps, 1)
            reward -= CRASH_PENALTY * self.tally.crashed + OFF_ROAD_PENALTY * self.tally.out_of_road
            reward -= HARD_BRAKE_PENALTY * hard
            reward -= LANE_CHANGE_PENALTY * (self.target_lane != before_lane)
            truncated = not done and self.decisions >= config.max_decisions
            self.observed = self.observed_scene()
            return observation(self.observed), reward, bool(done), truncated, {
                "tally": self.tally}

        def drive(self, order: Command) -> list[float]:
            """One MetaDrive action toward the target lane at the order's speed, capped by the
            in-path rule for the nearest car ahead in the ego or the target lane (by
            `follow_cap` for the lead car that a `follow` order follows)."""
            agent, lanes = self.md.agent, self.lanes()
            self.target_lane = min(self.target_lane, len(lanes) - 1)
            lane = lanes[self.target_lane]
            s, lateral = lane.local_coordinates(agent.position)
            heading_error = wrap_to_pi(lane.heading_theta_at(s + 1) - agent.heading_theta)
            steer = (self.heading_pid.get_result(-heading_error)
                     + self.lateral_pid.get_result(-lateral))
            scene = self.scene()
            shift = self.target_lane - min(agent.lane_index[2], len(lanes) - 1)
            near = [scene.leads[1]] + ([scene.leads[1 + int(np.sign(shift))]] if shift else [])
            if order.follow and not shift and scene.leads[1] is not None:
                cap = follow_cap(scene.leads[1])
            else:
                cap = in_path_cap(min((lead.gap_m for lead in near if lead is not None),
                                      default=None))
            target = min(order.target_speed_mps, cap, passing_cap(scene))
            # speed up no faster than the planner does; slowing is never held back
            target = min(target, self.target_speed + PLANNER.speed_up_mps2 * STEP_S)
            self.target_speed = target
            pedal = float(np.clip(0.6 * (target - float(agent.speed)), -1.0, 1.0))
            return [float(np.clip(steer, -1.0, 1.0)), pedal]

    return BehaviourEnv()
