"""A CARLA Leaderboard agent (SENSORS track) driving with our perception, planner and controller.

The Leaderboard imports this module, calls `get_entry_point()` for the class name, constructs
the agent, hands it the route with `set_global_plan(gps_route, world_route)`, calls
`setup(config_path)`, spawns the sensors listed by `sensors()` and then calls
`run_step(input_data, timestamp)` every tick, with each sensor's data of that same frame.

Per tick: the camera image -> our models -> planner -> controller, as in `perception sim`. The
route: the car localises on it from GNSS and the IMU compass (no privileged world position),
stops at its end, and where the route turns (a LEFT or RIGHT command within 20 m) it steers
along the route's points instead of the perceived lane, with the planner still setting the
speed (and stopping for obstacles or missing perception).

Works without the Leaderboard installed (for tests and offline use): the base class is then a
stand-in with the same constructor and `set_global_plan`.
"""

from __future__ import annotations

import math
from pathlib import Path

import carla
import numpy as np
import yaml

from perception.driving.control import pure_pursuit_steer
from perception.errors import PerceptionError
from perception.frames import Frame
from perception.zoo.registry import default_models, model_names
from sim_bridge.camera_spec import CameraSpec
from sim_bridge.driving import CarGeometry, car_planner
from sim_bridge.perceivers import planning_perceiver
from sim_bridge.sensors import CAMERA_MOUNT

EARTH_RADIUS_M = 6378137.0
TURN_COMMANDS = {1, 2}  # RoadOption.LEFT, RoadOption.RIGHT (agents/navigation/local_planner)
TURN_LOOKAHEAD_M = 20.0
ROUTE_END_M = 4.0

try:
    from leaderboard.autoagents.autonomous_agent import AutonomousAgent, Track
except ImportError:
    Track = None

    class AutonomousAgent:  # the Leaderboard's base class, reduced to what we use
        def __init__(self, carla_host: str = "", carla_port: int = 0,
                     debug: bool = False) -> None:
            self._global_plan: list = []
            self._global_plan_world_coord: list = []

        def set_global_plan(self, global_plan_gps: list, global_plan_world_coord: list) -> None:
            self._global_plan = global_plan_gps
            self._global_plan_world_coord = global_plan_world_coord


def get_entry_point() -> str:
    return "PerceptionAgent"


def gps_to_metres(lat: np.ndarray, lon: np.ndarray, lat0: float, lon0: float) -> np.ndarray:
    """(east, north) metres from (lat0, lon0); equirectangular, exact enough over a route."""
    north = np.radians(np.asarray(lat) - lat0) * EARTH_RADIUS_M
    east = np.radians(np.asarray(lon) - lon0) * EARTH_RADIUS_M * math.cos(math.radians(lat0))
    return np.stack([east, north], axis=-1)


def to_vehicle_frame(points_en: np.ndarray, ego_en: np.ndarray, compass: float) -> np.ndarray:
    """East/north points -> vehicle frame (x forward, y left); compass 0 = north, clockwise."""
    d = points_en - ego_en
    forward = d[:, 0] * math.sin(compass) + d[:, 1] * math.cos(compass)
    right = d[:, 0] * math.cos(compass) - d[:, 1] * math.sin(compass)
    return np.stack([forward, -right], axis=-1)


