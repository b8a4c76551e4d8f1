"""CARLA in the closed loop (sim_bridge/loop.py): connect, spawn, tick, always clean up.

`run()` sets the stage around the loop: connect, synchronous mode, spawn the ego car with its
sensors (and traffic), and always clean up (session.py). `CarlaSimulator` is the loop's
`Simulator` over what it spawned: `world.tick()`, then exactly that tick's camera image
(sensors.py), `carla.VehicleControl` out, CARLA's labels as ground truth. Perception and
planning are plain callables (our models or `GroundTruthPerceiver`; a `Planner`'s `step`), so
tests swap them freely.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import carla

from perception.frames import Frame
from perception.logs.foxglove_live import FoxgloveAddress
from perception.results import Control, FrameResult
from sim_bridge import ground_truth
from sim_bridge.camera_spec import CameraSpec
from sim_bridge.driving import camera_model
from sim_bridge.loop import EgoState, Perceive, PlanStep, SimTick, step
from sim_bridge.metrics import DrivingMetrics
from sim_bridge.recording import live_view, recording
from sim_bridge.sensors import CAMERA_MOUNT, FrameBuffer, image_to_bgr
from sim_bridge.session import SimError, SpawnedActors, connect, find_blueprint, synchronous_mode


@dataclass
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 2000
    town: str | None = None
    camera: CameraSpec = field(default_factory=CameraSpec)
    ticks: int = 600
    fixed_delta_s: float = 0.05  # 20 Hz, CARLA's usual step for driving
    connect_timeout_s: float = 10.0
    sensor_timeout_s: float = 2.0  # wait this long for a tick's image before calling it missing
    vehicle: str = "vehicle.lincoln.mkz_2020"  # the Leaderboard's hero car
    spawn_point: int = 0
    route_m: float = 0.0  # > 0: a route this long along the lane ahead, for route completion
    traffic: int = 0
    ground_truth: bool = False  # spawn a semantic camera and record CARLA's labels
    out: Path | None = None
    foxglove: FoxgloveAddress | None = None  # publish live for the Foxglove app


@dataclass
class Rig:
    """What the run spawned and listens to."""

    world: Any
    map: Any  # fetched once: `world.get_map()` sends the whole OpenDRIVE map on every call
    ego: Any
    camera: Any
    camera_frames: FrameBuffer
    segmentation_frames: FrameBuffer | None
    metrics: DrivingMetrics


def run(config: SimConfig, make_perceive: Callable[[Rig], Perceive],
        make_plan_step: Callable[[Rig], PlanStep],
        client_factory: Callable[..., Any] = carla.Client) -> dict:
    """One closed-loop run; returns the metrics summary. Ctrl-C ends it early, cleanly."""
    client, world = connect(config.host, config.port, config.connect_timeout_s, config.town,
                            client_factory)
    traffic_manager = traffic_manager_of(client) if config.traffic else None
    camera = camera_model(config.camera)
    with recording(config.out, camera) as recorder, live_view(config.foxglove, camera) as live, \
            synchronous_mode(world, config.fixed_delta_s, traffic_manager), \
            SpawnedActors(world) as actors:
        rig = spawn_rig(world, actors, config)
        if traffic_manager is not None:
            spawn_traffic(world, rig.map, actors, traffic_manager, config.traffic,
                          config.spawn_point)
        perceive, plan_step = make_perceive(rig), make_plan_step(rig)
        simulator = CarlaSimulator(rig, config.sensor_timeout_s)
        tick(world, 0)  # one tick for the new sensors to start streaming
        try:
            for _ in range(config.ticks):
                step(simulator, perceive, plan_step, rig.metrics, recorder, live=live)
        except KeyboardInterrupt:
            rig.metrics.interrupted = True
        summary = rig.metrics.summary()
        if recorder is not None:
            recorder.metrics(world.get_snapshot().timestamp.elapsed_seconds, summary)
    return summary


def traffic_manager_of(client: Any) -> Any:
    try:
        return client.get_trafficmanager()
    except RuntimeError as error:  # e.g. its port (8000) is taken by another process
        raise SimError(f"--traffic: could not start the Traffic Manager: {error}") from None


def spawn_rig(world: Any, actors: SpawnedActors, config: SimConfig) -> Rig:
    world_map = world.get_map()
    spawn_points = world_map.get_spawn_points()
    if not 0 <= config.spawn_point < len(spawn_points):
        raise SimError(f"spawn point {config.spawn_point} does not exist; this map has "
                       f"{len(spawn_points)} (0..{len(spawn_points) - 1})")
    start = spawn_points[config.spawn_point]
    vehicle = find_blueprint(world, config.vehicle)
    if vehicle.has_attribute("role_name"):
        vehicle.set_attribute("role_name", "hero")
    ego = actors.spawn(vehicle, start, ego=True)
    camera = actors.spawn(config.camera.configure(find_blueprint(world, "sensor.camera.rgb")),
                          CAMERA_MOUNT, attach_to=ego)
    camera_frames = FrameBuffer()
    camera.listen(camera_frames.put)
    segmentation_frames = None
    if config.ground_truth:
        blueprint = find_blueprint(world, "sensor.camera.semantic_segmentation")
        segmentation = actors.spawn(config.camera.configure(blueprint), CAMERA_MOUNT,
                                    attach_to=ego)
        segmentation_frames = FrameBuffer()
        segmentation.listen(segmentation_frames.put)
    metrics = DrivingMetrics(config.fixed_delta_s, route=route_ahead(world_map, start,
                                                                     config.route_m))
    collision = actors.spawn(find_blueprint(world, "sensor.other.collision"), carla.Transform(),
                             attach_to=ego)
    collision.listen(metrics.on_collision)
    invasion = actors.spawn(find_blueprint(world, "sensor.other.lane_invasion"),
                            carla.Transform(), attach_to=ego)
    invasion.listen(metrics.on_lane_invasion)
    return Rig(world, world_map, ego, camera, camera_frames, segmentation_frames, metrics)


def route_ahead(world_map: Any, start: carla.Transform, length_m: float,
                step_m: float = 2.0) -> list[tuple[float, float]]:
    """World (x, y) every `step_m` along the lane from `start`, following the first branch."""
    if length_m <= 0:
        return []
    waypoint = world_map.get_waypoint(start.location)
    route = []
    while waypoint is not None and len(route) * step_m <= length_m:
        location = waypoint.transform.location
        route.append((location.x, location.y))
        following = waypoint.next(step_m)
        waypoint = following[0] if following else None
    return route


def spawn_traffic(world: Any, world_map: Any, actors: SpawnedActors, traffic_manager: Any,
                  count: int, ego_spawn: int) -> int:
    """Up to `count` cars on autopilot at free spawn points; returns how many spawned."""
    library = world.get_blueprint_library()
    blueprints = [b for b in library.filter("vehicle.*")
                  if not b.has_attribute("number_of_wheels")
                  or b.get_attribute("number_of_wheels").as_int() == 4]
    if not blueprints:
        raise SimError("--traffic: this server's library has no four-wheeled vehicle")
    spawned = 0
    for index, point in enumerate(world_map.get_spawn_points()):
        if spawned >= count:
            break
        if index == ego_spawn:
            continue
        actor = actors.try_spawn(blueprints[index % len(blueprints)], point)
        if actor is not None:
            actor.set_autopilot(True, traffic_manager.get_port())
            spawned += 1
    return spawned


def tick(world: Any, ticks_done: int) -> int:
    """Advance the world one step; the new frame number."""
    try:
        return world.tick()
    except RuntimeError as error:
        raise SimError(f"the simulator stopped answering after {ticks_done} ticks: "
                       f"{error}") from None


class CarlaSimulator:
    """The loop's `Simulator` over a spawned rig: synchronous ticks, that tick's image."""

    source = "carla:camera"

    def __init__(self, rig: Rig, sensor_timeout_s: float) -> None:
        self.rig, self.sensor_timeout_s = rig, sensor_timeout_s

    def tick(self) -> SimTick:
        rig = self.rig
        frame_id = tick(rig.world, rig.metrics.ticks)
        now = rig.world.get_snapshot().timestamp.elapsed_seconds
        image = rig.camera_frames.take(frame_id, self.sensor_timeout_s)
        segmentation = (rig.segmentation_frames.take(frame_id, self.sensor_timeout_s)
                        if rig.segmentation_frames is not None else None)
        meta = {"carla_frame": frame_id, "segmentation": segmentation}
        if image is None:
            return SimTick(frame_id, now, None, meta=meta, state={"carla_frame": frame_id})
        return SimTick(frame_id, now, image_to_bgr(image), image_time_s=image.timestamp,
                       meta=meta, state={"carla_frame": frame_id})

    def ego(self) -> EgoState:
        ego = self.rig.ego
        velocity, location = ego.get_velocity(), ego.get_location()
        on_road = self.rig.map.get_waypoint(location, project_to_road=False) is not None
        return EgoState(location.x, location.y, ego.get_transform().rotation.yaw,
                        math.hypot(velocity.x, velocity.y), on_road)

    def apply(self, control: Control) -> None:
        self.rig.ego.apply_control(carla.VehicleControl(
            throttle=control.throttle, steer=control.steer, brake=control.brake))

    def ground_truth(self, frame: Frame) -> FrameResult | None:
        if frame.meta.get("segmentation") is None:
            return None
        return ground_truth.labels(frame, self.rig.world, self.rig.camera)
