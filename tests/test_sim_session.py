"""Connecting, bad input, and cleanup on every way out of a run.

The real `carla` client is used against a closed port (its own timeout error becomes our
message); everything else runs against the in-process fake server, whose world we inspect
afterwards: only the actors that were there before, and the settings that were there before.
"""

from __future__ import annotations

import itertools
import socket
import time

import pytest

carla = pytest.importorskip("carla", reason="needs the carla wheel (the [sim] extra)")

from mcap.reader import make_reader  # noqa: E402

from perception.results import Control, FrameResult, Plan  # noqa: E402
from sim_bridge import fake_carla  # noqa: E402
from sim_bridge.bridge import SimConfig, run  # noqa: E402
from sim_bridge.camera_spec import CameraSpec  # noqa: E402
from sim_bridge.session import SimError, connect  # noqa: E402

PORTS = itertools.count(2300, 2)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the block ends


@pytest.fixture
def server():
    server = fake_carla.FakeServer(fake_carla.Scenario(stopped_car_s=80.0))
    server.start("127.0.0.1", next(PORTS))
    yield server
    server.stop()


def config_for(server: fake_carla.FakeServer, **overrides) -> SimConfig:
    host, port = server.address.split(":")
    options = dict(host=host, port=int(port), camera=CameraSpec(160, 90, 90.0), ticks=20,
                   connect_timeout_s=1.0, sensor_timeout_s=1.0, traffic=2)
    options.update(overrides)
    return SimConfig(**options)


def cruise(result, now, speed):
    """A driver that only holds the throttle: cleanup does not depend on planning."""
    return Plan(status="ok", target_speed_mps=5.0,
                control=Control(steer=0.0, throttle=0.3, brake=0.0))


def passthrough(rig):
    return lambda frame: _empty_result(frame)


def _empty_result(frame):
    return FrameResult(frame_index=frame.index, source=frame.source, timestamp=frame.timestamp,
                       width=frame.width, height=frame.height)


def snapshot(server: fake_carla.FakeServer) -> tuple:
    world = server.world
    actors = sorted((a.id, a.type_id) for a in world.get_actors())
    settings = world.get_settings()
    return actors, settings.synchronous_mode, settings.fixed_delta_seconds, \
        server.traffic_manager_synchronous


def assert_left_as_found(server: fake_carla.FakeServer, before: tuple) -> None:
    assert snapshot(server) == before
    assert all(not a.type_id.startswith("sensor.") for a in server.world.get_actors())


# --- no server, wrong port, unknown town, missing blueprint --------------------------------------

def test_real_client_with_no_server_gives_our_message_quickly() -> None:
    port = closed_port()
    start = time.monotonic()
    with pytest.raises(SimError, match=f"no CARLA server answered at 127.0.0.1:{port} within 1 s"):
        connect("127.0.0.1", port, timeout_s=1.0)
    assert time.monotonic() - start < 5.0


def test_real_client_with_an_unknown_host_gives_our_message() -> None:
    with pytest.raises(SimError, match="no CARLA server answered at nosuchhost.invalid:2000 "
                                       ".*Host not found"):
        connect("nosuchhost.invalid", 2000, timeout_s=1.0)


def test_wrong_port(server) -> None:
    before = snapshot(server)
    config = config_for(server, port=config_for(server).port + 1)
    with pytest.raises(SimError, match="no CARLA server answered"):
        run(config, passthrough, lambda rig: cruise, fake_carla.FakeClient)
    assert_left_as_found(server, before)


def test_unknown_town_lists_the_available_ones(server) -> None:
    before = snapshot(server)
    with pytest.raises(SimError, match="unknown town 'Town99'; this server has: FakeRoad"):
        run(config_for(server, town="Town99"), passthrough, lambda rig: cruise,
            fake_carla.FakeClient)
    assert_left_as_found(server, before)


@pytest.mark.parametrize("vehicle", ["vehicle.nope.model_x"])
def test_missing_blueprint_spawns_nothing(server, vehicle) -> None:
    before = snapshot(server)
    with pytest.raises(SimError, match="blueprint 'vehicle.nope.model_x' is not in this "
                                       "server's library"):
        run(config_for(server, vehicle=vehicle), passthrough, lambda rig: cruise,
            fake_carla.FakeClient)
    assert_left_as_found(server, before)


def test_bad_spawn_point_spawns_nothing(server) -> None:
    before = snapshot(server)
    with pytest.raises(SimError, match="spawn point 999 does not exist"):
        run(config_for(server, spawn_point=999), passthrough, lambda rig: cruise,
            fake_carla.FakeClient)
    assert_left_as_found(server, before)


# --- cleanup on every exit path -------------------------------------------------------------------

def test_normal_exit_restores_everything(server) -> None:
    before = snapshot(server)
    seen = {}

    def driver(result, now, speed):
        seen["actors"] = len(server.world.get_actors())
        seen["sync"] = server.world.get_settings().synchronous_mode
        seen["tm_sync"] = server.traffic_manager_synchronous
        return cruise(result, now, speed)

    summary = run(config_for(server), passthrough, lambda rig: driver, fake_carla.FakeClient)
    assert summary["ticks"] == 20 and not summary["interrupted"]
    # during the run: ego + camera + collision + lane-invasion sensors + 2 traffic cars
    assert seen == {"actors": len(before[0]) + 6, "sync": True, "tm_sync": True}
    assert_left_as_found(server, before)


def test_exception_mid_run_cleans_up_and_propagates(server, tmp_path) -> None:
    before = snapshot(server)
    out = tmp_path / "run.mcap"
    ticks = itertools.count()

    def failing(frame):
        if next(ticks) == 5:
            raise ValueError("boom in perception")
        return _empty_result(frame)

    with pytest.raises(ValueError, match="boom in perception"):
        run(config_for(server, out=out), lambda rig: failing, lambda rig: cruise,
            fake_carla.FakeClient)
    assert_left_as_found(server, before)
    assert list(tmp_path.iterdir()) == []  # no half-written recording


def test_keyboard_interrupt_ends_the_run_cleanly_and_keeps_the_recording(server, tmp_path) -> None:
    before = snapshot(server)
    out = tmp_path / "run.mcap"
    ticks = itertools.count()

    def interrupted(result, now, speed):
        if next(ticks) == 7:
            raise KeyboardInterrupt
        return cruise(result, now, speed)

    summary = run(config_for(server, out=out), passthrough, lambda rig: interrupted,
                  fake_carla.FakeClient)
    assert summary["interrupted"] and summary["ticks"] == 7
    assert_left_as_found(server, before)
    with open(out, "rb") as file:
        topics = [channel.topic for _, channel, _ in make_reader(file).iter_messages()]
    assert topics.count("/camera/image") == 7 and topics[-1] == "/sim/metrics"


def test_server_dying_mid_run_is_one_clear_error(server) -> None:
    server.scenario.fail_tick_after = 4  # the warm-up tick and 3 of the loop
    before = snapshot(server)
    with pytest.raises(SimError, match="the simulator stopped answering after 3 ticks"):
        run(config_for(server), passthrough, lambda rig: cruise, fake_carla.FakeClient)
    assert_left_as_found(server, before)
