"""Our network on disk and back: checkpoints saved atomically, loaded safely and checked.

A checkpoint is a plain dict of tensors and values (`architecture`, `config`, `step`, `ema`
weights; a training run's also `model`, `ema_state`, `optimizer`), so it loads with
`torch.load(..., weights_only=True)`: no pickled code runs. Loading checks that it is ours
before any weight is used: a checkpoint of another network is refused with its name.
"""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

import torch

from models.net import ARCHITECTURE, MultiTaskNet, NetConfig
from perception.errors import PerceptionError
from perception.logs.files import atomic_output


class CheckpointError(PerceptionError):
    """A checkpoint that is missing, unreadable or of another architecture/configuration."""


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: a crash mid-write never leaves a truncated `last.pt`."""
    with atomic_output(path) as temp:
        torch.save(state, temp)


def load_checkpoint(path: Path, config: NetConfig | None = None, grow: bool = False) -> dict:
    """A checkpoint's state, checked to be ours (and of `config`, when given). With `grow`,
    it may also be of another input size (the network is fully convolutional) or have fewer
    `seg_context` blocks than `config` (new blocks start as the identity): weights to
    fine-tune a `config` network from, with `build_net(state, config=config)`."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # torch's long advice to unpickle it anyway: no
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (not one, or one "
                              "holding more than tensors and plain values, which "
                              "torch.load(weights_only=True) refuses)") from error
    except Exception as error:  # zip and torch errors alike: not a usable file
        reason = (str(error).strip().splitlines() or [""])[0].split(". ")[0]
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint "
                              f"({type(error).__name__}: {reason})") from error
    if not isinstance(state, dict) or state.get("architecture") != ARCHITECTURE:
        found = state.get("architecture", "none") if isinstance(state, dict) else "none"
        raise CheckpointError(f"{path}: a checkpoint of architecture {found!r}, not "
                              f"{ARCHITECTURE!r} (a checkpoint written by `perception train`)")
    try:
        found_config = NetConfig.from_dict(state["config"])
    except (KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{path}: holds no usable network configuration ({error})") \
            from error
    if grow and config is not None:
        blocks = max(found_config.seg_context, config.seg_context)  # never fewer than it has
        found_config = replace(found_config, width=config.width, height=config.height,
                               seg_context=blocks)
    if config is not None and found_config != config:
        raise CheckpointError(f"{path}: was trained with {state['config']}, which differs "
                              f"from this run's {config.to_dict()}")
    return state


def build_net(state: dict, which: str = "ema", config: NetConfig | None = None) -> MultiTaskNet:
    """A network with a checkpoint's weights (its EMA weights by default). With `config` (a
    checkpoint loaded with `grow`), the network is `config`'s: context blocks the checkpoint
    lacks keep their identity start."""
    net = MultiTaskNet(config or NetConfig.from_dict(state["config"]))
    try:
        missing, unexpected = net.load_state_dict(state[which], strict=config is None)
    except (RuntimeError, KeyError) as error:
        detail = " ".join(str(error).split())[:300]  # PyTorch puts every key on a line
        raise CheckpointError(f"checkpoint weights do not fit the network: {detail}") from error
    unfit = unexpected + [key for key in missing if not key.startswith("seg_context.")]
    if unfit:
        raise CheckpointError(f"checkpoint weights do not fit the network: {unfit[:5]}")
    return net.eval()


def pick_device(name: str) -> torch.device:
    """`auto` (CUDA when PyTorch sees one, else the CPU), `cpu` or `cuda[:N]`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PerceptionError("--device cuda asked for, but PyTorch sees no CUDA device")
    return torch.device(name)
