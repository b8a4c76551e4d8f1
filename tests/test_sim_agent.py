"""The Leaderboard agent's interface, called the way the Leaderboard calls it, with our real models
on a frame rendered by the fake and a GNSS/IMU-localised route."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

carla = pytest.importorskip("carla", reason="needs the carla wheel (the [sim] extra)")

from perception.errors import PerceptionError  # noqa: E402
from sim_bridge import agent as agent_module  # noqa: E402
from sim_bridge import fake_carla  # noqa: E402
from sim_bridge.camera_spec import CameraSpec  # noqa: E402
from sim_bridge.sensors import CAMERA_MOUNT  # noqa: E402

LAT0, LON0 = 0.001, 0.002
METRE_LAT = 1.0 / (agent_module.EARTH_RADIUS_M * math.pi / 180.0)  # degrees per metre north


def rendered_bgra(width: int, height: int) -> tuple[int, np.ndarray]:
    """One camera image from the fake, as the Leaderboard hands it: (frame, H x W x 4 BGRA)."""
    server = fake_carla.FakeServer().start("127.0.0.1", 2701)
    try:
        world = fake_carla.FakeClient("127.0.0.1", 2701).get_world()
        library = world.get_blueprint_library()
        ego = world.spawn_actor(library.find("vehicle.lincoln.mkz_2020"),
                                world.get_map().get_spawn_points()[0])
        camera = world.spawn_actor(CameraSpec(width, height).configure(
            library.find("sensor.camera.rgb")), CAMERA_MOUNT, attach_to=ego)
        images: list = []
        camera.listen(images.append)
        world.tick()
        deadline = time.monotonic() + 5.0
        while not images and time.monotonic() < deadline:
            time.sleep(0.01)
        image = images[0]
        bgra = np.frombuffer(image.raw_data, np.uint8).reshape(image.height, image.width, 4)
        return image.frame, bgra
    finally:
        server.stop()


def route_north_then_east() -> list[tuple[dict, int]]:
    """GPS route: 30 m north (LANEFOLLOW = 4), then a RIGHT turn (2) heading east."""
    points = [({"lat": LAT0 + n * METRE_LAT, "lon": LON0, "z": 0.0}, 4) for n in range(0, 31, 3)]
    metre_lon = METRE_LAT / math.cos(math.radians(LAT0))
    points += [({"lat": LAT0 + 30 * METRE_LAT, "lon": LON0 + e * metre_lon, "z": 0.0}, 2)
               for e in range(3, 31, 3)]
    return points


@pytest.fixture
def agent(models_mirror, tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text("camera: 320x180,90\nmodels: [yolox-nano, twinlitenet]\n")
    cls = getattr(agent_module, agent_module.get_entry_point())
    instance = cls("127.0.0.1", 2000, False)  # the Leaderboard's constructor arguments
    instance.set_global_plan(route_north_then_east(), [])
    instance.setup(str(config))
    yield instance
    instance.destroy()


def inputs(frame: int, bgra: np.ndarray, north_m: float, east_m: float, compass: float,
           speed: float) -> dict:
    metre_lon = METRE_LAT / math.cos(math.radians(LAT0))
    return {"rgb": (frame, bgra),
            "gps": (frame, np.array([LAT0 + north_m * METRE_LAT, LON0 + east_m * metre_lon, 0])),
            "imu": (frame, np.array([0, 0, 9.8, 0, 0, 0, compass])),
            "speed": (frame, {"speed": speed})}


def test_sensors_describe_the_camera_and_localisation(agent) -> None:
    sensors = agent.sensors()
    ids = [s["id"] for s in sensors]
    assert len(ids) == len(set(ids))
    camera = next(s for s in sensors if s["type"] == "sensor.camera.rgb")
    assert (camera["width"], camera["height"], camera["fov"]) == (320, 180, 90.0)
    assert (camera["x"], camera["z"], camera["pitch"]) == pytest.approx((0.8, 1.5, -5.0))
    assert {s["type"] for s in sensors} == {"sensor.camera.rgb", "sensor.other.gnss",
                                            "sensor.other.imu", "sensor.speedometer"}


def test_run_step_drives_from_the_camera(agent) -> None:
    frame, bgra = rendered_bgra(320, 180)
    control = agent.run_step(inputs(frame, bgra, 0.0, 0.0, 0.0, 0.0), timestamp=0.05)
    assert isinstance(control, carla.VehicleControl)
    assert -1.0 <= control.steer <= 1.0 and 0.0 <= control.throttle <= 1.0
    assert 0.0 <= control.brake <= 1.0


def test_route_turn_ahead_steers_along_the_route(agent) -> None:
    frame, bgra = rendered_bgra(320, 180)
    # 26 m north, heading north: the right turn is 4 m ahead -> steer right along the route
    control = agent.run_step(inputs(frame, bgra, 26.0, 0.0, 0.0, 5.0), timestamp=0.05)
    assert control.steer > 0.05


def test_route_end_brakes(agent) -> None:
    frame, bgra = rendered_bgra(320, 180)
    for north, east, when in ((0, 0, 0.05), (30, 15, 0.10), (30, 30, 0.15)):
        control = agent.run_step(inputs(frame, bgra, north, east, math.pi / 2, 3.0), when)
    assert control.brake == 1.0 and control.throttle == 0.0


def test_route_points_in_the_vehicle_frame() -> None:
    route = np.array([[0.0, 10.0], [10.0, 10.0]])  # east, north
    ahead = agent_module.to_vehicle_frame(route, np.array([0.0, 0.0]), compass=0.0)
    assert ahead == pytest.approx(np.array([[10.0, 0.0], [10.0, -10.0]]))  # y left
    facing_east = agent_module.to_vehicle_frame(route, np.array([0.0, 0.0]), math.pi / 2)
    assert facing_east == pytest.approx(np.array([[0.0, 10.0], [10.0, 10.0]]))


@pytest.mark.parametrize("text, message", [
    ("- a list\n", "expected a mapping"),
    ("wheelbase_m: long\n", "car geometry must be numbers"),
    ("models: yolox-nano\n", "planning needs a segmentation model .* the models are: yolox-nano$"),
])
def test_bad_config_is_a_clear_error(models_mirror, tmp_path, text, message) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(text)
    with pytest.raises(PerceptionError, match=message):
        agent_module.PerceptionAgent("127.0.0.1", 2000, False).setup(str(config))


def test_missing_config_file_is_a_clear_error(tmp_path) -> None:
    instance = agent_module.PerceptionAgent("127.0.0.1", 2000, False)
    with pytest.raises(PerceptionError, match="agent config .*: no such file"):
        instance.setup(str(tmp_path / "missing.yaml"))
