"""`perception behaviour`: train the DQN behaviour layer in MetaDrive, and measure it against
the rule policy (sim_bridge/behaviour_env.py says what is trained and how it maps onto our
Planner). Runs in MetaDrive's environment with the [behaviour] extra (stable-baselines3).

    perception behaviour train --steps 20000 --seed 0 --out runs/behaviour/s0
    perception behaviour evaluate --policy models/behaviour/dqn.pt --episodes 20 --seeds 1000 \
        --json eval.json
    perception behaviour evaluate ... --observe perception   # the policies see our perception

`train` writes TensorBoard logs (OUT/tb), checkpoints (OUT/checkpoints/*.zip, every
`--checkpoint-every` steps; `--resume CKPT.zip` goes on from one) and the policy file OUT/dqn.pt
with its JSON (weights only, behaviour_policy.py). Training scenarios are MetaDrive seeds
[seed * 1000, seed * 1000 + scenarios); evaluate on seeds outside them (default 100000+).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from perception.errors import PerceptionError
from perception.logs.files import write_atomically
from sim_bridge.behaviour_env import ACTIONS, BehaviourEnvConfig, make_env
from sim_bridge.behaviour_perception import PerceivedScenes
from sim_bridge.behaviour_policy import Policy, RulePolicy, load_policy, save_policy
from sim_bridge.metadrive_sim import MetaDriveConfig, check_config, check_environment, check_map


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = actions.add_parser("train", help="train the DQN (stable-baselines3) in MetaDrive")
    train.add_argument("--steps", type=int, default=20000, help="decisions (0.5 s each)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", type=Path, required=True, help="run folder")
    train.add_argument("--resume", type=Path, metavar="CKPT.zip",
                       help="go on from this checkpoint (a file this command wrote)")
    train.add_argument("--checkpoint-every", type=int, default=2000)
    train.add_argument("--scenarios", type=int, default=50)
    evaluate = actions.add_parser(
        "evaluate", help="the DQN and the rules (keep lane; always follow) on the same seeds")
    evaluate.add_argument("--policy", type=Path, default=Path("models/behaviour/dqn.pt"))
    evaluate.add_argument("--episodes", type=int, default=20)
    evaluate.add_argument("--seeds", type=int, default=100000, metavar="FIRST",
                          help="MetaDrive seeds FIRST..FIRST+EPISODES-1 (held out)")
    evaluate.add_argument("--json", type=Path, metavar="OUT.json")
    evaluate.add_argument("--observe", choices=("truth", "perception"), default="truth",
                          help="what the policies observe: MetaDrive's ground truth, or our "
                               "perception on the ego camera (default models, rendered at each "
                               "decision; sim_bridge/behaviour_perception.py)")
    evaluate.add_argument("--route-m", type=float, default=BehaviourEnvConfig.route_m,
                          help="an episode ends after this many metres (default %(default)g)")
    for sub in (train, evaluate):
        sub.add_argument("--map", default="SCSCS", help="MetaDrive blocks (default SCSCS)")
        sub.add_argument("--traffic", type=float, default=0.2, help="density in [0, 1]")


def env_config(args: argparse.Namespace, start_seed: int, scenarios: int) -> BehaviourEnvConfig:
    check_config(MetaDriveConfig(map=args.map, traffic=args.traffic, seed=start_seed))
    route_m = getattr(args, "route_m", BehaviourEnvConfig.route_m)
    if not route_m > 0:
        raise PerceptionError(f"--route-m {route_m:g}: must be > 0")
    return BehaviourEnvConfig(map=args.map, traffic=args.traffic, start_seed=start_seed,
                              scenarios=scenarios, route_m=route_m)


def main(args: argparse.Namespace) -> int:
    if args.action == "train":
        return train(args)
    return evaluate(args)


def train(args: argparse.Namespace) -> int:
    if args.steps < 1 or args.checkpoint_every < 1 or args.scenarios < 1:
        raise PerceptionError("--steps, --checkpoint-every and --scenarios must be >= 1")
    if args.resume is not None and not args.resume.is_file():
        raise PerceptionError(f"--resume {args.resume}: no such checkpoint")
    config = env_config(args, args.seed * 1000, args.scenarios)
    check_environment()
    check_map(args.map)
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import CheckpointCallback
    from stable_baselines3.common.monitor import Monitor

    args.out.mkdir(parents=True, exist_ok=True)
    env = Monitor(make_env(config))
    if args.resume is not None:
        try:  # our own checkpoint (SB3's .zip holds a pickle: only load files you wrote)
            model = DQN.load(args.resume, env=env, tensorboard_log=str(args.out / "tb"))
        except Exception as error:
            raise PerceptionError(f"--resume {args.resume}: not a DQN checkpoint "
                                  f"({type(error).__name__})") from None
    else:
        model = DQN("MlpPolicy", env, learning_rate=5e-4, buffer_size=50_000,
                    learning_starts=1000, batch_size=64, gamma=0.95, train_freq=4,
                    target_update_interval=500, exploration_fraction=0.3,
                    exploration_final_eps=0.05, seed=args.seed, verbose=0,
                    tensorboard_log=str(args.out / "tb"))
    started = time.perf_counter()
    try:
        model.learn(args.steps, callback=CheckpointCallback(
            args.checkpoint_every, str(args.out / "checkpoints"), name_prefix="dqn"),
            reset_num_timesteps=args.resume is None, tb_log_name="dqn")
    finally:
        env.close()
    minutes = (time.perf_counter() - started) / 60
    save_policy(model.q_net.q_net.state_dict(), args.out / "dqn.pt", {
        "trained_decisions": int(model.num_timesteps), "seed": args.seed, "map": args.map,
        "traffic": args.traffic, "train_seeds": [config.start_seed,
                                                 config.start_seed + config.scenarios],
        "train_minutes": round(minutes, 1)})
    print(f"trained {model.num_timesteps} decisions in {minutes:.1f} min; wrote "
          f"{args.out / 'dqn.pt'}", file=sys.stderr)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    if args.episodes < 1:
        raise PerceptionError(f"--episodes {args.episodes}: must be >= 1")
    if args.json is not None and args.json.suffix != ".json":
        raise PerceptionError(f"--json {args.json}: must end in .json")
    config = env_config(args, args.seeds, args.episodes)
    policies: list[tuple[str, Policy]] = [("dqn", load_policy(args.policy)),
                                          ("rules", RulePolicy("keep_lane")),
                                          ("rules_follow", RulePolicy("follow"))]
    check_environment()
    check_map(args.map)
    scenes = perceived_scenes() if args.observe == "perception" else None
    env = make_env(config, scenes)
    report: dict = {"map": args.map, "traffic": args.traffic, "episodes": args.episodes,
                    "seeds": [args.seeds, args.seeds + args.episodes - 1],
                    "route_m": config.route_m, "observe": args.observe,
                    "policy_file": str(args.policy)}
    if scenes is not None:
        camera = scenes.camera_config
        report["camera"] = f"{camera.width}x{camera.height},{camera.fov_deg:g}"
        report["models"] = scenes.perceiver.model_names
    try:
        for name, policy in policies:
            report[name] = score(env, policy, range(args.seeds, args.seeds + args.episodes))
    finally:
        env.close()
    if scenes is not None:
        report["frames_with_ego_lane"] = round(scenes.frames_with_lane
                                               / max(scenes.decisions, 1), 3)
    print(json.dumps(report, indent=2))
    if args.json is not None:
        write_atomically(args.json, json.dumps(report, indent=2) + "\n")
    return 0


def perceived_scenes() -> PerceivedScenes:
    """Our default models (lane fitting on) as the policies' eyes."""
    from perception.pipeline import Perceiver  # ONNX Runtime: loaded only when models run
    from perception.zoo.registry import default_models

    return PerceivedScenes(Perceiver.from_names(default_models()))


