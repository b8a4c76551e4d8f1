"""The behaviour policies: the trained DQN's Q-network (loaded weights-only) and the rules.

A policy file is a pair: `NAME.pt`, the Q-network's `state_dict` (plain tensors, read with
`torch.load(weights_only=True)`: no pickle of code, unlike stable-baselines3's `.zip`), and
`NAME.json` beside it with the sizes and the action names, checked before the weights load.
The network is stable-baselines3's default DQN Q-network: an MLP 64-64 with ReLU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from perception.driving.planning import Tactic
from perception.errors import PerceptionError
from sim_bridge.behaviour_env import (
    ACTIONS,
    DECISION_STEPS,
    OBSERVATION_NAMES,
    OBSERVATION_SIZE,
    PLANNER,
    command,
    next_target_lane,
    observation,
    scene_of,
)

HIDDEN = (64, 64)
FORMAT = "perception-behaviour-dqn/1"


class PolicyFileError(PerceptionError):
    """A policy file that cannot be used: one line, exit 2."""


class Policy(Protocol):
    def act(self, observation: np.ndarray) -> int: ...


class RulePolicy:
    """One action every decision. `keep_lane` is our planner's behaviour: keep the lane, the
    in-path rule sets the speed. `follow` is that plus following the lead car at the follow cap
    (behaviour_env.follow_cap): the baseline that shows what the DQN's choices add to it."""

    def __init__(self, action: str = "keep_lane") -> None:
        self.action = ACTIONS.index(action)

    def act(self, observation: np.ndarray) -> int:
        return self.action


def q_network(observation_size: int, actions: int) -> Any:
    import torch

    layers: list[torch.nn.Module] = []
    size = observation_size
    for hidden in HIDDEN:
        layers += [torch.nn.Linear(size, hidden), torch.nn.ReLU()]
        size = hidden
    layers.append(torch.nn.Linear(size, actions))
    return torch.nn.Sequential(*layers)


class DqnPolicy:
    """The greedy action of a trained Q-network."""

    name = "dqn"

    def __init__(self, network: Any) -> None:
        self.network = network.eval()

    def q_values(self, observation: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.network(torch.as_tensor(observation, dtype=torch.float32)[None])[0].numpy()

    def act(self, observation: np.ndarray) -> int:
        return int(np.argmax(self.q_values(observation)))


def save_policy(state_dict: dict, path: Path, card: dict) -> None:
    """Write `path` (.pt) and its JSON beside it; `card` adds training facts to the JSON."""
    import torch

    meta = {"format": FORMAT, "observation_size": OBSERVATION_SIZE,
            "observations": list(OBSERVATION_NAMES), "actions": list(ACTIONS),
            "hidden": list(HIDDEN), **card}
    torch.save({key: value.detach().cpu().clone() for key, value in state_dict.items()}, path)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")


def load_policy(path: Path) -> DqnPolicy:
    """A policy file, checked: its JSON's format and sizes must be this code's, and the weights
    must load weights-only into the network those sizes describe."""
    import torch

    meta_path = path.with_suffix(".json")
    if path.suffix != ".pt":
        raise PolicyFileError(f"{path}: a behaviour policy is a .pt file (with its .json)")
    if not path.is_file() or not meta_path.is_file():
        raise PolicyFileError(f"{path}: policy file or its {meta_path.name} not found")
    try:
        meta = json.loads(meta_path.read_text())
        assert isinstance(meta, dict)
    except (ValueError, AssertionError):
        raise PolicyFileError(f"{meta_path}: not a behaviour policy's JSON") from None
    if meta.get("format") != FORMAT:
        raise PolicyFileError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("observation_size") != OBSERVATION_SIZE or meta.get("actions") != list(ACTIONS):
        raise PolicyFileError(
            f"{path}: made for {meta.get('observation_size')} observations and actions "
            f"{meta.get('actions')}; this code has {OBSERVATION_SIZE} and {list(ACTIONS)}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        network = q_network(OBSERVATION_SIZE, len(ACTIONS))
        network.load_state_dict(state)
    except Exception as error:  # a corrupt file, another network's tensors, a pickle of code
        raise PolicyFileError(f"{path}: not this policy's weights "
                              f"({type(error).__name__}: {str(error).splitlines()[0][:120]})"
                              ) from None
    return DqnPolicy(network)


class BehaviourLayer:
    """The policy in the camera loop (`perception sim --simulator metadrive --behaviour dqn`):
    every DECISION_STEPS ticks it picks an action on MetaDrive's ground truth; every tick it
    hands the Planner the target lane's centre (from where the car is now) as a `Tactic`'s
    offset and the action's speed as its cap. The Planner's fail-safe and in-path rule stay
    (so `follow` creeps near a car here, as the Planner does without tracking: the executor's
    `follow_cap` is not used), and a lane change into a lane that is not clear beside and
    behind is vetoed (ground truth, behaviour_env.lane_change_clear)."""

    def __init__(self, policy: Policy) -> None:
        self.policy, self.ticks, self.target_lane = policy, 0, None
        self.speed_mps = PLANNER.cruise_speed_mps

    def tactic(self, agent: Any, others: list[Any]) -> Tactic:
        lanes = list(agent.navigation.current_ref_lanes)
        if self.target_lane is None:
            self.target_lane = agent.lane_index[2]
        self.target_lane = int(np.clip(self.target_lane, 0, len(lanes) - 1))
        if self.ticks % DECISION_STEPS == 0:
            scene = scene_of(agent, others)
            order = command(self.policy.act(observation(scene)), scene)
            self.target_lane, _ = next_target_lane(agent, others, self.target_lane,
                                                   order.lane_shift)
            self.speed_mps = order.target_speed_mps
        self.ticks += 1
        # where we are in the target lane (MetaDrive: + right) is where the lane's centre is
        # from us in the Planner's frame (+ left)
        _, lateral = lanes[self.target_lane].local_coordinates(agent.position)
        return Tactic(offset_m=float(lateral), max_speed_mps=self.speed_mps)
