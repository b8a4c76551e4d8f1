"""MetaDrive in the closed loop (sim_bridge/loop.py): a procedural road rendered headless on
the CPU, our perception and planner driving its car, scored from its ground truth.

MetaDrive (`metadrive-simulator==0.4.3`, Python <= 3.11) lives in its own virtual environment
(scripts/setup_metadrive.sh), so it is imported lazily: this module imports everywhere. What
headless rendering on Mesa's llvmpipe needs, set before the engine starts (docs/simulators.md):
Panda3D's EGL display (`load-display p3headlessgl`), no multisampled buffers (MetaDrive asks
for 16x, llvmpipe gives at most 4x and drops the buffer) and no anisotropic filtering (16x in
software takes minutes per frame; Mesa is told the extension is absent).

One step is 0.1 s of simulated time (MetaDrive's default: 5 physics steps of 0.02 s). The
car's geometry is MetaDrive's default vehicle: its centre between the axles at 1.05 m / 1.42 m,
40 degrees of steering lock; MetaDrive's steering is + left, ours (CARLA's) + right.
"""

from __future__ import annotations

import ctypes.util
import math
import os
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from perception.driving.camera import CameraModel, carla_camera
from perception.driving.control import ControlConfig
from perception.driving.planning import Planner, PlannerConfig
from perception.driving.vehicle_model import VehicleParams
from perception.frames import Frame
from perception.results import Control, Detection, FrameResult
from sim_bridge.errors import SimError
from sim_bridge.loop import EgoState, SimTick
from sim_bridge.metadrive_assets import is_complete

STEP_S = 0.1
FRONT_AXLE_M, REAR_AXLE_M = 1.05234, 1.4166  # MetaDrive DefaultVehicle, from its centre
MAX_STEER_DEG = 40.0
CAMERA_OFFSET = (0.0, 0.8, 1.5)  # MetaDrive's sensor mount on the car: right, forward, up
DEFAULT_FOV_DEG = 60.0  # MetaDrive's camera lens
# Semantic camera colours (MetaDrive's Cityscapes palette), BGR as the camera returns them
ROAD, LANE_LINE = (128, 64, 128), (255, 255, 255)
VEHICLE_COLOURS = {(142, 0, 0): (2, "car"), (70, 0, 0): (7, "truck"), (100, 60, 0): (5, "bus")}
MIN_BOX_PX = 12  # a vehicle's visible blob smaller than this many pixels is not a box
SAME_LANE_M = 1.75  # a vehicle this near the ego's line of travel is in its lane
LEAD_RANGE_M = 80.0
ROUTE_AHEAD_M, ROUTE_BEHIND_M, ROUTE_STEP_M = 45.0, 5.0, 2.0  # the route handed to the planner
SETUP_HINT = "run scripts/setup_metadrive.sh VENV and use VENV/bin/perception"


@dataclass(frozen=True)
class LeadVehicle:
    """A car placed `gap_m` ahead of the ego car in its lane, driving at `speed_mps`."""

    gap_m: float
    speed_mps: float


@dataclass(frozen=True)
class MetaDriveConfig:
    map: str = "SCrC"
    traffic: float = 0.1
    seed: int = 0
    width: int = 640
    height: int = 360
    fov_deg: float = DEFAULT_FOV_DEG
    truth_every: int = 1  # render the semantic camera every this many frames (scoring)
    lead: LeadVehicle | None = None


def check_config(config: MetaDriveConfig) -> None:
    """What can be refused before MetaDrive starts."""
    if not 0.0 <= config.traffic <= 1.0:  # also refuses nan
        raise SimError(f"--traffic {config.traffic:g}: MetaDrive's traffic density must be "
                       "in [0, 1]")
    if not config.map or not (config.map.isdigit()
                              or all(c.isalpha() or c == "$" for c in config.map)):
        raise SimError(f"--map {config.map!r}: expected MetaDrive block letters (e.g. SCrC) "
                       "or a number of blocks")
    if config.seed < 0:
        raise SimError(f"--seed {config.seed}: must be >= 0")


def check_environment() -> None:
    """MetaDrive importable, its asset folder complete, an EGL library: else one clear line."""
    try:
        import metadrive
    except ImportError:
        raise SimError(f"MetaDrive is not installed in this Python; {SETUP_HINT}") from None
    assets = Path(metadrive.__file__).parent / "assets"
    if not is_complete(assets):
        raise SimError(f"MetaDrive's asset folder {assets} is missing or incomplete (MetaDrive "
                       f"would download it); {SETUP_HINT}")
    if ctypes.util.find_library("EGL") is None:
        raise SimError("no EGL library (libEGL.so.1) for headless rendering: install Debian's "
                       "libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 (scripts/setup_metadrive.sh "
                       "does)")


