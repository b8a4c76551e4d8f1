"""`perception serve`: the HTTP + WebSocket API, and gRPC with `--grpc-port`, in one process.

    perception serve --port 8000 --grpc-port 50051 --max-batch 8 --foxglove-port 8765

With `--foxglove-port` (or `--foxglove`) every perceived frame and its result also go live to
the Foxglove app, as `perception replay --foxglove` sends them; a slow viewer gets fewer
frames and never slows a request.

SIGTERM or Ctrl-C stops it gracefully: no new connections, in-flight requests finish. The
limits on connections, calls and decoded pixels are in docs/serving.md, "Security and limits".
"""

from __future__ import annotations

import argparse
import ctypes
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2

from perception.commands.options import (
    add_foxglove_arguments,
    add_models_argument,
    foxglove_address,
)
from perception.driving.camera import load_camera
from perception.errors import PerceptionError
from perception.frames import Frame, pixel_limit
from perception.logs.foxglove_live import FoxgloveAddress, foxglove_live
from perception.results import FrameResult
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
    add("--max-delay-ms", type=float, default=0.0,
        help="how long a batch waits for more frames after its first (default 0: a frame "
             "that finds the models idle runs at once; frames that arrive while they are "
             "busy make the next batch)")
    add("--batch-workers", type=int, default=os.cpu_count() or 1,
        help="batches run at once, each on its own thread (default: the number of cores)")
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
    add("--max-pixels-in-flight", type=int, default=2 * 7680 * 4320,
        help="width*height of all images being decoded, perceived and answered at once; "
             "beyond, 503 / RESOURCE_EXHAUSTED (default 2 x 8K: 72 frames of 1280x720)")
    http = parser.add_argument_group("HTTP connection limits")
    http.add_argument("--max-header-bytes", type=int, default=16 * 1024,
                      help="largest request line + headers (431; default 16384)")
    http.add_argument("--max-headers", type=int, default=100,
                      help="most headers in a request (431; default 100)")
    http.add_argument("--header-timeout-s", type=float, default=10.0,
                      help="time to send a request's headers (408; default 10)")
    http.add_argument("--body-timeout-s", type=float, default=60.0,
                      help="time to send a request's whole body (408; default 60)")
    http.add_argument("--keep-alive-s", type=float, default=5.0,
                      help="an idle keep-alive connection closes after this (default 5)")
    http.add_argument("--max-connections", type=int, default=1000,
                      help="open HTTP and WebSocket connections; beyond, 503 (default 1000)")
    grpc = parser.add_argument_group("gRPC limits")
    grpc.add_argument("--grpc-max-calls", type=int, default=32,
                      help="concurrent gRPC calls, streams included (health checks never "
                           "count); beyond, RESOURCE_EXHAUSTED (default 32)")
    grpc.add_argument("--grpc-max-streams", type=int, default=8,
                      help="concurrent gRPC streams, within --grpc-max-calls (default 8)")
    grpc.add_argument("--grpc-stream-idle-s", type=float, default=60.0,
                      help="a stream with no message either way for this long is cancelled "
                           "(default 60)")
    grpc.add_argument("--grpc-open-reflection", action="store_true",
                      help="with --api-key-file, serve reflection without a key too")
    add_foxglove_arguments(parser, "publish every perceived frame live for the Foxglove app "
                                   "(ws://127.0.0.1:8765 unless --foxglove-host/-port say)")


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
                        ("--batch-workers", args.batch_workers),
                        ("--max-header-bytes", args.max_header_bytes),
                        ("--max-headers", args.max_headers),
                        ("--max-connections", args.max_connections),
                        ("--grpc-max-calls", args.grpc_max_calls),
                        ("--grpc-max-streams", args.grpc_max_streams)):
        if value < 1:
            raise PerceptionError(f"{name} must be at least 1 (got {value})")
    if args.max_delay_ms < 0 or args.max_body_mb <= 0 or args.request_timeout_s <= 0:
        raise PerceptionError("--max-delay-ms must be >= 0, --max-body-mb and "
                              "--request-timeout-s > 0")
    for name, seconds in (("--header-timeout-s", args.header_timeout_s),
                          ("--body-timeout-s", args.body_timeout_s),
                          ("--keep-alive-s", args.keep_alive_s),
                          ("--grpc-stream-idle-s", args.grpc_stream_idle_s)):
        if not seconds > 0:
            raise PerceptionError(f"{name} must be > 0 (got {seconds:g})")
    pixel_limit(args.max_pixels)  # at least 1, at most what OpenCV agrees to decode
    if args.max_pixels_in_flight < args.max_pixels:
        raise PerceptionError(f"--max-pixels-in-flight ({args.max_pixels_in_flight}) must be at "
                              f"least --max-pixels ({args.max_pixels}), or the largest "
                              "images could never be served")
    return ServeConfig(
        host=args.host, port=args.port, grpc_port=args.grpc_port, models=models,
        cameras=parse_cameras(args.camera), max_batch=args.max_batch,
        max_delay_ms=args.max_delay_ms, batch_workers=args.batch_workers,
        queue_size=args.queue_size,
        request_timeout_s=args.request_timeout_s,
        api_keys=read_api_keys(args.api_key_file) if args.api_key_file else (),
        cors_origins=tuple(args.cors_origin), max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        max_pixels=args.max_pixels, max_pixels_in_flight=args.max_pixels_in_flight,
        max_header_bytes=args.max_header_bytes, max_headers=args.max_headers,
        header_timeout_s=args.header_timeout_s, body_timeout_s=args.body_timeout_s,
        keep_alive_s=args.keep_alive_s, max_connections=args.max_connections,
        grpc_max_calls=args.grpc_max_calls, grpc_max_streams=args.grpc_max_streams,
        grpc_stream_idle_s=args.grpc_stream_idle_s,
        grpc_open_reflection=args.grpc_open_reflection)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD_BYTES = 1 << 20


