"""The planner: one frame's perception -> a path, a speed and the controls, or a safe stop.

    planner = Planner.for_models(camera, specs)   # one per car (or stream of frames)
    plan = planner.step(result, now, speed_mps)   # every frame; the plan is also result.plan

1. Fail-safe first: no result, a result older than the deadline, or no drivable-area mask ->
   `safe_stop` (empty path, brake ramping up smoothly). Never a guessed path.
2. Bird's-eye view (bev.py) -> a cost grid: free cells (drivable, seen, away from obstacle
   footprints grown by half the car's width and a margin), lane lines, clearance in metres.
3. Candidate paths: an arc of curvature k from the car, with a smooth (quintic: zero slope
   and curvature at both ends) sideways move to offset d over length L along it; 37 offsets x
   31 curvatures x 3 lengths. Each is scored on free length, staying between lane lines,
   centring (clearance), curvature and closeness to the previous plan; the best one's free
   part becomes the waypoints, one per metre.
4. Speed: the least of cruise speed, the curvature limit, the time gap to an obstacle on the
   path, being able to stop before the end of the free path, and a stop sign.
5. Control (control.py): pure pursuit on the waypoints and a PID on the speed.

`Planner` owns everything carried from frame to frame (the previous plan, the speed PID, the
stop-sign wait, the last result); `plan_frame` is the pure step it wraps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import cv2
import numpy as np

from perception.driving.bev import BevGrid, BirdsEye, birdseye, is_ego_hood
from perception.driving.camera import CameraModel, fit_to_frame
from perception.driving.control import ControlConfig, PidState, pure_pursuit_steer, speed_pid
from perception.driving.corridor import box_in_corridor, corridor_mask, horizon_row
from perception.driving.distance import DistanceEstimate, annotate_distances
from perception.driving.hood import HoodEstimator, drop_hood, hood_mask
from perception.driving.horizon import HorizonCheck, check_still
from perception.driving.lanes import lanes_on_ground
from perception.errors import PerceptionError
from perception.lane_lines import fit_lane_boundaries
from perception.modelspec import ModelSpec
from perception.results import Control, FrameResult, Plan, PlanObstacle


@dataclass(frozen=True)
class PlannerConfig:
    grid: BevGrid = BevGrid()
    deadline_s: float = 0.5  # perception older than this is stale
    cruise_speed_mps: float = 12.0
    max_lateral_accel_mps2: float = 2.0
    comfort_decel_mps2: float = 2.5
    speed_up_mps2: float = 1.5  # how fast the target speed may rise
    time_gap_s: float = 2.0
    stop_gap_m: float = 3.0  # bumper to obstacle (or stop line) when stopped
    front_m: float = 3.8  # rear axle (vehicle origin) to the front bumper
    half_width_m: float = 0.95
    margin_m: float = 0.3
    hood_search_m: float = 8.0  # how far beyond the first seen row the road may start (hood)
    min_free_m: float = 2.0  # less free road than this beyond the hood -> nothing ahead
    goal_m: float = 30.0  # free length that counts as a full path
    step_m: float = 0.5
    offsets_m: tuple[float, ...] = tuple(np.round(np.arange(-3.6, 3.61, 0.2), 2))
    curvatures: tuple[float, ...] = tuple(np.round(np.arange(-0.06, 0.0601, 0.004), 3))
    transition_m: tuple[float, ...] = (8.0, 14.0, 20.0)
    lane_halo_m: float = 0.2  # lane lines count this much wider on each side
    centre_cap_m: float = 1.8  # clearance beyond this earns nothing more
    centre_decay_m: float = 10.0  # centring weighs a point by exp(-x / this)
    side_window_m: float = 4.0  # centring counts a point only if bounded this near on both sides
    w_length: float = 3.0
    w_lane: float = 3.0
    w_centre: float = 4.0
    w_curvature: float = 10.0
    w_consistency: float = 0.5
    safe_stop_brake: float = 0.6
    brake_rate_per_s: float = 2.0
    stop_sign_wait_s: float = 2.0
    blind_speed_mps: float = 5.0  # speed cap when no detector runs
    reaction_s: float = 1.0  # perception latency and actuation before braking starts
    creep_within_m: float = 20.0  # an in-path road user this near (camera distance): creep
    creep_speed_mps: float = 3.0
    control: ControlConfig = ControlConfig()


@dataclass(frozen=True)
class Tactic:
    """A wish for the next frames from above the planner: a behaviour layer's
    (sim_bridge/behaviour_policy.py) and the navigation's. Prefer paths that are `offset_m` to
    the side (+ left; a lane change is one lane width; None: no preference) after the longest
    sideways move, and that keep the whole car on the `route`'s ground all along (polygons of
    (x, y) points in the vehicle frame: the road the navigation follows), each costing
    `weight` per metre away from it; drive no faster than `max_speed_mps`. The fail-safe and
    the in-path and curve limits still apply: they only ever lower the speed. The route picks
    the road at a fork; where on that road to drive is still the perception's."""

    offset_m: float | None = 0.0
    max_speed_mps: float = math.inf
    weight: float = 3.0  # > (w_lane + w_centre) / lane width: a lane line may be crossed
    route: tuple[np.ndarray, ...] = ()


