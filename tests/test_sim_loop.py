"""The closed loop really closes, in the fake: lane keeping, stopping behind a stopped car, and the
fail-safe when frames stop arriving.

Perception here is CARLA's ground truth (the fake's semantic camera and actor boxes, through
`GroundTruthPerceiver`), not our models: the point is the loop (frame matching, planner,
controller, vehicle), and our detectors are not trained to see the fake's flat-shaded boxes.
`test_sim_cli.py` runs the real models over the fake's frames.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

carla = pytest.importorskip("carla", reason="needs the carla wheel (the [sim] extra)")

from sim_bridge import fake_carla  # noqa: E402
from sim_bridge.bridge import SimConfig, run  # noqa: E402
from sim_bridge.camera_spec import CameraSpec  # noqa: E402
from sim_bridge.driving import car_geometry, car_planner  # noqa: E402
from sim_bridge.ground_truth import GroundTruthPerceiver  # noqa: E402

PORTS = itertools.count(2500, 2)
CAMERA = CameraSpec(320, 180, 90.0)


def drive(scenario: fake_carla.Scenario, ticks: int, start_offset_m: float = 0.0, **options):
    """Run the loop with ground-truth perception; return the summary and a per-tick trace."""
    server = fake_carla.FakeServer(scenario).start("127.0.0.1", next(PORTS))
    trace = []

    def make_plan_step(rig):
        planner = car_planner(CAMERA, car_geometry(rig.ego))
        if start_offset_m:
            start = rig.ego.get_transform()
            x, y, yaw = scenario.pose(0.0, start_offset_m)
            rig.ego.set_transform(carla.Transform(carla.Location(x=x, y=y, z=start.location.z),
                                                  carla.Rotation(yaw=yaw)))

        def step(result, now, speed):
            plan = planner.step(result, now, speed)
            location = rig.ego.get_location()
            s, lateral = scenario.frenet(np.array(location.x), np.array(location.y))
            trace.append({"s": float(s), "lateral": float(lateral), "speed": speed,
                          "status": plan.status, "frame": result is not None})
            return plan
        return step

    try:
        config = SimConfig(host="127.0.0.1", port=int(server.address.split(":")[1]),
                           camera=CAMERA, ticks=ticks, ground_truth=True, **options)
        summary = run(config, lambda rig: GroundTruthPerceiver(rig.world, rig.camera),
                      make_plan_step, fake_carla.FakeClient)
    finally:
        server.stop()
    return summary, trace


# The car body (1.06 m half-width) stays inside a 3.5 m lane while |lateral| < 0.69 m.
IN_LANE_M = 1.75 - fake_carla.VEHICLE_EXTENTS["vehicle.lincoln.mkz_2020"][1]


def test_keeps_its_lane_from_an_offset_start() -> None:
    summary, trace = drive(fake_carla.Scenario(), ticks=200, start_offset_m=0.6, route_m=150.0)
    lateral = np.array([t["lateral"] for t in trace])
    centred = int(np.argmax(np.abs(lateral) < 0.25))
    print(f"\noffset start 0.6 m: within 0.25 m of the centre after {centred} ticks, then within "
          f"{np.abs(lateral[centred:]).max():.2f} m")
    assert 0 < centred < 100, "never came back to the lane centre"
    assert np.abs(lateral[centred:]).max() < 0.3  # and stays there (broken line on its left)
    assert np.abs(lateral).max() < IN_LANE_M and summary["lane_invasions"] == 0
    assert summary["collisions"] == 0 and summary["off_road_s"] == 0.0
    assert summary["distance_m"] > 60.0 and summary["route_completion"] > 0.4


def test_follows_a_curve() -> None:
    """A 120 m radius right-hander (measured: 0.08 m RMS, docs/benchmarks.md)."""
    summary, trace = drive(fake_carla.Scenario(curvature=1 / 120), ticks=240)
    lateral = np.array([t["lateral"] for t in trace])
    print(f"\ncurve R 120 m: cross-track RMS {np.sqrt(np.mean(lateral**2)):.2f} m, max "
          f"{np.abs(lateral).max():.2f} m")
    assert np.sqrt(np.mean(lateral**2)) <= 0.2 and np.abs(lateral).max() < IN_LANE_M
    assert summary["lane_invasions"] == 0 and summary["off_road_s"] == 0.0
    assert summary["distance_m"] > 60.0


def test_stops_behind_a_stopped_car() -> None:
    scenario = fake_carla.Scenario(stopped_car_s=45.0, lanes=1)  # no lane to pass it in
    summary, trace = drive(scenario, ticks=400)
    assert summary["collisions"] == 0
    assert trace[-1]["speed"] < 0.2
    ego_front = trace[-1]["s"] + fake_carla.VEHICLE_EXTENTS["vehicle.lincoln.mkz_2020"][0]
    car_rear = 45.0 - fake_carla.VEHICLE_EXTENTS["vehicle.audi.a2"][0]
    print(f"\nstopped car at 45 m: stopped {car_rear - ego_front:.1f} m behind it")
    assert 1.0 < car_rear - ego_front < 12.0, f"stopped {car_rear - ego_front:.1f} m short"
    assert max(t["speed"] for t in trace) > 5.0  # it did drive first


def test_safe_stop_when_frames_stop_arriving() -> None:
    scenario = fake_carla.Scenario(camera_stops_after=81)  # the warm-up tick and 80 more
    summary, trace = drive(scenario, ticks=160, sensor_timeout_s=0.05)
    assert all(t["frame"] for t in trace[:80]) and not any(t["frame"] for t in trace[80:])
    assert trace[79]["speed"] > 3.0 and trace[79]["status"] != "safe_stop"
    after = trace[80:]
    first_stop = next(i for i, t in enumerate(after) if t["status"] == "safe_stop")
    assert first_stop <= 12  # within the planner's deadline (0.5 s = 10 ticks) and a tick or two
    assert all(t["status"] == "safe_stop" for t in after[first_stop:])
    assert after[-1]["speed"] < 0.1
    assert summary["frames_missed"] == 80 and summary["collisions"] == 0
