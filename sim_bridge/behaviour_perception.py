"""The behaviour layer's observation from our perception (`perception behaviour evaluate
--observe perception`), instead of MetaDrive's ground truth (behaviour_env.scene_of).

At each decision (every 0.5 s) the ego car's RGB camera is rendered once (MetaDrive renders
nothing between decisions: its buffers are switched off, so physics runs at its own speed), our
default models run on the frame with lane fitting on, and our Planner places the lanes and road
users as it does when it drives. From that, a `Scene`:

- speed: the car's speedometer (a car knows its speed; not estimated);
- lateral offset and lane width: the Planner's ego lane (the fitted ego-left and ego-right
  boundaries on the road through the camera model, perception/driving/lanes.py); where it is
  not measured, the last measured values (3.5 m and centred before the first);
- a lane left / right: a fitted boundary one lane width (`LANE_WIDTH_M`) beyond the ego
  boundary on that side, and that ego boundary not yellow (a yellow line separates the two
  directions: beyond it is oncoming traffic, not a lane of ours);
- per lane, the nearest road user ahead: the Planner's obstacles (each detection's nearer
  distance estimate, across along the ray through its box's bottom centre, bev.py), assigned
  to the lane whose centre (between the fitted boundaries at its distance, or the ego lane
  carried straight on) is nearest; a box cut by the bottom and a side of the frame is beside
  the car, not ahead, and is left out before the Planner places them;
- closing speed: the change of that lane's gap since the previous decision (0 when the lane had
  no lead then).

Only the observation is perceived: the executor (lane keeping, the in-path cap, the lane-change
veto) still drives on ground truth, as in training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from perception.driving.camera import CameraModel
from perception.driving.lanes import LANE_WIDTH_M, LOOKAHEAD_M
from perception.driving.planning import Planner
from perception.errors import PerceptionError
from perception.frames import Frame
from perception.results import FrameResult, LaneBoundary
from sim_bridge.behaviour_env import DECISION_STEPS, LEAD_RANGE_M, STEP_S, LeadCar, Scene
from sim_bridge.metadrive_sim import (
    CAMERA_OFFSET,
    REAR_AXLE_M,
    MetaDriveConfig,
    camera_model,
    car_planner,
    prepare_headless_rendering,
)

if TYPE_CHECKING:
    from perception.pipeline import Perceiver

CAMERA = MetaDriveConfig(width=320, height=180)  # 60 degrees; ~0.7 s a frame on llvmpipe
EGO_LENGTH_M = 4.515  # MetaDrive's default vehicle
DEFAULT_LANE_WIDTH_M = 3.5  # before the first measured lane
MAX_CLOSING_MPS = 15.0  # a larger change of gap in 0.5 s is a misplaced box, not a car
YELLOW_MARGIN = 40  # a line's pixels (BGR) whose red and green exceed their blue by this
EDGE_PX = 2.0
STALE_MOVE_M = 0.05  # the car moved this far since the last frame: the picture must change


@dataclass
class SceneMemory:
    """What carries from one decision to the next: the last lane measured, the last gaps."""

    lane_width_m: float = DEFAULT_LANE_WIDTH_M
    offset_m: float = 0.0
    gaps: list[float | None] = field(default_factory=lambda: [None, None, None])


def scene_from_perception(result: FrameResult, image: np.ndarray, camera: CameraModel,
                          speed_mps: float, memory: SceneMemory,
                          dt: float = DECISION_STEPS * STEP_S) -> Scene:
    """The Scene from a frame's result after our Planner's step (its `ego_lane`, boundaries
    with `ground_points` and `plan.obstacles` set) and the frame's image (BGR, for the lines'
    colour); `memory` is updated."""
    if result.ego_lane is not None:
        memory.lane_width_m, memory.offset_m = result.ego_lane.width_m, result.ego_lane.offset_m
    width = memory.lane_width_m
    sides = {b.position: b for b in result.lane_boundaries if b.position != "other"}
    others = [b for b in result.lane_boundaries if b.position == "other"]
    lane_left = lane_beyond(sides.get("ego_left"), others, +1, camera, image)
    lane_right = lane_beyond(sides.get("ego_right"), others, -1, camera, image)
    front_x = REAR_AXLE_M + EGO_LENGTH_M / 2
    gaps: list[float | None] = [None, None, None]
    obstacles = result.plan.obstacles if result.plan is not None else []
    for obstacle in obstacles:
        gap = obstacle.x - front_x
        if not -1.0 < gap < LEAD_RANGE_M:
            continue
        across = (obstacle.y - lane_centre(obstacle.x, sides, memory.offset_m)) / width
        slot = 1 - round(across)  # 0 left, 1 ego, 2 right
        if 0 <= slot <= 2 and abs(across) < 1.5 and (gaps[slot] is None or gap < gaps[slot]):
            gaps[slot] = max(gap, 0.0)
    leads: list[LeadCar | None] = []
    for gap, before in zip(gaps, memory.gaps, strict=True):
        if gap is None:
            leads.append(None)
            continue
        closing = 0.0 if before is None else (before - gap) / dt
        closing = float(np.clip(closing, -MAX_CLOSING_MPS, MAX_CLOSING_MPS))
        leads.append(LeadCar(gap, speed_mps - closing))
    memory.gaps = gaps
    return Scene(speed_mps, memory.offset_m, width, lane_left, lane_right,
                 (leads[0], leads[1], leads[2]))


def lane_beyond(ego_side: LaneBoundary | None, others: list[LaneBoundary], sign: int,
                camera: CameraModel, image: np.ndarray) -> bool:
    """A lane on this side (+1 left, -1 right): another boundary about a lane width beyond the
    ego boundary, which is not yellow."""
    if ego_side is None or not ego_side.ground_points or is_yellow(ego_side, image):
        return False
    at = camera.mount.x + LOOKAHEAD_M
    ego_y = lateral_at(ego_side, at)
    for other in others:
        if other.ground_points and len(other.ground_points) >= 2:
            beyond = sign * (lateral_at(other, at) - ego_y)
            if LANE_WIDTH_M[0] <= beyond <= LANE_WIDTH_M[1]:
                return True
    return False


def is_yellow(boundary: LaneBoundary, image: np.ndarray) -> bool:
    """Whether most of the line's fitted pixels that lie on paint are yellow (BGR)."""
    points = np.round(np.array(boundary.image_points)).astype(int)
    h, w = image.shape[:2]
    inside = (points[:, 0] >= 0) & (points[:, 0] < w) & (points[:, 1] >= 0) & (points[:, 1] < h)
    pixels = image[points[inside, 1], points[inside, 0]].astype(int)
    if not len(pixels):
        return False
    yellow = np.minimum(pixels[:, 1], pixels[:, 2]) - pixels[:, 0] > YELLOW_MARGIN
    return bool(yellow.mean() > 0.5)