@dataclass(frozen=True)
class PlannerState:
    """What the planner remembers between frames."""

    previous: Plan | None = None
    time: float | None = None  # `now` of the previous call
    pid: PidState = PidState()
    stopped_at_sign_since: float | None = None
    sign_cleared: bool = False  # stopped long enough at the sign in view: may go


@dataclass
class PlanOutput:
    plan: Plan
    state: PlannerState
    bev: BirdsEye | None  # the grid the plan was made on (for pictures); None on early stops


@dataclass
class CostGrid:
    free: np.ndarray  # bool: drivable, seen, clear of obstacles
    obstacle: np.ndarray  # bool: grown obstacle footprints
    lane: np.ndarray  # bool: lane-line cells
    clearance_m: np.ndarray  # float: distance to the nearest non-free or lane cell
    boxed: np.ndarray  # bool: a non-free or lane cell within side_window_m left and right
    start_x: float  # the road is taken as free up to here (under the hood / below the image)


@dataclass
class Candidate:
    points: np.ndarray  # (M, 2) the free part of the path, every step_m
    curvature: np.ndarray  # (M,)
    s: np.ndarray  # (M,) arc length
    free_length_m: float
    blocked_by: str | None  # obstacle label, "edge" (no drivable road), None (end of view)
    score: float


class Planner:
    """Plans one car's frames in order; holds all the planning state from frame to frame."""

    def __init__(self, camera: CameraModel, config: PlannerConfig = PlannerConfig(),
                 detections_available: bool = True) -> None:
        self.camera, self.config = camera, config
        self.detections_available = detections_available  # False: obstacles unseen, go slow
        self.tactic: Tactic | None = None  # set by a behaviour layer; None: the rules alone
        self.reset()

    @classmethod
    def for_models(cls, camera: CameraModel, specs: Sequence[ModelSpec],
                   config: PlannerConfig = PlannerConfig()) -> Planner:
        """A planner for what these models see; a set without a segmentation model is refused
        (see `check_plannable`)."""
        return cls(camera, config, check_plannable(specs))

    def reset(self, still: bool = False) -> None:
        """Forget everything carried from frame to frame: the next frame starts a new drive
        (a new log), or is an unrelated still (`still`: judged alone, e.g. its camera check)."""
        self.state = PlannerState()
        self.still = still
        self.last_result: FrameResult | None = None
        self.last_camera = self.camera
        self.bev: BirdsEye | None = None  # the grid of the last plan (None on early stops)
        self.horizon = HorizonCheck()
        self.hood = HoodEstimator()

    def step(self, result: FrameResult | None, now: float, speed_mps: float | None = None,
             image: np.ndarray | None = None) -> Plan:
        """The plan at time `now` (the clock of `result.timestamp`) for a new result, or, with
        None, for the last one: its age decides whether it is still usable or a safe stop.

        A new result is first made to fit the camera (`fit_to_frame`: CameraError when it
        cannot), loses what lies on our own hood (the camera's polygon, or one learnt from the
        frames, `image`, of a drive), gets its lane boundaries on the ground and the camera
        check; planning then sets the distances, `in_path`, `plan` and `timings_ms["plan"]`.
        """
        started = time.perf_counter()
        if result is not None:
            camera = fit_to_frame(self.camera, result.width, result.height)
            hood = hood_mask(camera)
            if hood is None and camera.hood is None and image is not None and not self.still:
                hood = self.hood.update(image)
            drop_hood(result, hood)
            if result.lanes is not None and (hood is not None or not result.lane_boundaries):
                result.lane_boundaries = fit_lane_boundaries(result.lanes, result.width,
                                                             result.height)
            result.lane_boundaries, result.ego_lane = lanes_on_ground(result.lane_boundaries,
                                                                      camera)
            result.camera_check = (check_still(result, camera) if self.still
                                   else self.horizon.update(result, camera))
            self.last_result, self.last_camera = result, camera
        output = plan_frame(self.last_result, self.last_camera, self.state, now, speed_mps,
                            self.config, self.detections_available, self.tactic)
        self.state, self.bev = output.state, output.bev
        if result is not None:
            result.plan = output.plan
            result.timings_ms["plan"] = (time.perf_counter() - started) * 1e3
        return output.plan


