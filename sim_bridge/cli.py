"""`perception sim`: drive a simulator's car with our perception, planner and controller.

    perception sim --host 127.0.0.1 --port 2000 --town Town04 --ticks 600 --out run.mcap
    perception sim --simulator metadrive --map SCrC --traffic 0.1 --seed 0 --json run.json

CARLA needs a server (or `--fake`, the in-process fake of sim_bridge/fake_carla.py: a
two-lane road, optionally curved or with a stopped car); MetaDrive runs in this process, from
its own virtual environment (scripts/setup_metadrive.sh). Each simulator's module is imported
only when it is chosen, so either can be missing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from perception.commands.options import (
    add_foxglove_arguments,
    add_models_argument,
    foxglove_address,
)
from perception.driving.camera import CameraModel, camera_file_text
from perception.errors import PerceptionError
from perception.logs.files import write_atomically
from perception.zoo.registry import model_names
from sim_bridge.camera_spec import CameraSpec
from sim_bridge.metrics import format_table
from sim_bridge.perceivers import planning_perceiver

if TYPE_CHECKING:
    from perception.pipeline import Perceiver
    from sim_bridge.bridge import SimConfig
    from sim_bridge.metadrive_run import MetaDriveRun

FAKE_SCENARIOS = {
    "straight": {},
    "curve": {"curvature": 1 / 150},
    "stopped-car": {"stopped_car_s": 60.0, "lanes": 1},
}
DEFAULTS = {  # per simulator: --camera, --route, --traffic
    "carla": ("640x360,90", 0.0, 0.0),
    "metadrive": ("640x360,60", 300.0, 0.1),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--simulator", choices=sorted(DEFAULTS), default="carla",
                        help="CARLA (a server, or --fake) or MetaDrive (in this process; its "
                             "own virtual environment: scripts/setup_metadrive.sh)")
    parser.add_argument("--camera", metavar="WxH,FOV",
                        help="RGB camera size and horizontal field of view (default "
                             "640x360,90 in CARLA, 640x360,60 in MetaDrive)")
    parser.add_argument("--ticks", type=int, default=600,
                        help="simulation steps to drive (default 600: 30 s in CARLA at 20 Hz, "
                             "60 s in MetaDrive at 10 Hz)")
    parser.add_argument("--out", type=Path, help="record the run to this MCAP file")
    add_foxglove_arguments(parser, "publish the run live for the Foxglove app (WebSocket)")
    parser.add_argument("--traffic", type=float, metavar="N|DENSITY",
                        help="CARLA: spawn N cars driven by the Traffic Manager (default 0); "
                             "MetaDrive: traffic density in [0, 1] (default 0.1)")
    parser.add_argument("--route", type=float, metavar="METRES",
                        help="measure route completion over this many metres (CARLA: along "
                             "the lane, default off; MetaDrive: of its route, default 300)")
    parser.add_argument("--perception", choices=["models", "ground-truth"], default="models",
                        help="our models on the camera image (default), or the simulator's "
                             "labels (a perfect perceiver: the baseline)")
    add_models_argument(parser)  # for --perception models
    carla = parser.add_argument_group("CARLA")
    carla.add_argument("--host", default="127.0.0.1", help="CARLA server (default 127.0.0.1)")
    carla.add_argument("--port", type=int, default=2000, help="CARLA RPC port (default 2000)")
    carla.add_argument("--timeout", type=float, default=10.0,
                       help="seconds to wait for the server to answer (default 10)")
    carla.add_argument("--town", help="load this map first (e.g. Town04); default: as is")
    carla.add_argument("--delta", type=float, default=0.05,
                       help="fixed time step in seconds (default 0.05)")
    carla.add_argument("--ground-truth", action="store_true",
                       help="add CARLA's labels to --out (drivable area, lanes, 2-D boxes)")
    carla.add_argument("--vehicle", default="vehicle.lincoln.mkz_2020", help="ego blueprint")
    carla.add_argument("--spawn-point", type=int, default=0, help="index of the start point")
    carla.add_argument("--fake", choices=sorted(FAKE_SCENARIOS),
                       help="no server: drive in the in-process fake CARLA on this road")
    metadrive = parser.add_argument_group("MetaDrive")
    metadrive.add_argument("--map", default="SCrC",
                           help="block letters (S straight, C curve, r on-ramp, X crossing, "
                                "O roundabout...) or a number of random blocks (default SCrC)")
    metadrive.add_argument("--seed", type=int, default=0, help="scenario seed (default 0)")
    metadrive.add_argument("--truth-every", type=int, default=1, metavar="N",
                           help="score perception against the semantic camera every N frames "
                                "(default 1; each costs a second render)")
    metadrive.add_argument("--json", type=Path, metavar="SUMMARY.json",
                           help="write the run's scores to this JSON file")
    metadrive.add_argument("--behaviour", choices=["rules", "dqn"], default="rules",
                           help="the planner alone (default), or the DQN behaviour layer "
                                "choosing lane and speed for it (perception behaviour)")
    metadrive.add_argument("--behaviour-policy", type=Path, metavar="DQN.pt",
                           default=Path("models/behaviour/dqn.pt"),
                           help="the DQN's policy file (default models/behaviour/dqn.pt)")
    metadrive.add_argument("--save-camera", type=Path, metavar="CAMERA.yaml",
                           help="write the camera file the planner used")


def check_common(args: argparse.Namespace) -> None:
    if args.ticks < 1:
        raise PerceptionError(f"--ticks {args.ticks}: must be at least 1")
    if args.route is not None and not args.route >= 0:
        raise PerceptionError(f"--route {args.route:g}: must be >= 0 metres")
    for option, path, suffix in (("--out", args.out, ".mcap"), ("--json", args.json, ".json"),
                                 ("--save-camera", args.save_camera, ".yaml")):
        if path is None:
            continue
        if path.suffix != suffix:
            raise PerceptionError(f"{option} {path}: must end in {suffix}")
        if not path.parent.is_dir():
            raise PerceptionError(f"{option} {path}: folder {path.parent} does not exist")


def carla_config_from(args: argparse.Namespace) -> SimConfig:
    from sim_bridge.bridge import SimConfig

    camera, route, traffic = DEFAULTS["carla"]
    traffic = traffic if args.traffic is None else args.traffic
    if not 0 < args.port < 65535:  # CARLA also uses port + 1 for sensor streams
        raise PerceptionError(f"--port {args.port}: must be 1..65534")
    if not 0.0 < args.delta <= 0.1:
        raise PerceptionError(f"--delta {args.delta:g}: must be in (0, 0.1] s (CARLA's physics "
                              "is unstable with longer steps)")
    if not args.timeout > 0:  # also refuses nan
        raise PerceptionError(f"--timeout {args.timeout:g}: must be > 0")
    if not (traffic >= 0 and traffic == int(traffic)):
        raise PerceptionError(f"--traffic {traffic:g}: CARLA takes a number of cars, >= 0")
    return SimConfig(host=args.host, port=args.port, town=args.town,
                     camera=CameraSpec.parse(args.camera or camera), ticks=args.ticks,
                     fixed_delta_s=args.delta, connect_timeout_s=args.timeout,
                     vehicle=args.vehicle, spawn_point=args.spawn_point,
                     route_m=route if args.route is None else args.route,
                     traffic=int(traffic),
                     ground_truth=args.ground_truth or args.perception == "ground-truth",
                     out=args.out, foxglove=foxglove_address(args))


def metadrive_config_from(args: argparse.Namespace) -> MetaDriveRun:
    from sim_bridge.metadrive_run import MetaDriveRun
    from sim_bridge.metadrive_sim import MetaDriveConfig, check_config

    camera, route, traffic = DEFAULTS["metadrive"]
    spec = CameraSpec.parse(args.camera or camera)
    if args.camera and "," not in args.camera:
        spec = CameraSpec(spec.width, spec.height, CameraSpec.parse(camera).fov)
    if args.truth_every < 1:
        raise PerceptionError(f"--truth-every {args.truth_every}: must be at least 1")
    route = route if args.route is None else args.route
    if not route > 0:
        raise PerceptionError(f"--route {route:g}: MetaDrive scores a route: must be > 0")
    simulator = MetaDriveConfig(map=args.map, traffic=traffic if args.traffic is None
                                else args.traffic, seed=args.seed, width=spec.width,
                                height=spec.height, fov_deg=spec.fov,
                                truth_every=args.truth_every)
    check_config(simulator)
    behaviour = None
    if args.behaviour == "dqn":
        from sim_bridge.behaviour_policy import load_policy

        load_policy(args.behaviour_policy)  # a bad file is refused before MetaDrive starts
        behaviour = args.behaviour_policy
    return MetaDriveRun(simulator, ticks=args.ticks, route_m=route, out=args.out,
                        foxglove=foxglove_address(args), behaviour=behaviour)


def main(args: argparse.Namespace) -> int:
    check_common(args)
    if args.simulator == "metadrive":
        config = metadrive_config_from(args)
    else:
        config = carla_config_from(args)
    perceiver, detects = None, True  # the simulator's labels have every road user's box
    if args.perception == "models":
        perceiver, detects = planning_perceiver(model_names(args.models))
    try:
        if args.simulator == "metadrive":
            summary = drive_metadrive(config, perceiver, detects, args.save_camera)
        else:
            summary = drive_carla(config, perceiver, detects, args.fake)
    finally:
        if perceiver is not None:
            perceiver.close()
    print(format_table(summary))
    if args.json is not None:
        write_atomically(args.json, json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    if args.out is not None:
        print(f"wrote {args.out}", file=sys.stderr)
    return 130 if summary["interrupted"] else 0


def drive_metadrive(config: MetaDriveRun, perceiver: Perceiver | None, detects: bool,
                    save_camera: Path | None) -> dict:
    from sim_bridge.metadrive_run import run

    def write_camera(camera: CameraModel) -> None:
        if save_camera is not None:
            write_atomically(save_camera, camera_file_text(
                camera, "MetaDrive's ego camera, as `perception sim` planned with it"))

    make_perceive = (None if perceiver is None
                     else lambda simulator: lambda frame: perceiver.perceive([frame])[0])
    return run(config, make_perceive, detects, write_camera)


def drive_carla(config: SimConfig, perceiver: Perceiver | None, detects: bool,
                fake: str | None) -> dict:
    import carla

    from sim_bridge.bridge import Rig, run
    from sim_bridge.driving import car_geometry, car_planner
    from sim_bridge.ground_truth import GroundTruthPerceiver
    from sim_bridge.loop import Perceive, PlanStep

    def make_perceive(rig: Rig) -> Perceive:
        if perceiver is None:
            return GroundTruthPerceiver(rig.world, rig.camera)
        return lambda frame: perceiver.perceive([frame])[0]

    def make_plan_step(rig: Rig) -> PlanStep:
        return car_planner(config.camera, car_geometry(rig.ego), detects).step

    client_factory, server = carla.Client, None
    try:
        if fake:
            from sim_bridge.fake_carla import FakeClient, FakeServer, Scenario

            server = FakeServer(Scenario(**FAKE_SCENARIOS[fake])).start(config.host, config.port)
            client_factory = FakeClient
        return run(config, make_perceive, make_plan_step, client_factory)
    finally:
        if server is not None:
            server.stop()
