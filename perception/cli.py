"""The `perception` command: one table of subcommands, each in the module that owns it.

A subcommand module offers `add_arguments(parser)` and `main(args) -> int`. Modules are imported
only when their command runs, so `perception run` never loads the server, the simulator client
or torch. This is the one place that wires the packages together.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from perception.errors import PerceptionError

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("perception.commands.run", "perceive an image, a folder of images or a video"),
    "models": ("perception.commands.models", "list, pull and inspect models of the zoo"),
    "serve": ("serving.cli", "start the HTTP (and gRPC) service"),
    "calibrate": ("perception.commands.calibrate", "calibrate a camera from chessboard photos"),
    "replay": ("perception.commands.replay", "replay drive logs (MCAP, rosbag2, KITTI, video)"),
    "record": ("perception.commands.record", "record a camera, video or KITTI folder to MCAP"),
    "train": ("models.train", "train our multi-task network"),
    "export": ("models.export", "export a checkpoint to ONNX (fp32, fp16, INT8)"),
    "sim": ("sim_bridge.cli", "drive in the CARLA simulator, closed loop"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perception", description="Camera perception for driving: detect, segment, plan, "
        "serve, replay drive logs, and drive in CARLA. `perception COMMAND -h` for each.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(module_name=module_name)
        if name in sys.argv[1:2]:  # import only the module of the command being run
            _load(module_name).add_arguments(sub)
    return parser


def _load(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise PerceptionError(
            f"this command needs {error.name!r}, which is not installed "
            "(see the extras in README.md)") from error


def main(argv: list[str] | None = None) -> int:
    if argv is not None:
        sys.argv[1:] = argv
    try:
        args = build_parser().parse_args()
        return int(_load(args.module_name).main(args) or 0)
    except PerceptionError as error:
        print(f"perception: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("perception: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug: one line unless the user asks for the traceback
        if os.environ.get("PERCEPTION_DEBUG"):
            raise
        print(f"perception: internal error: {type(error).__name__}: {error} "
              "(set PERCEPTION_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