def check_map(map_string: str) -> None:
    from metadrive.component.algorithm.blocks_prob_dist import PGBlockDistConfig
    from metadrive.utils.registry import get_metadrive_class

    if map_string.isdigit():
        return
    known = {get_metadrive_class(name).ID for name in PGBlockDistConfig.all_blocks()} - {None}
    unknown = sorted(set(map_string) - known)
    if unknown:
        raise SimError(f"--map {map_string!r}: unknown block {''.join(unknown)!r}; MetaDrive's "
                       f"blocks are {''.join(sorted(known))} (e.g. SCrC: straight, curve, "
                       "on-ramp, curve)")


@lru_cache(maxsize=1)
def prepare_headless_rendering() -> None:
    """Panda3D's EGL display, multisampling and anisotropic filtering off (module docstring)."""
    os.environ.setdefault("MESA_EXTENSION_OVERRIDE",
                          "-GL_EXT_texture_filter_anisotropic -GL_ARB_texture_filter_anisotropic")
    from direct.directnotify.DirectNotifyGlobal import directNotify
    from direct.filter.FilterManager import FilterManager
    from metadrive.engine.core.image_buffer import ImageBuffer
    from panda3d.core import loadPrcFileData

    loadPrcFileData("perception", "load-display p3headlessgl\nnotify-level warning\n"
                    "notify-level-device fatal\naudio-library-name null\n"
                    "default-directnotify-level error")
    directNotify.setDconfigLevels()  # no renderer: our one line, not also ShowBase's warning
    render_scene_into, create_buffer = FilterManager.render_scene_into, ImageBuffer._create_buffer

    def scene_without_multisampling(self: Any, *args: Any, fbprops: Any = None,
                                    **kwargs: Any) -> Any:
        if fbprops is not None:
            fbprops.set_multisamples(0)
        return render_scene_into(self, *args, fbprops=fbprops, **kwargs)

    def buffer_without_multisampling(self: Any, width: int, height: int, properties: Any) -> Any:
        if properties is not None:
            properties.set_multisamples(0)
        return create_buffer(self, width, height, properties)

    FilterManager.render_scene_into = scene_without_multisampling
    ImageBuffer._create_buffer = buffer_without_multisampling


def camera_model(config: MetaDriveConfig, height_m: float, pitch_up_deg: float) -> CameraModel:
    """Our camera model of the ego car's camera, in the planner's vehicle frame (origin on the
    ground under the rear axle). Panda3D's camera is an ideal pinhole with a horizontal field of
    view and square pixels, and its axes are CARLA's (x right of forward, pitch > 0 up), so
    `carla_camera` describes it."""
    return carla_camera(config.width, config.height, config.fov_deg,
                        x=CAMERA_OFFSET[1] + REAR_AXLE_M, y=CAMERA_OFFSET[0], z=height_m,
                        pitch=pitch_up_deg)


def car_planner(camera: CameraModel, detections_available: bool = True) -> Planner:
    """The planner of MetaDrive's default car."""
    vehicle = replace(VehicleParams(), wheelbase_m=FRONT_AXLE_M + REAR_AXLE_M,
                      max_steer_deg=MAX_STEER_DEG)
    config = replace(PlannerConfig(), control=replace(ControlConfig(), vehicle=vehicle))
    return Planner(camera, config, detections_available)


def semantic_labels(semantic: np.ndarray, frame: Frame) -> FrameResult:
    """The semantic camera's image (BGR) as a result: road and lane lines are the drivable
    area, lane lines the lanes, each vehicle's visible blob a box."""
    lanes = np.all(semantic == LANE_LINE, axis=-1)
    drivable = lanes | np.all(semantic == ROAD, axis=-1)
    detections = []
    for colour, (class_id, label) in VEHICLE_COLOURS.items():
        mask = np.all(semantic == colour, axis=-1).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        for x, y, w, h, area in stats[1:count]:
            if area >= MIN_BOX_PX:
                detections.append(Detection(class_id=class_id, label=label, score=1.0,
                                            box=(float(x), float(y), float(x + w), float(y + h)),
                                            category=label))
    return FrameResult(frame_index=frame.index, source=frame.source, timestamp=frame.timestamp,
                       width=frame.width, height=frame.height, detections=detections,
                       models=["metadrive-ground-truth"], drivable=drivable.astype(np.uint8),
                       lanes=lanes.astype(np.uint8))


