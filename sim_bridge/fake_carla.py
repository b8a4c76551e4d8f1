"""An in-process stand-in for a CARLA server, for tests and demos where no simulator can run.

A real CARLA server needs a GPU build of Unreal Engine, so it cannot run on our CI or laptops.
This module imitates the server-side objects of the `carla` client API with the same method
names, arguments and data layouts: `FakeClient` (like `carla.Client`), the world, blueprint
library, actors, vehicles, sensors whose `listen` callbacks arrive on another thread after
`tick()` (possibly out of order), world settings, the map with spawn points and waypoints, and the
Traffic Manager. The value types (`Transform`, `Location`, `Rotation`, `VehicleControl`,
`WorldSettings`, `BoundingBox`, `Timestamp`) are the real ones from the `carla` wheel.
`tests/test_sim_fake_api.py` checks every public name here against the wheel's `libcarla.pyi`.

The world is one road with one or two lanes (straight or a constant-curvature arc), optionally a
stopped car; cars move by perception/driving/vehicle_model.py (a bicycle model). Cameras render the
road from the vehicle's pose (grey road, white lane lines, a box for each car): RGB as BGRA
bytes, semantic segmentation with the CARLA tag in the red channel. Collision and lane-invasion
sensors fire from the vehicle footprints. What it does not imitate: physics beyond the bicycle
model, other maps, junctions, traffic lights, walkers, weather, rendering realism.

Start a server with `FakeServer(Scenario(...)).start(host, port)`; `FakeClient(host, port)` then
connects to it, and to anything else it answers like the real client with no server: a
RuntimeError "time-out of ...ms while waiting for the simulator".
"""

from __future__ import annotations

import fnmatch
import math
import queue
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import carla
import cv2
import numpy as np

from perception.driving import vehicle_model
from perception.driving.camera import fov_intrinsics
from perception.driving.vehicle_model import VehicleParams, VehicleState
from perception.results import Control
from sim_bridge.geometry import box_corners, compose, ground_points, project

TAG = carla.CityObjectLabel
RGB_OF_TAG = {  # BGR colours of the rendered scene
    int(TAG.Sky): (235, 206, 135), int(TAG.Terrain): (60, 110, 70), int(TAG.Roads): (90, 90, 90),
    int(TAG.RoadLines): (235, 235, 235), int(TAG.Car): (40, 40, 170),
}
ROAD_SHOULDER_M = 0.5
LINE_WIDTH_M = 0.15
DASH_M, DASH_PERIOD_M = 3.0, 9.0


# --- The scene: one road, two lanes -----------------------------------------------------------