def check_plannable(specs: Sequence[ModelSpec]) -> bool:
    """Whether a set of models can be planned on, and whether it detects road users.

    Without a segmentation model there is no drivable area and every plan would be a safe
    stop: a PerceptionError, before anything runs. Without a detector, plans are `degraded`.
    """
    if not any(spec.segments for spec in specs):
        names = ", ".join(spec.name for spec in specs) or "none"
        raise PerceptionError(f"planning needs a segmentation model for the drivable area "
                              f"(e.g. twinlitenet); the models are: {names}")
    return any(spec.detects for spec in specs)


# --- fail-safe ---------------------------------------------------------------------------------

def safe_stop(reasons: list[str], state: PlannerState, now: float, dt: float,
              config: PlannerConfig, bev: BirdsEye | None = None) -> PlanOutput:
    """Brake with a ramp up to `safe_stop_brake`, throttle off, steering eased to straight."""
    previous = state.previous.control if state.previous else Control(steer=0, throttle=0, brake=0)
    brake = min(config.safe_stop_brake, max(previous.brake, 0.1) + config.brake_rate_per_s * dt)
    control = Control(steer=float(np.clip(previous.steer * 0.5, -1, 1)), throttle=0.0,
                      brake=float(brake))
    plan = Plan(status="safe_stop", reasons=reasons, waypoints=[], target_speed_mps=0.0,
                control=control, obstacles=[] if bev is None else obstacles_of(bev))
    return PlanOutput(plan, replace(state, previous=plan, time=now, pid=PidState()), bev)


def obstacles_of(bev: BirdsEye) -> list[PlanObstacle]:
    return [PlanObstacle(x=round(o.x, 2), y=round(o.y, 2), width=round(o.width, 2), label=o.label)
            for o in bev.obstacles]


# --- cost grid and candidates ----------------------------------------------------------------

def cost_grid(bev: BirdsEye, config: PlannerConfig) -> CostGrid | None:
    """The grid the candidates are scored on; None when no drivable road is seen ahead."""
    g = bev.grid
    r = g.metres_per_pixel
    obstacle = np.zeros((g.rows, g.cols), np.uint8)
    grow = config.half_width_m + config.margin_m
    for ob in bev.obstacles:
        corners = g.to_pixel(np.array([ob.x - config.margin_m, ob.x + ob.length + config.margin_m]),
                             np.array([ob.y + ob.width / 2 + grow, ob.y - ob.width / 2 - grow]))
        (u0, v1), (u1, v0) = np.floor(corners).astype(int)
        cv2.rectangle(obstacle, (u0, v0), (u1, v1), 1, -1)
    drivable = (bev.drivable > 0) & (bev.visible > 0)
    lane = np.zeros_like(drivable)
    if bev.lanes is not None:  # widen thin lines so 0.5 m path samples cannot step over them
        size = 2 * int(round(config.lane_halo_m / r)) + 1
        lane = cv2.dilate(bev.lanes, np.ones((size, size), np.uint8)) > 0
    free = drivable & (obstacle == 0)
    open_space = (free & ~lane).astype(np.uint8)
    clearance = cv2.distanceTransform(open_space, cv2.DIST_L2, 5) * r
    boxed = bounded_both_sides(open_space == 0, int(round(config.side_window_m / r)))

    # Where does the road start? The first rows ahead of the car may be hidden by the hood or
    # below the image: take the first seen row whose centre strip is mostly drivable.
    centre_cols = np.abs(g.cell_centres()[1][0]) <= config.half_width_m
    seen_rows = np.flatnonzero(bev.visible[:, centre_cols].any(axis=1))
    if len(seen_rows) == 0:
        return None
    x_rows = g.x_max - (np.arange(g.rows) + 0.5) * r
    near_x = x_rows[seen_rows.max()]
    road_rows = np.flatnonzero((drivable[:, centre_cols].mean(axis=1) > 0.5)
                               & (x_rows <= near_x + config.hood_search_m) & (x_rows >= near_x))
    if len(road_rows) == 0:
        return None
    start_x = float(x_rows[road_rows.max()] + r / 2)  # far edge of that row
    return CostGrid(free, obstacle > 0, lane, clearance, boxed, start_x)