def return_large_buffers_to_the_os() -> None:
    """Have glibc serve every allocation of 1 MiB or more (decoded frames, frame-size masks)
    from mmap, so that it goes back to the OS when freed. By default glibc raises that
    threshold up to 32 MiB as such blocks are freed and then keeps them in its per-thread
    arenas: under 20 clients posting 8K PNGs and JPEG bombs, peak RSS was 1.0-1.2 GB without
    this and 0.5 GB with it (scripts/attack_service.py). No-op where the C library has no
    `mallopt` (not glibc)."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def opencv_on_the_callers_thread() -> None:
    """Have OpenCV run each call (decode, resize, the models' preprocessing, mask encoding) on
    the thread that makes it, not on its own thread pool: the server already runs requests
    and batches in parallel on its own threads, one per core, and OpenCV's pool threads only
    spin between calls. On the 2-core machine, `perceive()` on one frame took 11.9 ms of CPU
    with OpenCV's two threads and 9.0 ms with one, and was no slower."""
    cv2.setNumThreads(1)


@contextmanager
def live_viewer(address: FoxgloveAddress | None, cameras: dict[str, Path]
                ) -> Iterator[Callable[[Frame, FrameResult], None] | None]:
    """The live Foxglove publisher's `publish` for the block, or None without an address; the
    first camera, if any, gives the camera's mount and calibration."""
    if address is None:
        yield None
        return
    camera = load_camera(next(iter(cameras.values()))) if cameras else None
    with foxglove_live(address.host, address.port, camera) as live:
        yield live.publish


def main(args: argparse.Namespace) -> int:
    import uvicorn

    from perception.driving.planning import check_plannable
    from perception.pipeline import Perceiver
    from perception.zoo.registry import get_spec
    from serving.http.app import create_app
    from serving.http.server import server_config

    config = config_from_args(args)
    specs = [get_spec(name) for name in config.models]  # unknown names fail before starting
    if config.cameras:
        check_plannable(specs)  # plans need a segmentation model: say so now
    return_large_buffers_to_the_os()
    opencv_on_the_callers_thread()
    with live_viewer(foxglove_address(args), config.cameras) as publish:
        service = Service(config, make_perceiver=lambda: Perceiver.from_names(
            config.models, fit_lanes=False), on_perceived=publish)
        server = uvicorn.Server(server_config(create_app(service), config))
        server.run()
    if not server.started:  # uvicorn logged why (e.g. the port is taken)
        raise PerceptionError(f"could not serve HTTP on {config.host}:{config.port}")
    return 0