@dataclass
class Scenario:
    """What the fake world holds and how its sensors misbehave (for tests)."""

    town: str = "FakeRoad"
    curvature: float = 0.0  # 1/m; > 0 turns right (CARLA's y points right)
    length_m: float = 400.0
    lane_width_m: float = 3.5
    lanes: int = 2  # the ego lane, and with 2 a second lane to its left (same direction)
    stopped_car_s: float | None = None  # a parked car in the ego lane this far along the road
    stopped_car_lateral_m: float = 0.0
    shuffle_callbacks: bool = False  # deliver each tick's sensor data in random order
    callback_jitter_s: float = 0.0  # sleep up to this long before each delivery
    straggle_every: int = 0  # hold back every n-th camera image until the next tick
    camera_stops_after: int | None = None  # cameras deliver nothing after this many ticks
    fail_tick_after: int | None = None  # world.tick() times out after this many ticks
    seed: int = 0

    @property
    def markings(self) -> list[tuple[float, carla.LaneMarkingType]]:
        """Lane lines as (lateral offset to the right of the ego lane centre, type)."""
        w = self.lane_width_m
        if self.lanes == 1:
            return [(w / 2, carla.LaneMarkingType.Solid), (-w / 2, carla.LaneMarkingType.Solid)]
        return [(w / 2, carla.LaneMarkingType.Solid), (-w / 2, carla.LaneMarkingType.Broken),
                (-1.5 * w, carla.LaneMarkingType.Solid)]

    @property
    def left_edge(self) -> float:
        """Lateral offset of the leftmost lane line."""
        return self.lane_width_m / 2 - self.lanes * self.lane_width_m

    def frenet(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distance along the road and lateral offset (right positive) of world points."""
        if self.curvature == 0.0:
            return x, y
        sign, radius = math.copysign(1.0, self.curvature), 1.0 / abs(self.curvature)
        dx, dy = x, y - sign * radius
        s = radius * np.arctan2(dx, -sign * dy)
        return s, sign * (radius - np.hypot(dx, dy))

    def pose(self, s: float, lateral: float) -> tuple[float, float, float]:
        """World x, y and yaw (degrees) at distance s along the road, `lateral` m to the right."""
        if self.curvature == 0.0:
            return s, lateral, 0.0
        sign, radius = math.copysign(1.0, self.curvature), 1.0 / abs(self.curvature)
        phi = s / radius
        yaw = sign * phi
        x = radius * math.sin(phi) - lateral * math.sin(yaw)
        y = sign * radius - sign * radius * math.cos(phi) + lateral * math.cos(yaw)
        return x, y, math.degrees(yaw)

    def lane_centre(self, lane_id: int) -> float:
        return -(abs(lane_id) - 1) * self.lane_width_m  # lane -1: the ego lane, -2: left of it

    def tags(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Semantic tag of ground points: road, lane line or terrain."""
        s, lateral = self.frenet(x, y)
        w = self.lane_width_m
        on_road = ((lateral > self.left_edge - ROAD_SHOULDER_M)
                   & (lateral < w / 2 + ROAD_SHOULDER_M))
        on_road &= (s > -20.0) & (s < self.length_m)
        line = np.zeros_like(on_road)
        for offset, kind in self.markings:
            near = np.abs(lateral - offset) < LINE_WIDTH_M / 2
            if kind == carla.LaneMarkingType.Broken:
                near &= np.mod(s, DASH_PERIOD_M) < DASH_M
            line |= near
        tags = np.full(x.shape, int(TAG.Terrain), np.uint8)
        tags[on_road] = int(TAG.Roads)
        tags[on_road & line] = int(TAG.RoadLines)
        return tags


# --- Blueprints ----------------------------------------------------------------------------------

VEHICLE_EXTENTS = {  # half-lengths (x, y, z) in metres, as CARLA reports them
    "vehicle.lincoln.mkz_2020": (2.44, 1.06, 0.76),
    "vehicle.tesla.model3": (2.40, 1.08, 0.75),
    "vehicle.audi.a2": (1.85, 0.90, 0.78),
}
CAMERA_ATTRIBUTES = {"image_size_x": "800", "image_size_y": "600", "fov": "90.0",
                     "sensor_tick": "0.0", "role_name": "front"}
BLUEPRINTS: dict[str, tuple[list[str], dict[str, str]]] = {
    **{name: (name.split("."), {"role_name": "autopilot", "color": "255,255,255",
                                "number_of_wheels": "4", "generation": "2"})
       for name in VEHICLE_EXTENTS},
    "sensor.camera.rgb": (["sensor", "camera", "rgb"], dict(CAMERA_ATTRIBUTES)),
    "sensor.camera.semantic_segmentation": (["sensor", "camera", "semantic_segmentation"],
                                            dict(CAMERA_ATTRIBUTES)),
    "sensor.other.collision": (["sensor", "other", "collision"], {"role_name": "front"}),
    "sensor.other.lane_invasion": (["sensor", "other", "lane_invasion"], {"role_name": "front"}),
}


class FakeActorAttribute:
    def __init__(self, attribute_id: str, value: str, modifiable: bool = True) -> None:
        self._id, self._value, self._modifiable = attribute_id, value, modifiable

    @property
    def id(self) -> str:
        return self._id

    @property
    def is_modifiable(self) -> bool:
        return self._modifiable

    @property
    def recommended_values(self) -> list[str]:
        return [self._value]

    def as_int(self) -> int:
        return int(float(self._value))

    def as_float(self) -> float:
        return float(self._value)

    def as_str(self) -> str:
        return self._value

    def __str__(self) -> str:
        return self._value


class FakeActorBlueprint:
    def __init__(self, blueprint_id: str, tags: list[str], attributes: dict[str, str]) -> None:
        self._id, self._tags = blueprint_id, tags
        self._attributes = {key: FakeActorAttribute(key, value, key != "number_of_wheels")
                            for key, value in attributes.items()}

    @property
    def id(self) -> str:
        return self._id

    @property
    def tags(self) -> list[str]:
        return list(self._tags)

    def has_attribute(self, id: str) -> bool:
        return id in self._attributes

    def get_attribute(self, id: str) -> FakeActorAttribute:
        if id not in self._attributes:
            raise IndexError(f"attribute '{id}' not found")
        return self._attributes[id]

    def set_attribute(self, id: str, value: str) -> None:
        attribute = self.get_attribute(id)
        if not attribute.is_modifiable:
            raise RuntimeError(f"attribute '{id}' is not modifiable")
        self._attributes[id] = FakeActorAttribute(id, str(value))

    def __iter__(self) -> Iterator[FakeActorAttribute]:
        return iter(self._attributes.values())

    def __len__(self) -> int:
        return len(self._attributes)


class FakeBlueprintLibrary:
    def __init__(self) -> None:
        self._blueprints = [FakeActorBlueprint(key, tags, attributes)
                            for key, (tags, attributes) in BLUEPRINTS.items()]

    def find(self, id: str) -> FakeActorBlueprint:
        for blueprint in self._blueprints:
            if blueprint.id == id:
                return FakeActorBlueprint(id, *BLUEPRINTS[id])  # a fresh copy, like CARLA's
        raise IndexError(f"blueprint '{id}' not found")

    def filter(self, wildcard_pattern: str) -> list[FakeActorBlueprint]:
        return [self.find(b.id) for b in self._blueprints
                if fnmatch.fnmatch(b.id, wildcard_pattern)]

    def __iter__(self) -> Iterator[FakeActorBlueprint]:
        return iter([self.find(b.id) for b in self._blueprints])

    def __len__(self) -> int:
        return len(self._blueprints)


# --- Sensor data -----------------------------------------------------------------------------

class FakeSensorData:
    def __init__(self, frame: int, timestamp: float, transform: carla.Transform) -> None:
        self._frame, self._timestamp, self._transform = frame, timestamp, transform

    @property
    def frame(self) -> int:
        return self._frame

    @property
    def timestamp(self) -> float:
        return self._timestamp

    @property
    def transform(self) -> carla.Transform:
        return self._transform


class FakeImage(FakeSensorData):
    """A camera image: `raw_data` is BGRA, 4 bytes per pixel, row-major, like CARLA's."""

    def __init__(self, frame: int, timestamp: float, transform: carla.Transform,
                 bgra: np.ndarray, fov: float) -> None:
        super().__init__(frame, timestamp, transform)
        self._bgra, self._fov = bgra, fov

    @property
    def width(self) -> int:
        return int(self._bgra.shape[1])

    @property
    def height(self) -> int:
        return int(self._bgra.shape[0])

    @property
    def fov(self) -> float:
        return self._fov

    @property
    def raw_data(self) -> bytes:
        return self._bgra.tobytes()


class FakeLaneMarking:
    def __init__(self, kind: carla.LaneMarkingType) -> None:
        self._type = kind

    @property
    def type(self) -> carla.LaneMarkingType:
        return self._type

    @property
    def color(self) -> carla.LaneMarkingColor:
        return carla.LaneMarkingColor.White

    @property
    def width(self) -> float:
        return LINE_WIDTH_M


class FakeCollisionEvent(FakeSensorData):
    def __init__(self, frame: int, timestamp: float, transform: carla.Transform,
                 actor: FakeActor, other_actor: FakeActor) -> None:
        super().__init__(frame, timestamp, transform)
        self._actor, self._other = actor, other_actor

    @property
    def actor(self) -> FakeActor:
        return self._actor

    @property
    def other_actor(self) -> FakeActor:
        return self._other

    @property
    def normal_impulse(self) -> carla.Vector3D:
        return carla.Vector3D(x=1000.0, y=0.0, z=0.0)


class FakeLaneInvasionEvent(FakeSensorData):
    def __init__(self, frame: int, timestamp: float, transform: carla.Transform,
                 actor: FakeActor, markings: list[FakeLaneMarking]) -> None:
        super().__init__(frame, timestamp, transform)
        self._actor, self._markings = actor, markings

    @property
    def actor(self) -> FakeActor:
        return self._actor

    @property
    def crossed_lane_markings(self) -> list[FakeLaneMarking]:
        return list(self._markings)


# --- Actors ---------------------------------------------------------------------------------

class FakeActor:
    def __init__(self, world: FakeWorld, actor_id: int, blueprint: FakeActorBlueprint,
                 transform: carla.Transform, parent: FakeActor | None = None) -> None:
        self._world, self._id, self._type_id = world, actor_id, blueprint.id
        self._attributes = {a.id: a.as_str() for a in blueprint}
        self._transform, self._parent, self._alive = transform, parent, True

    @property
    def id(self) -> int:
        return self._id

    @property
    def type_id(self) -> str:
        return self._type_id

    @property
    def attributes(self) -> dict:
        return dict(self._attributes)

    @property
    def is_alive(self) -> bool:
        return self._alive

    @property
    def parent(self) -> FakeActor | None:
        return self._parent

    @property
    def bounding_box(self) -> carla.BoundingBox:
        return carla.BoundingBox(carla.Location(), carla.Vector3D())

    def get_transform(self) -> carla.Transform:
        if self._parent is None:
            return self._transform
        return compose(self._parent.get_transform(), self._transform)

    def get_location(self) -> carla.Location:
        return self.get_transform().location

    def get_velocity(self) -> carla.Vector3D:
        return carla.Vector3D()

    def get_world(self) -> FakeWorld:
        return self._world

    def set_transform(self, transform: carla.Transform) -> None:
        self._transform = transform

    def destroy(self) -> bool:
        if not self._alive:
            return False
        self._alive = False
        self._world._remove(self)
        return True


WHEELBASE_M = 2.9  # axles at +-1.45 m from the car's centre
MAX_STEER_DEG = 70.0  # road-wheel angle at steer = 1, as CARLA's cars commonly have
VEHICLE = replace(VehicleParams(), wheelbase_m=WHEELBASE_M, max_steer_deg=MAX_STEER_DEG)


class FakeVehicle(FakeActor):
    """A car moved by a kinematic bicycle model from its last `apply_control`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._speed = 0.0
        self._steer_angle = 0.0
        self._control = carla.VehicleControl()
        self._autopilot = False

    @property
    def bounding_box(self) -> carla.BoundingBox:
        x, y, z = VEHICLE_EXTENTS[self._type_id]
        return carla.BoundingBox(carla.Location(z=z), carla.Vector3D(x=x, y=y, z=z))

    def apply_control(self, control: carla.VehicleControl) -> None:
        self._control = control

    def get_control(self) -> carla.VehicleControl:
        return self._control

    def get_physics_control(self) -> carla.VehiclePhysicsControl:
        """Wheels front-left, front-right, rear-left, rear-right; positions in world cm."""
        pose = self._transform
        wheels = []
        for x, y, steer in ((1, -1, MAX_STEER_DEG), (1, 1, MAX_STEER_DEG), (-1, -1, 0.0),
                            (-1, 1, 0.0)):
            local = carla.Location(x=x * WHEELBASE_M / 2, y=y * 0.8, z=0.35)
            world = pose.transform(local)
            wheels.append(carla.WheelPhysicsControl(
                max_steer_angle=steer, radius=35.0,
                position=carla.Vector3D(x=world.x * 100, y=world.y * 100, z=world.z * 100)))
        return carla.VehiclePhysicsControl(wheels=wheels)

    def get_velocity(self) -> carla.Vector3D:
        yaw = math.radians(self._transform.rotation.yaw)
        return carla.Vector3D(x=self._speed * math.cos(yaw), y=self._speed * math.sin(yaw))

    def set_autopilot(self, enabled: bool = True, tm_port: int = 8000) -> None:
        self._autopilot = enabled

    def _step(self, dt: float) -> None:
        if self._autopilot:
            self._follow_lane(dt)
            return
        control = self._control
        pose = self._transform
        yaw = math.radians(pose.rotation.yaw)
        half = WHEELBASE_M / 2
        # CARLA's frame is left-handed (y right) around the car's centre; the model's is
        # right-handed (y left) around the rear axle.
        state = VehicleState(x=pose.location.x - half * math.cos(yaw),
                             y=-(pose.location.y - half * math.sin(yaw)), yaw=-yaw,
                             speed=self._speed, steer_angle=self._steer_angle)
        command = Control(steer=min(1.0, max(-1.0, control.steer)),
                          throttle=min(1.0, max(0.0, control.throttle)),
                          brake=1.0 if control.hand_brake else min(1.0, max(0.0, control.brake)))
        state = vehicle_model.step(state, command, dt, VEHICLE)
        self._speed, self._steer_angle = state.speed, state.steer_angle
        yaw = -state.yaw
        self._transform = carla.Transform(
            carla.Location(x=state.x + half * math.cos(yaw), y=-state.y + half * math.sin(yaw),
                           z=pose.location.z),
            carla.Rotation(pitch=pose.rotation.pitch, yaw=math.degrees(yaw),
                           roll=pose.rotation.roll))

    def _follow_lane(self, dt: float) -> None:
        """Traffic Manager stand-in: keep the lane at 8 m/s, stop 8 m behind anything ahead."""
        scenario = self._world._scenario
        location = self._transform.location
        s, lateral = scenario.frenet(np.array(location.x), np.array(location.y))
        s, lateral = float(s), float(lateral)
        gaps = [float(scenario.frenet(np.array(v.get_location().x),
                                      np.array(v.get_location().y))[0]) - s
                for v in self._world._vehicles() if v is not self]
        blocked = any(0.0 < gap < 8.0 for gap in gaps)
        self._speed = 0.0 if blocked else 8.0
        x, y, yaw = scenario.pose(s + self._speed * dt, lateral)
        self._transform = carla.Transform(carla.Location(x=x, y=y, z=location.z),
                                          carla.Rotation(yaw=yaw))

    def _footprint(self) -> tuple[tuple[float, float], tuple[float, float], float]:
        """The body outline as an OpenCV rotated rectangle (centre, size, angle in degrees)."""
        x, y, _ = VEHICLE_EXTENTS[self._type_id]
        location = self._transform.location
        return (location.x, location.y), (2 * x, 2 * y), self._transform.rotation.yaw


class FakeSensor(FakeActor):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._callback: Callable | None = None
        self._ground: tuple[np.ndarray, np.ndarray] | None = None
        self._crossing: set[float] = set()

    def is_listening(self) -> bool:
        return self._callback is not None

    def listen(self, callback: Callable) -> None:
        self._callback = callback

    def stop(self) -> None:
        self._callback = None

    def destroy(self) -> bool:
        self.stop()
        return super().destroy()

    def _measure(self, frame: int, elapsed: float) -> FakeSensorData | list[FakeSensorData]:
        kind = self._type_id
        if kind.startswith("sensor.camera."):
            return self._render(frame, elapsed, semantic=kind.endswith("semantic_segmentation"))
        if kind == "sensor.other.collision":
            return self._collisions(frame, elapsed)
        return self._lane_invasions(frame, elapsed)

    def _render(self, frame: int, elapsed: float, semantic: bool) -> FakeImage:
        width = int(self._attributes["image_size_x"])
        height = int(self._attributes["image_size_y"])
        fov = float(self._attributes["fov"])
        if self._ground is None:
            self._ground = ground_points(width, height, fov, self._transform)
        points, hit = self._ground
        pose = self._parent.get_transform()
        yaw = math.radians(pose.rotation.yaw)
        c, s = math.cos(yaw), math.sin(yaw)
        wx = pose.location.x + c * points[..., 0] - s * points[..., 1]
        wy = pose.location.y + s * points[..., 0] + c * points[..., 1]
        tags = self._world._scenario.tags(wx, wy)
        tags[~hit] = int(TAG.Sky)
        camera = self.get_transform()
        K = fov_intrinsics(width, height, fov)
        others = [v for v in self._world._vehicles() if v is not self._parent]
        boxes = []
        for vehicle in others:
            pixels, depth = project(box_corners(vehicle), camera, K)
            if depth.min() > 0.5:
                boxes.append((depth.mean(), pixels))
        for _, pixels in sorted(boxes, key=lambda item: -item[0]):  # far to near
            hull = cv2.convexHull(np.round(pixels).astype(np.int32))
            cv2.fillConvexPoly(tags, hull, int(TAG.Car))
        if semantic:
            bgra = np.zeros((height, width, 4), np.uint8)
            bgra[..., 2], bgra[..., 3] = tags, 255
        else:
            palette = np.zeros((256, 3), np.uint8)
            for tag, colour in RGB_OF_TAG.items():
                palette[tag] = colour
            bgra = np.dstack([palette[tags], np.full(tags.shape, 255, np.uint8)])
        return FakeImage(frame, elapsed, camera, bgra, fov)

    def _collisions(self, frame: int, elapsed: float) -> list[FakeSensorData]:
        ego = self._parent
        events = []
        for other in self._world._vehicles():
            if other is ego:
                continue
            kind, _ = cv2.rotatedRectangleIntersection(ego._footprint(), other._footprint())
            if kind != cv2.INTERSECT_NONE:
                events.append(FakeCollisionEvent(frame, elapsed, self.get_transform(), ego, other))
        return events

    def _lane_invasions(self, frame: int, elapsed: float) -> list[FakeSensorData]:
        scenario = self._world._scenario
        corners = cv2.boxPoints(self._parent._footprint())
        _, lateral = scenario.frenet(corners[:, 0].astype(float), corners[:, 1].astype(float))
        crossing = {offset for offset, _ in scenario.markings
                    if lateral.min() < offset < lateral.max()}
        new = crossing - self._crossing
        self._crossing = crossing
        if not new:
            return []
        markings = [FakeLaneMarking(kind) for offset, kind in scenario.markings if offset in new]
        return [FakeLaneInvasionEvent(frame, elapsed, self.get_transform(), self._parent,
                                      markings)]


class FakeActorList:
    def __init__(self, actors: list[FakeActor]) -> None:
        self._actors = actors

    def filter(self, wildcard_pattern: str) -> list[FakeActor]:
        return [a for a in self._actors if fnmatch.fnmatch(a.type_id, wildcard_pattern)]

    def find(self, id: int) -> FakeActor | None:
        return next((a for a in self._actors if a.id == id), None)

    def __getitem__(self, pos: int) -> FakeActor:
        return self._actors[pos]

    def __iter__(self) -> Iterator[FakeActor]:
        return iter(self._actors)

    def __len__(self) -> int:
        return len(self._actors)


# --- Map ------------------------------------------------------------------------------------

class FakeWaypoint:
    def __init__(self, scenario: Scenario, s: float, lane_id: int) -> None:
        self._scenario, self._s, self._lane_id = scenario, s, lane_id

    @property
    def transform(self) -> carla.Transform:
        x, y, yaw = self._scenario.pose(self._s, self._scenario.lane_centre(self._lane_id))
        return carla.Transform(carla.Location(x=x, y=y), carla.Rotation(yaw=yaw))

    @property
    def road_id(self) -> int:
        return 1

    @property
    def lane_id(self) -> int:
        return self._lane_id

    @property
    def s(self) -> float:
        return self._s

    @property
    def lane_width(self) -> float:
        return self._scenario.lane_width_m

    @property
    def lane_type(self) -> carla.LaneType:
        return carla.LaneType.Driving

    @property
    def is_junction(self) -> bool:
        return False

    def next(self, distance: float) -> list[FakeWaypoint]:
        s = self._s + distance
        return [FakeWaypoint(self._scenario, s, self._lane_id)] if s < self._scenario.length_m \
            else []

    def previous(self, distance: float) -> list[FakeWaypoint]:
        s = self._s - distance
        return [FakeWaypoint(self._scenario, s, self._lane_id)] if s >= 0.0 else []


class FakeMap:
    def __init__(self, scenario: Scenario) -> None:
        self._scenario = scenario

    @property
    def name(self) -> str:
        return f"Carla/Maps/{self._scenario.town}"

    def get_spawn_points(self) -> list[carla.Transform]:
        points = []
        for s in np.arange(0.0, self._scenario.length_m - 50.0, 25.0):
            for lane_id in range(-1, -self._scenario.lanes - 1, -1):
                x, y, yaw = self._scenario.pose(float(s), self._scenario.lane_centre(lane_id))
                points.append(carla.Transform(carla.Location(x=x, y=y, z=0.3),
                                              carla.Rotation(yaw=yaw)))
        return points

    def get_waypoint(self, location: carla.Location, project_to_road: bool = True,
                     lane_type: carla.LaneType = carla.LaneType.Driving) -> FakeWaypoint | None:
        """The lane centre waypoint nearest `location`; None off the lanes unless projecting."""
        scenario = self._scenario
        s, lateral = (float(v) for v in scenario.frenet(np.array(location.x),
                                                          np.array(location.y)))
        w = scenario.lane_width_m
        on_lanes = scenario.left_edge <= lateral <= w / 2 and 0.0 <= s <= scenario.length_m
        if not on_lanes and not project_to_road:
            return None
        lane_id = -1 if lateral > -w / 2 else -2
        return FakeWaypoint(scenario, min(max(s, 0.0), scenario.length_m), lane_id)


# --- World, Traffic Manager, client ------------------------------------------------------------

class FakeWorldSnapshot:
    def __init__(self, timestamp: carla.Timestamp) -> None:
        self._timestamp = timestamp

    @property
    def frame(self) -> int:
        return self._timestamp.frame

    @property
    def timestamp(self) -> carla.Timestamp:
        return self._timestamp


def copy_settings(settings: carla.WorldSettings) -> carla.WorldSettings:
    """A detached copy of world settings (the wheel offers no copy)."""
    copy = carla.WorldSettings()
    for name in ("synchronous_mode", "no_rendering_mode", "fixed_delta_seconds", "substepping",
                 "max_substep_delta_time", "max_substeps", "max_culling_distance",
                 "deterministic_ragdolls"):
        setattr(copy, name, getattr(settings, name))
    return copy


class FakeWorld:
    def __init__(self, server: FakeServer, world_id: int) -> None:
        self._server, self._id = server, world_id
        self._scenario = server.scenario
        self._settings = carla.WorldSettings()
        self._frame, self._elapsed = 1000, 0.0
        self._actors: list[FakeActor] = []
        self._next_id = 1
        self._spectator = self._add(FakeActor, FakeActorBlueprint("spectator", [], {}),
                                    carla.Transform(), None)
        self._map = FakeMap(self._scenario)
        self._rng = random.Random(self._scenario.seed)
        self._deliveries: queue.Queue = queue.Queue()
        self._held: list[tuple[FakeSensor, FakeSensorData]] = []
        self._ticks = 0
        threading.Thread(target=self._deliver, daemon=True, name="fake-carla-sensors").start()
        if self._scenario.stopped_car_s is not None:
            x, y, yaw = self._scenario.pose(self._scenario.stopped_car_s,
                                            self._scenario.stopped_car_lateral_m)
            blueprint = FakeBlueprintLibrary().find("vehicle.audi.a2")
            blueprint.set_attribute("role_name", "parked")
            self._add(FakeVehicle, blueprint, carla.Transform(carla.Location(x=x, y=y),
                                                              carla.Rotation(yaw=yaw)), None)

    @property
    def id(self) -> int:
        return self._id

    def get_settings(self) -> carla.WorldSettings:
        return copy_settings(self._settings)

    def apply_settings(self, settings: carla.WorldSettings, seconds: float = 10.0) -> int:
        self._settings = copy_settings(settings)
        return self._frame

    def get_map(self) -> FakeMap:
        return self._map

    def get_blueprint_library(self) -> FakeBlueprintLibrary:
        return FakeBlueprintLibrary()

    def get_spectator(self) -> FakeActor:
        return self._spectator

    def get_actors(self, actor_ids: list[int] | None = None) -> FakeActorList:
        actors = [a for a in self._actors if actor_ids is None or a.id in actor_ids]
        return FakeActorList(actors)

    def get_actor(self, actor_id: int) -> FakeActor | None:
        return self.get_actors().find(actor_id)

    def get_snapshot(self) -> FakeWorldSnapshot:
        delta = self._settings.fixed_delta_seconds or 0.05
        return FakeWorldSnapshot(carla.Timestamp(self._frame, self._elapsed, delta, time.time()))

    def spawn_actor(self, blueprint: FakeActorBlueprint, transform: carla.Transform,
                    attach_to: FakeActor | None = None,
                    attachment_type: carla.AttachmentType = carla.AttachmentType.Rigid
                    ) -> FakeActor:
        actor = self.try_spawn_actor(blueprint, transform, attach_to, attachment_type)
        if actor is None:
            raise RuntimeError("Spawn failed because of collision at spawn position")
        return actor

    def try_spawn_actor(self, blueprint: FakeActorBlueprint, transform: carla.Transform,
                        attach_to: FakeActor | None = None,
                        attachment_type: carla.AttachmentType = carla.AttachmentType.Rigid
                        ) -> FakeActor | None:
        if blueprint.id.startswith("sensor."):
            if attach_to is not None and not attach_to.is_alive:
                raise RuntimeError("attach_to actor is not alive")
            return self._add(FakeSensor, blueprint, transform, attach_to)
        grounded = carla.Transform(carla.Location(x=transform.location.x,
                                                  y=transform.location.y, z=0.0),
                                   transform.rotation)
        candidate = FakeVehicle(self, 0, blueprint, grounded, None)
        for other in self._vehicles():
            kind, _ = cv2.rotatedRectangleIntersection(candidate._footprint(), other._footprint())
            if kind != cv2.INTERSECT_NONE:
                return None
        return self._add(FakeVehicle, blueprint, grounded, None)

    def tick(self, seconds: float = 10.0) -> int:
        """Advance one step: move vehicles, then measure and queue every listening sensor."""
        if not self._server.running:
            raise RuntimeError(f"time-out of {int(seconds * 1000)}ms while waiting for the "
                               "simulator, make sure the simulator is ready and connected to "
                               f"{self._server.address}")
        scenario = self._scenario
        if scenario.fail_tick_after is not None and self._ticks >= scenario.fail_tick_after:
            raise RuntimeError(f"time-out of {int(seconds * 1000)}ms while waiting for the "
                               f"simulator, make sure the simulator is ready and connected to "
                               f"{self._server.address}")
        dt = self._settings.fixed_delta_seconds or 0.05
        self._frame += 1
        self._elapsed += dt
        self._ticks += 1
        for vehicle in self._vehicles():
            vehicle._step(dt)
        batch: list[tuple[FakeSensor, FakeSensorData]] = list(self._held)
        self._held = []
        stops_after = scenario.camera_stops_after
        cameras_on = stops_after is None or self._ticks <= stops_after
        for sensor in [a for a in self._actors if isinstance(a, FakeSensor) and a.is_listening()]:
            is_camera = sensor.type_id.startswith("sensor.camera.")
            if is_camera and not cameras_on:
                continue
            measured = sensor._measure(self._frame, self._elapsed)
            for data in measured if isinstance(measured, list) else [measured]:
                straggles = (is_camera and scenario.straggle_every
                             and self._ticks % scenario.straggle_every == 0)
                (self._held if straggles else batch).append((sensor, data))
        if scenario.shuffle_callbacks:
            self._rng.shuffle(batch)
        for item in batch:
            self._deliveries.put(item)
        return self._frame

    def _add(self, cls: type, blueprint: FakeActorBlueprint, transform: carla.Transform,
             parent: FakeActor | None) -> FakeActor:
        actor = cls(self, self._next_id, blueprint, transform, parent)
        self._next_id += 1
        self._actors.append(actor)
        return actor

    def _remove(self, actor: FakeActor) -> None:
        self._actors.remove(actor)

    def _vehicles(self) -> list[FakeVehicle]:
        return [a for a in self._actors if isinstance(a, FakeVehicle)]

    def _deliver(self) -> None:
        """The sensor thread: calls `listen` callbacks one at a time, like the client's."""
        while True:
            item = self._deliveries.get()
            if item is None:  # the world was shut down
                return
            sensor, data = item
            if self._scenario.callback_jitter_s:
                time.sleep(self._rng.uniform(0.0, self._scenario.callback_jitter_s))
            callback = sensor._callback
            if callback is None:
                continue
            try:
                callback(data)
            except Exception as error:  # the real client prints and carries on
                print(f"fake carla: sensor callback raised {error!r}", file=sys.stderr)


class FakeTrafficManager:
    def __init__(self, port: int) -> None:
        self._port = port
        self._synchronous = False

    def get_port(self) -> int:
        return self._port

    def set_synchronous_mode(self, mode_switch: bool = True) -> None:
        self._synchronous = mode_switch


class FakeServer:
    """The fake simulator process: owns the world; a test inspects it after a run."""

    def __init__(self, scenario: Scenario | None = None) -> None:
        self.scenario = scenario or Scenario()
        self.address = ""
        self.running = False
        self.traffic_manager = FakeTrafficManager(8000)
        self.world = FakeWorld(self, 1)

    def start(self, host: str = "127.0.0.1", port: int = 2000) -> FakeServer:
        self.address = f"{host}:{port}"
        self.running = True
        _SERVERS[self.address] = self
        return self

    def stop(self) -> None:
        self.running = False
        _SERVERS.pop(self.address, None)
        self.world._deliveries.put(None)

    @property
    def traffic_manager_synchronous(self) -> bool:
        return self.traffic_manager._synchronous

    def load(self, town: str) -> FakeWorld:
        self.scenario.town = town
        self.world._deliveries.put(None)
        self.world = FakeWorld(self, self.world.id + 1)
        return self.world


_SERVERS: dict[str, FakeServer] = {}


class FakeClient:
    def __init__(self, host: str = "127.0.0.1", port: int = 2000, worker_threads: int = 0) -> None:
        self._address = f"{host}:{port}"
        self._timeout = 5.0

    def set_timeout(self, seconds: float) -> None:
        self._timeout = seconds

    def _server(self) -> FakeServer:
        server = _SERVERS.get(self._address)
        if server is None or not server.running:
            raise RuntimeError(f"time-out of {int(self._timeout * 1000)}ms while waiting for the "
                               "simulator, make sure the simulator is ready and connected to "
                               f"{self._address}")
        return server

    def get_client_version(self) -> str:
        return carla.Client("127.0.0.1", 1).get_client_version()

    def get_server_version(self) -> str:
        self._server()
        return "0.9.16"

    def get_world(self) -> FakeWorld:
        return self._server().world

    def get_available_maps(self) -> list[str]:
        return [f"/Game/Carla/Maps/{self._server().scenario.town}"]

    def load_world(self, map_name: str, reset_settings: bool = True,
                   map_layers: carla.MapLayer = carla.MapLayer.All) -> FakeWorld:
        server = self._server()
        if map_name.rsplit("/", 1)[-1] not in [m.rsplit("/", 1)[-1]
                                               for m in self.get_available_maps()]:
            raise RuntimeError("map not found")
        return server.load(map_name.rsplit("/", 1)[-1])

    def get_trafficmanager(self, port: int = 8000) -> FakeTrafficManager:
        return self._server().traffic_manager


# The fake class standing in for each class of the wheel (checked against libcarla.pyi).
MIRRORS: dict[type, str] = {
    FakeClient: "Client", FakeWorld: "World", FakeBlueprintLibrary: "BlueprintLibrary",
    FakeActorBlueprint: "ActorBlueprint", FakeActorAttribute: "ActorAttribute",
    FakeActor: "Actor", FakeVehicle: "Vehicle", FakeSensor: "Sensor", FakeActorList: "ActorList",
    FakeSensorData: "SensorData", FakeImage: "Image", FakeCollisionEvent: "CollisionEvent",
    FakeLaneInvasionEvent: "LaneInvasionEvent", FakeLaneMarking: "LaneMarking",
    FakeMap: "Map", FakeWaypoint: "Waypoint", FakeWorldSnapshot: "WorldSnapshot",
    FakeTrafficManager: "TrafficManager",
}