def score(env: object, policy: Policy, seeds: range) -> dict:
    """One episode per seed; the issue's figures over all of them."""
    episodes = []
    for seed in seeds:
        obs, _ = env.reset(options={"scenario": seed})
        done = truncated = False
        info: dict = {}
        while not (done or truncated):
            obs, _, done, truncated, info = env.step(policy.act(obs))
        episodes.append(info["tally"].summary() | {"seed": seed})
    return figures(episodes)


def figures(episodes: list[dict]) -> dict:
    """The issue's figures over episodes (each a DriveTally summary with its seed)."""
    km = max(sum(e["distance_m"] for e in episodes) / 1000, 1e-9)
    steps = [e["mean_speed_mps"] for e in episodes]
    count = len(episodes)
    return {
        "collision_rate": sum(e["crashed"] for e in episodes) / count,
        "out_of_road_rate": sum(e["out_of_road"] for e in episodes) / count,
        "route_completion": sum(e["route_completion"] for e in episodes) / count,
        "mean_speed_mps": sum(steps) / count,
        "lane_changes_per_km": sum(e["lane_changes"] for e in episodes) / km,
        "vetoed_changes_per_km": sum(e.get("vetoed_changes", 0) for e in episodes) / km,
        "hard_brakes_per_km": sum(e["hard_brakes"] for e in episodes) / km,
        "actions": list(ACTIONS), "episodes": episodes}
