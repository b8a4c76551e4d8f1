"""`perception sim`: drive a CARLA car with our perception, planner and controller.

    perception sim --host 127.0.0.1 --port 2000 --town Town04 --ticks 600 --out run.mcap

Without a CARLA server, `--fake` runs the same loop against the in-process fake
(sim_bridge/fake_carla.py): a two-lane road, optionally curved or with a stopped car.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import carla

from perception.commands.options import add_models_argument
from perception.errors import PerceptionError
from perception.zoo.registry import model_names
from sim_bridge.bridge import Perceive, PlanStep, Rig, SimConfig, run
from sim_bridge.driving import car_geometry, car_planner, planning_perceiver
from sim_bridge.ground_truth import GroundTruthPerceiver
from sim_bridge.metrics import format_table
from sim_bridge.sensors import CameraSpec

FAKE_SCENARIOS = {
    "straight": {},
    "curve": {"curvature": 1 / 150},
    "stopped-car": {"stopped_car_s": 60.0, "lanes": 1},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="CARLA server (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=2000, help="CARLA RPC port (default 2000)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for the server to answer (default 10)")
    parser.add_argument("--town", help="load this map first (e.g. Town04); default: as is")
    parser.add_argument("--camera", default="640x360,90", metavar="WxH,FOV",
                        help="RGB camera size and horizontal field of view (default 640x360,90)")
    parser.add_argument("--ticks", type=int, default=600,
                        help="simulation steps to drive (default 600 = 30 s at 20 Hz)")
    parser.add_argument("--delta", type=float, default=0.05,
                        help="fixed time step in seconds (default 0.05)")
    parser.add_argument("--out", type=Path, help="record the run to this MCAP file")
    parser.add_argument("--ground-truth", action="store_true",
                        help="add CARLA's labels to --out (drivable area, lanes, 2-D boxes)")
    parser.add_argument("--traffic", type=int, default=0, metavar="N",
                        help="spawn N cars driven by the Traffic Manager")
    parser.add_argument("--vehicle", default="vehicle.lincoln.mkz_2020", help="ego blueprint")
    parser.add_argument("--spawn-point", type=int, default=0, help="index of the start point")
    parser.add_argument("--route", type=float, default=0.0, metavar="METRES",
                        help="measure route completion along the lane for this many metres")
    parser.add_argument("--perception", choices=["models", "ground-truth"], default="models",
                        help="our models on the camera image (default), or CARLA's labels")
    add_models_argument(parser)  # for --perception models
    parser.add_argument("--fake", choices=sorted(FAKE_SCENARIOS),
                        help="no server: drive in the in-process fake CARLA on this road")


def config_from(args: argparse.Namespace) -> SimConfig:
    if args.ticks < 1:
        raise PerceptionError(f"--ticks {args.ticks}: must be at least 1")
    if not 0 < args.port < 65535:  # CARLA also uses port + 1 for sensor streams
        raise PerceptionError(f"--port {args.port}: must be 1..65534")
    if not 0.0 < args.delta <= 0.1:
        raise PerceptionError(f"--delta {args.delta:g}: must be in (0, 0.1] s (CARLA's physics "
                              "is unstable with longer steps)")
    if not args.timeout > 0:  # also refuses nan
        raise PerceptionError(f"--timeout {args.timeout:g}: must be > 0")
    if args.traffic < 0:
        raise PerceptionError(f"--traffic {args.traffic}: must be >= 0")
    if not args.route >= 0:
        raise PerceptionError(f"--route {args.route:g}: must be >= 0 metres")
    if args.out is not None and args.out.suffix != ".mcap":
        raise PerceptionError(f"--out {args.out}: must end in .mcap")
    if args.out is not None and not args.out.parent.is_dir():
        raise PerceptionError(f"--out {args.out}: folder {args.out.parent} does not exist")
    return SimConfig(host=args.host, port=args.port, town=args.town,
                     camera=CameraSpec.parse(args.camera), ticks=args.ticks,
                     fixed_delta_s=args.delta, connect_timeout_s=args.timeout,
                     vehicle=args.vehicle, spawn_point=args.spawn_point, route_m=args.route,
                     traffic=args.traffic,
                     ground_truth=args.ground_truth or args.perception == "ground-truth",
                     out=args.out)


def main(args: argparse.Namespace) -> int:
    config = config_from(args)
    perceiver, detects = None, True  # CARLA's ground truth has every road user's box
    if args.perception == "models":
        perceiver, detects = planning_perceiver(model_names(args.models))

    def make_perceive(rig: Rig) -> Perceive:
        if perceiver is None:
            return GroundTruthPerceiver(rig.world, rig.camera)
        return lambda frame: perceiver.perceive([frame])[0]

    def make_plan_step(rig: Rig) -> PlanStep:
        return car_planner(config.camera, car_geometry(rig.ego), detects).step

    client_factory, server = carla.Client, None
    try:
        if args.fake:
            from sim_bridge.fake_carla import FakeClient, FakeServer, Scenario

            server = FakeServer(Scenario(**FAKE_SCENARIOS[args.fake])).start(args.host, args.port)
            client_factory = FakeClient
        summary = run(config, make_perceive, make_plan_step, client_factory)
    finally:
        if server is not None:
            server.stop()
        if perceiver is not None:
            perceiver.close()
    print(format_table(summary))
    if args.out is not None:
        print(f"wrote {args.out}", file=sys.stderr)
    return 130 if summary["interrupted"] else 0