def bounded_both_sides(bounded: np.ndarray, window: int) -> np.ndarray:
    """Cells with a bounded cell within `window` columns on their left and on their right.

    Centring is judged only there: in the gap of a broken lane line the nearest bound on that
    side is the far edge of the next lane, and counting such rows pulls the path toward the
    broken line (0.2 m off-centre in the CARLA fake before this).
    """
    cols = bounded.shape[1]
    before = np.pad(np.cumsum(bounded, axis=1), ((0, 0), (1, 0)))  # before[:, k]: in cols < k
    c = np.arange(cols)
    left = before[:, c] - before[:, np.maximum(c - window, 0)]
    right = before[:, np.minimum(c + 1 + window, cols)] - before[:, c + 1]
    return (left > 0) & (right > 0)


@dataclass(frozen=True)
class Candidates:
    """Every candidate path, sampled every step_m of arc; they depend only on the config, so
    they are made once and cached."""

    s: np.ndarray  # (N,) arc length along the reference arc
    x: np.ndarray  # (C, N) vehicle-frame points
    y: np.ndarray
    curvature: np.ndarray  # (C, N) path curvature, 1/m, + left
    rows: np.ndarray  # (C, N) grid cell of each point
    cols: np.ndarray
    inside: np.ndarray  # (C, N) the point lies on the grid


@lru_cache(maxsize=4)
def candidates(config: PlannerConfig) -> Candidates:
    """An arc of curvature k from the car, with a smooth sideways move d * q(s / L) along its
    normal: q(u) = 10u^3 - 15u^4 + 6u^5 starts and ends with zero slope and curvature."""
    s = np.arange(config.step_m, config.grid.x_max + 10.0, config.step_m)
    d, k, length = (a.ravel()[:, None] for a in np.meshgrid(
        np.array(config.offsets_m), np.array(config.curvatures), np.array(config.transition_m),
        indexing="ij"))
    u = np.clip(s[None, :] / length, 0.0, 1.0)
    q = u**3 * (10 - 15 * u + 6 * u**2)
    q2 = (60 * u - 180 * u**2 + 120 * u**3) / length**2  # d2q/ds2
    heading = k * s[None, :]
    safe_k = np.where(np.abs(k) < 1e-9, 1.0, k)
    along = np.where(np.abs(k) < 1e-9, s[None, :], np.sin(heading) / safe_k)
    across = np.where(np.abs(k) < 1e-9, 0.0, (1 - np.cos(heading)) / safe_k)
    x = along - d * q * np.sin(heading)
    y = across + d * q * np.cos(heading)
    curvature = np.broadcast_to(k + d * q2, x.shape)
    rows, cols, inside = config.grid.to_cell(x, y)
    return Candidates(s, x, y, curvature, rows, cols, inside)