def lateral_at(boundary: LaneBoundary, x: float) -> float:
    points = np.array(boundary.ground_points, np.float64)
    order = np.argsort(points[:, 0])
    return float(np.interp(x, points[order, 0], points[order, 1]))


def lane_centre(x: float, sides: dict[str, LaneBoundary], offset_m: float) -> float:
    """The ego lane's centre (y, vehicle frame) at `x`: between its fitted boundaries (held
    at their farthest point beyond it), or the measured lane carried straight on."""
    if all(sides.get(side) and sides[side].ground_points for side in ("ego_left", "ego_right")):
        return (lateral_at(sides["ego_left"], x) + lateral_at(sides["ego_right"], x)) / 2
    return -offset_m


def is_beside(box: tuple[float, float, float, float], camera: CameraModel) -> bool:
    """A box cut by the bottom and by a side of the frame: a road user beside the car."""
    x1, _, x2, y2 = box
    return y2 >= camera.height - EDGE_PX and (x1 <= EDGE_PX or x2 >= camera.width - EDGE_PX)


@dataclass
class FreshFrames:
    """Refuses a stale camera: the very same pixels as the last frame although the car has
    moved means nothing was rendered (the policies would be shown an old road). Kept across
    episodes: the first frame after a reset is checked against the last one before it."""

    last: tuple[np.ndarray, np.ndarray] | None = None  # the last image, and where it was taken

    def check(self, image: np.ndarray, position: np.ndarray) -> None:
        if (self.last is not None and np.linalg.norm(position - self.last[1]) > STALE_MOVE_M
                and np.array_equal(image, self.last[0])):
            raise PerceptionError("MetaDrive's camera returned the previous frame although the "
                                  "car moved: nothing was rendered")
        self.last = (image, position)


