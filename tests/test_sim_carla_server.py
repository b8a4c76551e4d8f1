"""Against a real CARLA 0.9.16 server: set CARLA_HOST (and CARLA_PORT, default 2000) to run.

No CARLA server can run on our CI (it needs a GPU build of Unreal), so this is skipped there;
the same code paths run against the in-process fake in the other test_sim_* files.
"""

from __future__ import annotations

import os

import pytest

carla = pytest.importorskip("carla", reason="needs the carla wheel (the [sim] extra)")

from sim_bridge.bridge import SimConfig, run  # noqa: E402
from sim_bridge.camera_spec import CameraSpec  # noqa: E402
from sim_bridge.driving import car_geometry, car_planner  # noqa: E402
from sim_bridge.ground_truth import GroundTruthPerceiver  # noqa: E402
from sim_bridge.session import SimError  # noqa: E402

HOST = os.environ.get("CARLA_HOST")
PORT = int(os.environ.get("CARLA_PORT", "2000"))
pytestmark = pytest.mark.skipif(not HOST, reason="no CARLA server: set CARLA_HOST (and "
                                                 "CARLA_PORT) to run against a real one")


def world_state() -> tuple:
    client = carla.Client(HOST, PORT)
    client.set_timeout(20.0)
    world = client.get_world()
    settings = world.get_settings()
    return (sorted(a.id for a in world.get_actors()), settings.synchronous_mode,
            settings.fixed_delta_seconds)


def test_closed_loop_on_a_real_server_leaves_it_as_found(tmp_path) -> None:
    before = world_state()
    camera = CameraSpec(640, 360, 90.0)
    config = SimConfig(host=HOST, port=PORT, camera=camera, ticks=200, ground_truth=True,
                       route_m=100.0, traffic=5, out=tmp_path / "run.mcap")
    summary = run(config, lambda rig: GroundTruthPerceiver(rig.world, rig.camera),
                  lambda rig: car_planner(camera, car_geometry(rig.ego)).step)
    assert summary["ticks"] == 200 and summary["frames_missed"] <= 1
    assert summary["distance_m"] > 5.0
    assert (tmp_path / "run.mcap").stat().st_size > 0
    assert world_state() == before


def test_unknown_town_on_a_real_server() -> None:
    before = world_state()
    with pytest.raises(SimError, match="unknown town 'Town99'"):
        run(SimConfig(host=HOST, port=PORT, town="Town99", ticks=1),
            lambda rig: None, lambda rig: None)
    assert world_state() == before