def score_candidates(cost: CostGrid, bev: BirdsEye, previous: np.ndarray | None,
                     config: PlannerConfig, tactic: Tactic | None = None) -> Candidate | None:
    """The best candidate, or None when none has `min_free_m` of free road beyond the hood.

    `previous` is the last plan's path moved into the current vehicle frame; a `tactic` adds
    its cost for ending away from its offset or off its route.
    """
    paths = candidates(config)
    s, x, y, rows, cols, inside = paths.s, paths.x, paths.y, paths.rows, paths.cols, paths.inside
    n = len(s)
    assumed = x < cost.start_x
    # The unseen road under the hood is taken as free, but never where a road user stands.
    on_obstacle = inside & cost.obstacle[rows, cols]
    ok = (assumed & ~on_obstacle) | (inside & cost.free[rows, cols])
    first_block = np.where((~ok).any(axis=1), (~ok).argmax(axis=1), n)
    before = np.arange(n)[None, :] < first_block[:, None]
    free_length = np.where(first_block > 0, s[np.maximum(first_block - 1, 0)], 0.0)
    hood_length = (assumed & before).sum(axis=1) * config.step_m

    judged = before & ~assumed
    lane_points = (judged & cost.lane[rows, cols]).sum(axis=1)
    centred = judged & cost.boxed[rows, cols]
    near = centred * np.exp(-s / config.centre_decay_m)[None, :]  # the near road matters most
    centring = (near * np.minimum(cost.clearance_m[rows, cols], config.centre_cap_m)).sum(
        axis=1) / np.maximum(near.sum(axis=1), 1e-9) / config.centre_cap_m
    peak_curvature = np.abs(paths.curvature).max(axis=1)
    score = (config.w_length * np.minimum(free_length, config.goal_m) / config.goal_m
             - config.w_lane * np.minimum(lane_points / 3.0, 1.0)
             + config.w_centre * centring
             - config.w_curvature * peak_curvature)
    if previous is not None and len(previous) >= 2:
        lo, hi = max(previous[0, 0], cost.start_x), min(previous[-1, 0], 25.0)
        span = (x >= lo) & (x <= hi) & before
        prev_y = np.interp(x, previous[:, 0], previous[:, 1])
        change = (np.abs(y - prev_y) * span).sum(axis=1) / np.maximum(span.sum(axis=1), 1)
        score -= config.w_consistency * change
    after = (s >= max(config.transition_m)) & (s <= config.goal_m)  # the sideways move done
    if tactic is not None and tactic.offset_m is not None:
        score -= tactic.weight * np.abs(y[:, after] - tactic.offset_m).mean(axis=1)
    if tactic is not None and tactic.route:  # the whole path: the car must not leave it anywhere
        off_route = off_route_m(tactic.route, config.grid, config.half_width_m + config.margin_m)
        near = s <= config.goal_m
        score -= tactic.weight * (off_route[rows[:, near], cols[:, near]]
                                  * inside[:, near]).mean(axis=1)
    score = np.where(free_length - hood_length >= config.min_free_m, score, -np.inf)
    best = int(np.argmax(score))
    if not np.isfinite(score[best]):
        return None
    end = first_block[best]
    points = np.column_stack([x[best, :end], y[best, :end]])
    return Candidate(points, paths.curvature[best, :end], s[:end], float(free_length[best]),
                     blocked_by(best, end, paths, cost, bev), float(score[best]))


