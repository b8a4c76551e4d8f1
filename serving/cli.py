"""`perception serve`: the HTTP + WebSocket API, and gRPC with `--grpc-port`, in one process.

    perception serve --port 8000 --grpc-port 50051 --max-batch 8 --max-delay-ms 5

SIGTERM or Ctrl-C stops it gracefully: no new connections, in-flight requests finish.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from perception.commands.options import add_models_argument
from perception.errors import PerceptionError
from perception.zoo.registry import model_names
from serving.service import ServeConfig, Service


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    add("--port", type=int, default=8000, help="HTTP port (default 8000)")
    add("--grpc-port", type=int, default=None, help="also serve gRPC on this port")
    add_models_argument(parser)
    add("--camera", action="append", default=[], metavar="NAME=camera.yaml",
        help="a camera for plan/bev outputs; repeatable, the first is the default")
    add("--max-batch", type=int, default=8, help="most frames per batch (1 = no batching)")
    add("--max-delay-ms", type=float, default=5.0,
        help="longest wait for more frames once one is queued (default 5)")
    add("--queue-size", type=int, default=64,
        help="requests that may wait; beyond, HTTP 503 / gRPC RESOURCE_EXHAUSTED")
    add("--request-timeout-s", type=float, default=30.0, help="per-request deadline")
    add("--api-key-file", type=Path, default=None,
        help="file of API keys, one a line; without it the API is open")
    add("--cors-origin", action="append", default=[], metavar="ORIGIN",
        help="allow browser calls from this origin (repeatable; default: none)")
    add("--max-body-mb", type=float, default=16.0, help="largest request body (default 16)")
    add("--max-pixels", type=int, default=7680 * 4320,
        help="largest image width*height, checked from the header before decoding (default 8K)")


def read_api_keys(path: Path) -> tuple[str, ...]:
    if not path.is_file():
        raise PerceptionError(f"{path}: no such API key file")
    keys = tuple(line.strip() for line in path.read_text().splitlines()
                 if line.strip() and not line.lstrip().startswith("#"))
    if not keys:
        raise PerceptionError(f"{path}: holds no API key (one a line)")
    return keys


def parse_cameras(items: list[str]) -> dict[str, Path]:
    cameras: dict[str, Path] = {}
    for item in items:
        name, sep, file = item.partition("=")
        if not sep or not name or not file:
            raise PerceptionError(f"--camera {item!r}: expected NAME=camera.yaml")
        if not Path(file).is_file():
            raise PerceptionError(f"--camera {item!r}: {file} is not a file")
        cameras[name] = Path(file)
    return cameras


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    models = model_names(args.models)
    for name, value in (("--max-batch", args.max_batch), ("--queue-size", args.queue_size),
                        ("--max-pixels", args.max_pixels)):
        if value < 1:
            raise PerceptionError(f"{name} must be at least 1 (got {value})")
    if args.max_delay_ms < 0 or args.max_body_mb <= 0 or args.request_timeout_s <= 0:
        raise PerceptionError("--max-delay-ms must be >= 0, --max-body-mb and "
                              "--request-timeout-s > 0")
    return ServeConfig(
        host=args.host, port=args.port, grpc_port=args.grpc_port, models=models,
        cameras=parse_cameras(args.camera), max_batch=args.max_batch,
        max_delay_ms=args.max_delay_ms, queue_size=args.queue_size,
        request_timeout_s=args.request_timeout_s,
        api_keys=read_api_keys(args.api_key_file) if args.api_key_file else (),
        cors_origins=tuple(args.cors_origin), max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        max_pixels=args.max_pixels)


def main(args: argparse.Namespace) -> int:
    import uvicorn

    from perception.driving.planning import check_plannable
    from perception.pipeline import Perceiver
    from perception.zoo.registry import get_spec
    from serving.http.app import create_app

    config = config_from_args(args)
    specs = [get_spec(name) for name in config.models]  # unknown names fail before starting
    if config.cameras:
        check_plannable(specs)  # plans need a segmentation model: say so now
    service = Service(config, make_perceiver=lambda: Perceiver.from_names(config.models))
    uvicorn.run(create_app(service), host=config.host, port=config.port,
                ws_max_size=config.max_body_bytes, timeout_graceful_shutdown=30,
                log_level="info")
    return 0