class PerceivedScenes:
    """The behaviour env's observation from our perception (behaviour_env.make_env's
    `scenes`): MetaDrive's configuration for one RGB camera, rendered only on demand."""

    def __init__(self, perceiver: Perceiver, camera: MetaDriveConfig = CAMERA) -> None:
        from metadrive.component.sensors.rgb_camera import RGBCamera
        from metadrive.obs.state_obs import LidarStateObservation

        prepare_headless_rendering()
        self.perceiver, self.camera_config = perceiver, camera
        # an image observation makes MetaDrive render; the agent's own observation stays the
        # cheap state vector (unused), and the camera is rendered only in `scene`
        self.config = {"image_observation": True, "agent_observation": LidarStateObservation,
                       "preload_models": False,
                       "sensors": {"rgb_camera": (RGBCamera, camera.width, camera.height)}}
        self.decisions = 0
        self.frames_with_lane = 0
        self.buffers: list[Any] = []  # MetaDrive's render buffers, found at the first reset
        self.fresh = FreshFrames()

    def start(self, md: Any) -> None:
        """After each reset: the lens, our camera model, a fresh Planner and memory, and every
        render buffer off until the next decision."""
        self.sensor = md.engine.get_sensor("rgb_camera")
        self.sensor.lens.setFov(self.camera_config.fov_deg)
        height = float(md.agent.origin.get_pos(md.engine.render).z) + CAMERA_OFFSET[2]
        self.camera = camera_model(self.camera_config, height, 0.0)
        self.planner: Planner = car_planner(self.camera)
        self.memory = SceneMemory()
        self.now = 0.0
        if not self.buffers:  # later resets find them switched off by the last decision
            engine = md.engine.graphicsEngine
            self.buffers = [engine.getWindow(i) for i in range(engine.getNumWindows())
                            if engine.getWindow(i).isActive()]
            if not self.buffers:
                raise PerceptionError("MetaDrive made no render buffer: the camera cannot render")
        self._render(False)

    def _render(self, on: bool) -> None:
        for buffer in self.buffers:
            buffer.setActive(on)

    def scene(self, md: Any) -> Scene:
        self._render(True)
        try:
            image = self.sensor.perceive(to_float=False, new_parent_node=md.agent.origin,
                                         position=CAMERA_OFFSET, hpr=(0.0, 0.0, 0.0))
        finally:
            self._render(False)
        image = np.ascontiguousarray(image[..., :3])
        self.fresh.check(image, np.asarray(md.agent.position, np.float64))
        frame = Frame(image, timestamp=self.now, index=self.decisions, source="metadrive:camera")
        result = self.perceiver.perceive([frame])[0]
        result.detections = [d for d in result.detections if not is_beside(d.box, self.camera)]
        speed = float(md.agent.speed)
        self.planner.step(result, self.now, speed)
        self.now += DECISION_STEPS * STEP_S
        self.decisions += 1
        self.frames_with_lane += result.ego_lane is not None
        return scene_from_perception(result, image, self.camera, speed, self.memory)
