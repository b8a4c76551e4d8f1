"""`perception sim --simulator metadrive`: one scored drive on a MetaDrive map.

The loop (sim_bridge/loop.py) drives MetaDrive's car with our perception and planner; the
planner is told the navigation's route (the roads ahead, as a `Tactic`), so that at a fork it
keeps to the route while perception still decides where on the road to drive. Each
step is then scored from MetaDrive's ground truth (scoring.py): progress along the navigation
route (its first `route_m` metres), the offset from the lane centre, the gap to the vehicle
ahead, crashes and leaving the road, and, on frames with semantic labels, the drivable-area and
lane-line IoU of our perception. The run ends after `ticks` steps or when the route is done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from perception.driving.camera import CameraModel
from perception.driving.planning import Tactic
from perception.logs.foxglove_live import FoxgloveAddress
from perception.results import Plan
from sim_bridge.behaviour_policy import BehaviourLayer, load_policy
from sim_bridge.loop import Perceive, step
from sim_bridge.metadrive_sim import STEP_S, MetaDriveConfig, MetaDriveSimulator, car_planner
from sim_bridge.metrics import DrivingMetrics
from sim_bridge.recording import live_view, recording
from sim_bridge.scoring import DriveScore

# DrivingMetrics' keys that only CARLA's sensors fill, or that DriveScore replaces
NOT_MEASURED_HERE = ("collisions", "lane_invasions", "route_completion")
# Cost per metre a path strays from where the whole car stays on the route's road: more than
# lane keeping can earn (w_lane + w_centre = 7), so a faint or broken line is not followed off it
ROUTE_WEIGHT = 8.0


@dataclass(frozen=True)
class MetaDriveRun:
    simulator: MetaDriveConfig = field(default_factory=MetaDriveConfig)
    ticks: int = 600
    route_m: float = 300.0
    out: Path | None = None
    foxglove: FoxgloveAddress | None = None  # publish live for the Foxglove app
    behaviour: Path | None = None  # a DQN policy file (behaviour_policy.py); None: the rules


def run(config: MetaDriveRun, make_perceive: Callable[[MetaDriveSimulator], Perceive] | None,
        detections_available: bool = True,
        on_camera: Callable[[CameraModel], None] = lambda camera: None) -> dict:
    """One scored drive; `make_perceive` None drives on the semantic camera (ground truth).
    Ctrl-C ends it early, with the scores so far; MetaDrive is always closed."""
    simulator_config = config.simulator
    if make_perceive is None:  # the labels are the perception: every frame needs them
        simulator_config = replace(simulator_config, truth_every=1)
    with MetaDriveSimulator(simulator_config) as simulator:
        camera = simulator.camera()
        on_camera(camera)
        planner = car_planner(camera, detections_available)
        layer = None if config.behaviour is None else BehaviourLayer(load_policy(config.behaviour))

        def plan_step(*args: object) -> Plan:
            """The planner, told the navigation's route (and the behaviour layer's wish)."""
            tactic = (Tactic(offset_m=None, weight=ROUTE_WEIGHT) if layer is None
                      else layer.tactic(simulator.env.agent, simulator._other_vehicles()))
            planner.tactic = replace(tactic, route=simulator.route())
            return planner.step(*args)
        perceive = (simulator.ground_truth if make_perceive is None
                    else make_perceive(simulator))
        metrics, score = DrivingMetrics(STEP_S), DriveScore(config.route_m)
        with recording(config.out, camera) as recorder, live_view(config.foxglove, camera) as live:
            started = time.perf_counter()
            try:
                for _ in range(config.ticks):
                    done = step(simulator, perceive, plan_step, metrics, recorder,
                                want_truth=make_perceive is not None, live=live)
                    if make_perceive is not None and done.result and done.truth:
                        score.perception(done.result, done.truth)
                    offset, on_curve = simulator.lane_offset()
                    score.step(metrics.ticks * STEP_S, simulator.travelled_m, offset, on_curve,
                               simulator.lead_gap(), simulator.crashing(), not done.ego.on_road)
                    if score.route_done or simulator.info.get("arrive_dest", False):
                        break
            except KeyboardInterrupt:
                metrics.interrupted = True
            wall_s = time.perf_counter() - started
            summary = {key: value for key, value in metrics.summary().items()
                       if key not in NOT_MEASURED_HERE}
            summary.update(score.summary())
            summary["realtime_factor"] = round(metrics.ticks * STEP_S / wall_s, 4)
            summary["perception"] = "ground-truth" if make_perceive is None else "models"
            summary["behaviour"] = "rules" if config.behaviour is None else "dqn"
            if recorder is not None:
                recorder.metrics(metrics.ticks * STEP_S, summary)
    return summary