def off_route_m(route: Sequence[np.ndarray], grid: BevGrid, keep_m: float) -> np.ndarray:
    """Each grid cell's distance (m) from where the car's centre keeps the whole car `keep_m`
    (its half width and margin) inside the route's ground (0 there); 0 everywhere when the
    route is not on the grid."""
    on_route = np.zeros((grid.rows, grid.cols), np.uint8)
    cv2.fillPoly(on_route, [np.round(grid.to_pixel(polygon[:, 0], polygon[:, 1])).astype(np.int32)
                            for polygon in route], 1)
    if not on_route.any():
        return np.zeros(on_route.shape, np.float32)
    size = 2 * int(round(keep_m / grid.metres_per_pixel)) + 1
    inner = cv2.erode(on_route, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    if inner.any():  # else a road narrower than the car: the route's ground itself
        on_route = inner
    return cv2.distanceTransform(1 - on_route, cv2.DIST_L2, 5) * grid.metres_per_pixel


def blocked_by(best: int, end: int, paths: Candidates, cost: CostGrid,
               bev: BirdsEye) -> str | None:
    """What ends the chosen path: an obstacle's label when its footprint lies within 2 m past
    the end (the road hidden behind a car ends a path just before its footprint), "edge" when
    the seen road is not drivable, None when the path just runs out of the camera's view."""
    n = len(paths.s)
    if end >= n:
        return None
    r, c = paths.rows[best, end], paths.cols[best, end]
    if not paths.inside[best, end] or not bev.visible[r, c]:
        return None
    ahead = slice(end, min(n, end + 5))
    hits = paths.inside[best, ahead] & cost.obstacle[paths.rows[best, ahead],
                                                     paths.cols[best, ahead]]
    if hits.any():
        i = end + int(np.argmax(hits))
        return nearest_obstacle_label(bev, paths.x[best, i], paths.y[best, i])
    return "edge"


def previous_path(previous: Plan | None, speed: float, dt: float,
                  config: PlannerConfig) -> np.ndarray | None:
    """The last plan's waypoints in today's vehicle frame, by dead reckoning: the car moved
    speed * dt along the arc its last steering command describes."""
    if previous is None or len(previous.waypoints) < 2:
        return None
    vehicle = config.control.vehicle
    curvature = -math.tan(previous.control.steer * math.radians(vehicle.max_steer_deg)) \
        / vehicle.wheelbase_m
    distance, turn = speed * dt, speed * dt * curvature
    moved = np.array([distance * math.cos(turn / 2), distance * math.sin(turn / 2)])
    c, s = math.cos(turn), math.sin(turn)
    path = (np.asarray(previous.waypoints) - moved) @ np.array([[c, -s], [s, c]])
    return path[np.argsort(path[:, 0])]


def why_nothing_ahead(cost: CostGrid | None, bev: BirdsEye, config: PlannerConfig) -> str:
    """The reason for a safe stop when no candidate has free road: an obstacle right ahead of
    the bumper, or no drivable road."""
    reach = config.front_m + config.min_free_m if cost is None else \
        cost.start_x + config.min_free_m
    close = [o for o in bev.obstacles
             if o.x <= reach and abs(o.y) <= o.width / 2 + config.half_width_m + config.margin_m]
    if close:
        nearest = min(close, key=lambda o: o.x)
        return f"{nearest.label} right ahead at {nearest.x:.1f} m"
    return "no drivable area ahead"


def nearest_obstacle_label(bev: BirdsEye, x: float, y: float) -> str:
    if not bev.obstacles:
        return "obstacle"
    return min(bev.obstacles, key=lambda o: math.hypot(o.x - x, o.y - y)).label


# --- speed -----------------------------------------------------------------------------------

def speed_profile(best: Candidate, bev: BirdsEye, state: PlannerState, dt: float,
                  config: PlannerConfig) -> tuple[float, list[str]]:
    """Target speed now, and the reasons for going slower than cruise."""
    limits: list[tuple[float, str]] = [(config.cruise_speed_mps, "")]
    if len(best.s):  # the mean bend of the next 30 m: steadier than the peak of one sample
        bend = float(np.abs(best.curvature[best.s <= 30.0]).mean())
        if bend > 1e-4:
            limits.append((math.sqrt(config.max_lateral_accel_mps2 / bend),
                           f"curve (radius {1 / bend:.0f} m)"))
    room = best.free_length_m - config.front_m
    if best.blocked_by not in (None, "edge"):
        gap = room - config.stop_gap_m
        stop_speed = math.sqrt(2 * config.comfort_decel_mps2 * max(0.0, gap))
        limits.append((min(stop_speed, max(0.0, gap) / config.time_gap_s),
                       f"{best.blocked_by} in path at {best.free_length_m:.1f} m"))
    else:
        ends = "path blocked" if best.blocked_by == "edge" else "free road seen"
        gap = room - (config.stop_gap_m if best.blocked_by == "edge" else 0.0)
        limits.append((math.sqrt(2 * config.comfort_decel_mps2 * max(0.0, gap)),
                       f"{ends} to {best.free_length_m:.1f} m"))
    if bev.stop_sign_x is not None and not state.sign_cleared:
        gap = bev.stop_sign_x - config.front_m - config.stop_gap_m
        limits.append((math.sqrt(2 * config.comfort_decel_mps2 * max(0.0, gap)),
                       f"stop sign at {bev.stop_sign_x:.1f} m"))
    target, _ = min(limits)
    if state.previous is not None:  # speed up gently; slowing down is never held back
        target = min(target, state.previous.target_speed_mps + config.speed_up_mps2 * dt)
    reasons = [why for limit, why in limits if why and limit < config.cruise_speed_mps - 0.5]
    return float(target), reasons


# --- road users ------------------------------------------------------------------------------

def camera_mismatch(result: FrameResult, estimates: list[DistanceEstimate | None]) -> list[str]:
    """Reasons to doubt the camera file: a road user whose two distance estimates disagree
    (distance.py), or a horizon check that says the file's pitch is off (horizon.py)."""
    reasons = []
    doubted = [(det, est) for det, est in zip(result.detections, estimates, strict=True)
               if est is not None and est.disagree]
    if doubted:
        det, est = min(doubted, key=lambda pair: pair[1].nearest_m or math.inf)
        ground = "above the horizon" if est.ground_m is None else f"{est.ground_m:.1f} m"
        reasons.append(f"camera_mismatch: {det.category} at {est.size_m:.1f} m by its size but "
                       f"{ground} by the ground; planning with the nearer")
    check = result.camera_check
    if check is not None and check.status == "mismatch" and check.pitch_error_deg is not None:
        reasons.append(f"camera_mismatch: the horizon says the pitch is off by "
                       f"{check.pitch_error_deg:+.1f} deg")
    return reasons


def stopping_speed(gap_m: float, config: PlannerConfig) -> float:
    """The highest speed from which the car stops within `gap_m`: it travels `reaction_s`
    before braking at `comfort_decel_mps2` (v t + v^2 / 2a = gap)."""
    a, t = config.comfort_decel_mps2, config.reaction_s
    return max(0.0, -a * t + math.sqrt((a * t) ** 2 + 2 * a * max(0.0, gap_m)))


def in_path_limits(result: FrameResult, estimates: list[DistanceEstimate | None],
                   camera: CameraModel, path: np.ndarray, config: PlannerConfig
                   ) -> list[tuple[float, str]]:
    """Speed limits for road users in the ego corridor as the image shows it (corridor.py),
    independent of where the bird's-eye view put them: stop before the nearer distance
    estimate, and be down to a creep when it is within `creep_within_m` (without tracking, one
    frame cannot tell whether it moves); stop when neither estimate exists. Sets each road
    user's `in_path`."""
    # The corridor along the chosen path and straight ahead: a path that swerves around a road
    # user still starts out toward it.
    half = config.half_width_m + config.margin_m
    corridor = corridor_mask(camera, path, half, near_m=config.front_m) | corridor_mask(
        camera, np.empty((0, 2)), half, near_m=config.front_m)
    horizon = horizon_row(camera)
    limits = []
    for det, est in zip(result.detections, estimates, strict=True):
        if est is None or is_ego_hood(det, camera):
            continue
        det.in_path = box_in_corridor(det.box, corridor, horizon)
        if not det.in_path:
            continue
        nearest = est.nearest_m
        if nearest is None:
            limits.append((0.0, f"{det.category} in path, distance unknown"))
            continue
        gap = camera.mount.x + nearest - config.front_m - config.stop_gap_m
        # Slow down smoothly to a creep by `creep_within_m`, then stop short of it.
        creep = config.creep_speed_mps + stopping_speed(nearest - config.creep_within_m, config)
        limits.append((min(stopping_speed(gap, config), creep),
                       f"{det.category} in path at {nearest:.1f} m"))
    return limits


# --- the whole step --------------------------------------------------------------------------

def plan_frame(result: FrameResult | None, camera: CameraModel, state: PlannerState, now: float,
               speed_mps: float | None = None, config: PlannerConfig = PlannerConfig(),
               detections_available: bool = True, tactic: Tactic | None = None) -> PlanOutput:
    """Plan for one perceived frame at time `now` (same clock as `result.timestamp`).

    `speed_mps` is the car's measured speed; without one (a recorded video) the previous target
    speed stands in for it. `detections_available=False` says no detector ran (a segmentation
    model alone): the plan is `degraded` and slow, since obstacles cannot be seen. A `tactic`
    (a behaviour layer's) steers the choice of path and caps the speed before the in-path rule.
    """
    dt = 0.05 if state.time is None else float(np.clip(now - state.time, 0.0, 1.0))
    if speed_mps is None:
        speed_mps = state.previous.target_speed_mps if state.previous else 0.0
    if result is None:
        return safe_stop(["no perception result"], state, now, dt, config)
    age = now - result.timestamp
    if not age <= config.deadline_s:  # `not <=`: a NaN timestamp is stale too, never fresh
        return safe_stop([f"perception is stale: {age:.2f} s old (deadline "
                          f"{config.deadline_s:.2f} s)"], state, now, dt, config)
    if result.drivable is None:
        return safe_stop(["no drivable-area mask (is a segmentation model loaded?)"],
                         state, now, dt, config)
    estimates = annotate_distances(result.detections, camera)
    bev = birdseye(result, camera, config.grid, near_x=config.front_m, estimates=estimates)
    cost = cost_grid(bev, config)
    previous = previous_path(state.previous, speed_mps, dt, config)
    best = None if cost is None else score_candidates(cost, bev, previous, config, tactic)
    if best is None:
        return safe_stop([why_nothing_ahead(cost, bev, config)], state, now, dt, config, bev)

    reasons = []  # inputs we plan without or doubt: the plan is `degraded`
    if bev.lanes is None:
        reasons.append("no lane mask: keeping to the drivable area")
    reasons += camera_mismatch(result, estimates)
    if not detections_available:
        reasons.append(f"no detector: obstacles unseen, speed capped at "
                       f"{config.blind_speed_mps:.1f} m/s")
    status = "degraded" if reasons else "ok"
    state = replace(state, **stop_sign_memory(bev, state, speed_mps, now, config))
    target, why_slow = speed_profile(best, bev, state, dt, config)
    if tactic is not None and tactic.max_speed_mps < target:
        target = tactic.max_speed_mps
        why_slow.append(f"behaviour: at most {tactic.max_speed_mps:.1f} m/s")
    in_path = in_path_limits(result, estimates, camera, best.points, config)
    for limit, why in in_path:
        if limit < target:
            target = limit
        why_slow.append(why)
    if not detections_available:
        target = min(target, config.blind_speed_mps)
    keep = (best.points[:, 0] >= cost.start_x) & np.isclose(best.s % 1.0, 0.0)  # every metre
    waypoints = [(round(float(x), 3), round(float(y), 3)) for x, y in best.points[keep]]

    steer = pure_pursuit_steer(np.asarray(waypoints).reshape(-1, 2), speed_mps, config.control)
    throttle, brake, pid = speed_pid(target, speed_mps, dt, state.pid, config.control)
    plan = Plan(status=status, reasons=reasons + why_slow, waypoints=waypoints,
                target_speed_mps=round(target, 3),
                control=Control(steer=steer, throttle=throttle, brake=brake),
                obstacles=obstacles_of(bev), image_path=image_path(waypoints, camera))
    return PlanOutput(plan, replace(state, previous=plan, time=now, pid=pid), bev)


def image_path(waypoints: list[tuple[float, float]], camera: CameraModel
               ) -> list[tuple[float, float]]:
    """Waypoints in front of the camera as frame pixels, so a viewer can draw the path."""
    if not waypoints:
        return []
    pixels, in_front = camera.ground_to_pixel(np.asarray(waypoints, np.float64))
    return [(round(float(u), 1), round(float(v), 1)) for u, v in pixels[in_front]]


def stop_sign_memory(bev: BirdsEye, state: PlannerState, speed: float, now: float,
                     config: PlannerConfig) -> dict:
    """Stop at a sign, wait `stop_sign_wait_s`, then go; forget once the sign is out of view."""
    if bev.stop_sign_x is None:
        return {"stopped_at_sign_since": None, "sign_cleared": False}
    if state.sign_cleared:
        return {}
    if speed > 0.3:
        return {"stopped_at_sign_since": None}
    since = state.stopped_at_sign_since if state.stopped_at_sign_since is not None else now
    return {"stopped_at_sign_since": since,
            "sign_cleared": now - since >= config.stop_sign_wait_s}
