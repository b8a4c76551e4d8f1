"""The `perception` command, and the one place that wires the project's packages together.

A subcommand module offers `add_arguments(parser)` and `main(args) -> int`. Each command's
loader imports its module only when that command runs, so `perception run` never loads the
server, the simulator client or torch; the imports are written out so readers and tools can
follow them.

`run`, `replay` and `record` take SIGTERM as they take Ctrl-C: they stop, keep what was written
and exit 130. Before any command imports OpenCV, its own refusal of huge images
(OPENCV_IO_MAX_IMAGE_PIXELS, read once at import) is lowered to `OPENCV_PIXEL_BACKSTOP`: a
backstop behind the header check of perception/frames.py (`--max-pixels`, 8K by default).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from types import ModuleType

from perception.errors import PerceptionError

OUR_PACKAGES = ("perception", "models", "serving", "sim_bridge")
OPENCV_PIXEL_BACKSTOP = 1 << 28  # 16384 x 16384; OpenCV's own default is 1 << 30
STOPPED_BY_SIGTERM = {"run", "replay", "record", "sim"}  # serve handles its own signals


def _run() -> ModuleType:
    from perception.commands import run
    return run


def _models() -> ModuleType:
    from perception.commands import models
    return models


def _serve() -> ModuleType:
    from serving import cli
    return cli


def _calibrate() -> ModuleType:
    from perception.commands import calibrate
    return calibrate


def _replay() -> ModuleType:
    from perception.commands import replay
    return replay


def _record() -> ModuleType:
    from perception.commands import record
    return record


def _train() -> ModuleType:
    from models import train
    return train


def _export() -> ModuleType:
    from models import export
    return export


def _evaluate() -> ModuleType:
    from models import ground_truth
    return ground_truth


def _sim() -> ModuleType:
    from sim_bridge import cli
    return cli


def _behaviour() -> ModuleType:
    from sim_bridge import behaviour_cli
    return behaviour_cli


COMMANDS: dict[str, tuple[str, Callable[[], ModuleType]]] = {
    "run": ("perceive an image, a folder of images or a video", _run),
    "models": ("list, pull and inspect models of the zoo", _models),
    "serve": ("start the HTTP (and gRPC) service", _serve),
    "calibrate": ("calibrate a camera from chessboard photos, or its mount from a drive video",
                  _calibrate),
    "replay": ("replay drive logs (MCAP, rosbag2, KITTI, video)", _replay),
    "record": ("record a camera, video or KITTI folder to MCAP", _record),
    "train": ("train our multi-task network", _train),
    "export": ("export a checkpoint to ONNX (fp32, fp16, INT8)", _export),
    "evaluate": ("score model sets against ground truth, per source and condition",
                 _evaluate),
    "sim": ("drive in the CARLA simulator, closed loop", _sim),
    "behaviour": ("train and evaluate the DQN behaviour layer in MetaDrive", _behaviour),
}


def command_module(name: str) -> ModuleType:
    """The module of one subcommand, imported now; a missing extra is a one-line error."""
    try:
        return COMMANDS[name][1]()
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] in OUR_PACKAGES:
            raise  # a bug of ours, not a missing extra
        raise PerceptionError(
            f"this command needs {error.name!r}, which is not installed "
            "(see the extras in README.md)") from error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perception", description="Camera perception for driving: detect, segment, plan, "
        "serve, replay drive logs, and drive in CARLA. `perception COMMAND -h` for each.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, _) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if name in sys.argv[1:2]:  # the options of the command being run only
            command_module(name).add_arguments(sub)
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    if argv is not None:
        sys.argv[1:] = argv
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(OPENCV_PIXEL_BACKSTOP))
    on_sigterm = None
    try:
        args = build_parser().parse_args()
        if args.command in STOPPED_BY_SIGTERM:
            on_sigterm = signal.signal(signal.SIGTERM, _interrupt)
        return int(command_module(args.command).main(args) or 0)
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
    finally:
        if on_sigterm is not None:
            signal.signal(signal.SIGTERM, on_sigterm)