class MetaDriveSimulator:
    """The loop's `Simulator` over a `MetaDriveEnv`; a context manager that always closes it."""

    source = "metadrive:camera"

    def __init__(self, config: MetaDriveConfig) -> None:
        check_config(config)
        check_environment()
        check_map(config.map)
        prepare_headless_rendering()
        self.config = config
        self.env: Any = None
        self.steps = 0
        self.info: dict = {}
        self._action = [0.0, 0.0]
        self._truth: tuple[int, FrameResult] | None = None
        self._lead: Any = None
        self._lead_s = 0.0

    def __enter__(self) -> MetaDriveSimulator:
        from metadrive.component.sensors.rgb_camera import RGBCamera
        from metadrive.component.sensors.semantic_camera import SemanticCamera
        from metadrive.envs import MetaDriveEnv

        size = (self.config.width, self.config.height)
        self.env = MetaDriveEnv({
            "use_render": False, "image_observation": True, "norm_pixel": False,
            "stack_size": 1, "preload_models": False, "log_level": 40,
            "sensors": {"rgb_camera": (RGBCamera, *size),
                        "semantic_camera": (SemanticCamera, *size)},
            "vehicle_config": {"image_source": "rgb_camera"},
            "map": int(self.config.map) if self.config.map.isdigit() else self.config.map,
            "traffic_density": self.config.traffic, "num_scenarios": 1,
            "start_seed": self.config.seed, "horizon": None,
            "out_of_road_done": False, "crash_vehicle_done": False, "crash_object_done": False})
        try:
            self.env.reset()
        except Exception as error:  # MetaDrive raises bare errors for a display it cannot open
            self.close()
            raise SimError(f"MetaDrive could not start its renderer ({type(error).__name__}: "
                           f"{error}); is EGL (Mesa) installed?") from None
        try:
            for sensor in ("rgb_camera", "semantic_camera"):
                self.env.engine.get_sensor(sensor).lens.setFov(self.config.fov_deg)
            if self.config.lead is not None:
                self._spawn_lead(self.config.lead)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self.env is not None:
            env, self.env = self.env, None
            env.close()

    # --- the loop's Simulator ---------------------------------------------------------------

    def tick(self) -> SimTick:
        observation, _, terminated, truncated, self.info = self.env.step(self._action)
        self.steps += 1
        if self._lead is not None:
            self._move_lead()
        image = np.ascontiguousarray(observation["image"][..., -1])
        now = self.steps * STEP_S
        return SimTick(self.steps, now, image, image_time_s=now,
                       state={"metadrive_step": self.steps})

    def ego(self) -> EgoState:
        agent = self.env.agent
        x, y = agent.position
        on_road = not self.info.get("out_of_road", False)
        return EgoState(float(x), float(y), math.degrees(agent.heading_theta),
                        float(agent.speed), on_road)

    def apply(self, control: Control) -> None:
        self._action = [-control.steer, control.throttle - control.brake]

    def ground_truth(self, frame: Frame) -> FrameResult | None:
        if self._truth is not None and self._truth[0] == frame.index:
            return self._truth[1]
        if frame.index % self.config.truth_every:
            return None
        sensor = self.env.engine.get_sensor("semantic_camera")
        semantic = sensor.perceive(to_float=False, new_parent_node=self.env.agent.origin,
                                   position=CAMERA_OFFSET, hpr=(0.0, 0.0, 0.0))
        truth = semantic_labels(np.ascontiguousarray(semantic[..., :3]), frame)
        self._truth = (frame.index, truth)
        return truth

    # --- navigation ---------------------------------------------------------------------------

    def route(self) -> tuple[np.ndarray, ...]:
        """The navigation's route ahead, as a car's navigation knows it: the ground of each
        lane of the roads it follows (the car's road and the next ones, `ROUTE_AHEAD_M`), as
        polygons in the planner's vehicle frame (metres; origin on the ground under the rear
        axle, x forward, y left). Lanes of the road not taken (an on-ramp's, the oncoming
        carriageway's) are not in it."""
        agent, navigation = self.env.agent, self.env.agent.navigation
        graph = self.env.current_map.road_network.graph
        checkpoints = navigation.checkpoints
        first = checkpoints.index(navigation.current_road.start_node)
        heading = np.array([math.cos(agent.heading_theta), math.sin(agent.heading_theta)])
        rear = np.asarray(agent.position) - REAR_AXLE_M * heading
        to_vehicle = np.array([heading, [-heading[1], heading[0]]]).T  # world -> (x, y left)
        polygons, left_m = [], ROUTE_AHEAD_M
        for start, end in zip(checkpoints[first:], checkpoints[first + 1:], strict=False):
            lanes = graph[start][end]
            reference = lanes[0]
            here = (float(np.clip(reference.local_coordinates(agent.position)[0], 0.0,
                                  reference.length)) if start == checkpoints[first] else 0.0)
            stop = min(reference.length, here + left_m)
            for lane in lanes:  # the same stretch of road on each lane (a curve's differ)
                s = np.append(np.arange(max(0.0, here - ROUTE_BEHIND_M), stop, ROUTE_STEP_M),
                              stop) * lane.length / reference.length
                edges = [np.array([lane.position(a, side * lane.width / 2) for a in s])
                         for side in (-1, 1)]
                polygons.append((np.concatenate([edges[0], edges[1][::-1]]) - rear) @ to_vehicle)
            left_m -= stop - here
            if left_m <= 0:
                break
        return tuple(polygons)

    # --- ground truth for scoring -----------------------------------------------------------

    def camera(self) -> CameraModel:
        """Our camera model, from where MetaDrive's camera is now (call after reset)."""
        camera = self.env.engine.get_sensor("rgb_camera").cam
        render = self.env.engine.render
        height = float(camera.get_pos(render).z)  # the road is at z = 0
        return camera_model(self.config, height, float(camera.get_hpr(render).y))

    @property
    def travelled_m(self) -> float:
        return float(self.env.agent.navigation.travelled_length)

    def lane_offset(self) -> tuple[float, bool]:
        """The ego car's signed offset (m, + left) from its lane's centre, and whether that
        lane curves."""
        from metadrive.component.lane.circular_lane import CircularLane

        agent = self.env.agent
        _, lateral = agent.lane.local_coordinates(agent.position)
        return -float(lateral), isinstance(agent.lane, CircularLane)

    def lead_gap(self) -> float | None:
        """Bumper-to-bumper gap to the nearest vehicle ahead on the ego car's line of travel."""
        agent = self.env.agent
        heading = np.array([math.cos(agent.heading_theta), math.sin(agent.heading_theta)])
        gaps = []
        for vehicle in self._other_vehicles():
            offset = np.asarray(vehicle.position) - np.asarray(agent.position)
            ahead = float(offset @ heading)
            aside = float(offset[0] * heading[1] - offset[1] * heading[0])
            if 0 < ahead < LEAD_RANGE_M and abs(aside) < SAME_LANE_M:
                gaps.append(ahead - (agent.LENGTH + vehicle.LENGTH) / 2)
        return min(gaps, default=None)

    def crashing(self) -> bool:
        return any(self.info.get(key, False)
                   for key in ("crash_vehicle", "crash_object", "crash_building"))

    def _other_vehicles(self) -> list[Any]:
        from metadrive.component.vehicle.base_vehicle import BaseVehicle

        return [o for o in self.env.engine.get_objects().values()
                if isinstance(o, BaseVehicle) and o is not self.env.agent]

    def _spawn_lead(self, lead: LeadVehicle) -> None:
        from metadrive.component.vehicle.vehicle_type import DefaultVehicle

        agent = self.env.agent
        self._lead_lane = agent.lane
        start, _ = self._lead_lane.local_coordinates(agent.position)
        self._lead_s = start + lead.gap_m + agent.LENGTH
        self._lead = self.env.engine.spawn_object(
            DefaultVehicle, vehicle_config={}, position=self._lead_lane.position(self._lead_s, 0),
            heading=self._lead_lane.heading_theta_at(self._lead_s))
        self._move_lead()

    def _move_lead(self) -> None:
        """The lead car drives its lane at its speed, whatever the physics says."""
        lane, speed = self._lead_lane, self.config.lead.speed_mps
        self._lead_s += speed * STEP_S
        heading = lane.heading_theta_at(self._lead_s)
        self._lead.set_position(lane.position(self._lead_s, 0))
        self._lead.set_heading_theta(heading)
        self._lead.set_velocity([math.cos(heading), math.sin(heading)], speed)