class PerceptionAgent(AutonomousAgent):
    def setup(self, path_to_conf_file: str) -> None:
        """Config (optional YAML): `models: [yolox-nano, twinlitenet]`, `camera: 640x360,90`, and
        the hero car's `wheelbase_m`, `max_steer_deg`, `rear_axle_behind_centre_m` (the agent
        cannot read them from the simulator on the SENSORS track)."""
        if Track is not None:
            self.track = Track.SENSORS
        config = {}
        if path_to_conf_file:
            path = Path(path_to_conf_file)
            if not path.is_file():
                raise PerceptionError(f"agent config {path}: no such file")
            config = yaml.safe_load(path.read_text()) or {}
            if not isinstance(config, dict):
                raise PerceptionError(f"agent config {path}: expected a mapping (models, camera, "
                                      "wheelbase_m, ...)")
        self.camera = CameraSpec.parse(str(config.get("camera", "640x360,90")))
        models = config.get("models", default_models())
        if not isinstance(models, str):  # a YAML list; a string is as on the command line
            models = ",".join(str(model) for model in models)
        try:
            car = CarGeometry(**{key: float(config[key])
                                 for key in CarGeometry.__dataclass_fields__ if key in config})
        except (TypeError, ValueError) as error:
            raise PerceptionError(f"agent config: car geometry must be numbers ({error})") from None
        self.perceiver, detects = planning_perceiver(model_names(models, "agent config models"))
        self.planner = car_planner(self.camera, car, detects)
        self.route_index = 0
        self.steps = 0

    def sensors(self) -> list[dict]:
        mount, rotation = CAMERA_MOUNT.location, CAMERA_MOUNT.rotation
        return [
            {"type": "sensor.camera.rgb", "id": "rgb", "x": mount.x, "y": mount.y, "z": mount.z,
             "roll": rotation.roll, "pitch": rotation.pitch, "yaw": rotation.yaw,
             "width": self.camera.width, "height": self.camera.height, "fov": self.camera.fov},
            {"type": "sensor.other.gnss", "id": "gps", "x": 0.0, "y": 0.0, "z": 0.0},
            {"type": "sensor.other.imu", "id": "imu", "x": 0.0, "y": 0.0, "z": 0.0,
             "roll": 0.0, "pitch": 0.0, "yaw": 0.0, "sensor_tick": 0.05},
            {"type": "sensor.speedometer", "id": "speed", "reading_frequency": 20},
        ]

    def run_step(self, input_data: dict, timestamp: float) -> carla.VehicleControl:
        frame_id, bgra = input_data["rgb"]
        frame = Frame(np.ascontiguousarray(bgra[..., :3]), timestamp=timestamp,
                      index=self.steps, source="leaderboard:rgb", name=f"{frame_id:06d}",
                      meta={"carla_frame": frame_id})
        self.steps += 1
        result = self.perceiver.perceive([frame])[0]
        speed = float(input_data["speed"][1]["speed"])
        plan = self.planner.step(result, timestamp, speed)
        steer, throttle, brake = plan.control.steer, plan.control.throttle, plan.control.brake
        route = self.route_ahead(input_data)
        if route is not None:
            points, turning, finished = route
            if finished:
                throttle, brake = 0.0, 1.0
            elif turning and plan.status != "safe_stop":
                steer = pure_pursuit_steer(points, speed, self.planner.config.control)
        return carla.VehicleControl(throttle=float(throttle), steer=float(steer),
                                    brake=float(brake))

    def route_ahead(self, input_data: dict) -> tuple[np.ndarray, bool, bool] | None:
        """Route points ahead in the vehicle frame, whether the route turns soon, and whether
        it is finished; None without a route or a compass reading."""
        if not self._global_plan or "gps" not in input_data or "imu" not in input_data:
            return None
        lat, lon = input_data["gps"][1][:2]
        compass = float(input_data["imu"][1][-1])
        if math.isnan(compass):
            return None
        gps = np.array([[p["lat"], p["lon"]] for p, _ in self._global_plan])
        commands = [int(command) for _, command in self._global_plan]
        route = gps_to_metres(gps[:, 0], gps[:, 1], gps[0, 0], gps[0, 1])
        ego = gps_to_metres(lat, lon, gps[0, 0], gps[0, 1])
        distances = np.hypot(*(route - ego).T)
        window = slice(self.route_index, min(len(route), self.route_index + 10))
        self.route_index += int(np.argmin(distances[window]))
        ahead = to_vehicle_frame(route[self.route_index:], ego, compass)
        finished = distances[-1] < ROUTE_END_M
        near = np.hypot(*ahead.T) < TURN_LOOKAHEAD_M
        turning = any(c in TURN_COMMANDS
                      for c, n in zip(commands[self.route_index:], near, strict=True) if n)
        return ahead, turning, finished

    def destroy(self) -> None:
        perceiver = getattr(self, "perceiver", None)
        if perceiver is not None:
            perceiver.close()
