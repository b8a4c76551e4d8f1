"""Load test of `perception serve`: every protocol, batching on and off, against the model alone.

It measures the model alone on the same cores: the `Perceiver` that `perception serve` makes,
on the frames already decoded as the server decodes them (reduced-scale JPEG decode included),
its latency for one frame, and its best throughput and CPU a frame (as many threads as cores,
one frame or `--max-batch` frames a call), before each protocol's levels and at the end (the
machine may be shared: each level is set against the model measured just before it). It
starts the real server twice as subprocesses (`--max-batch 8` and `--max-batch 1`, the same
models, both with gRPC) and drives them in turn, level by level (on then off, then off then
on, so that a drift in the machine's other load hits both alike): N concurrent clients, each
sending the next JPEG as soon as its previous answer is in, over HTTP (`POST /v1/perceive`),
the WebSocket stream, gRPC unary `Perceive` and gRPC `StreamPerceive`. Each level reports
requests/s, p50/p99 latency, errors, and the CPU the server and the load generator spent per
request (the load generator runs on the same cores: its HTTP and WebSocket clients are
aiohttp's, at ~0.5 and ~0.2 ms of CPU a request, where httpx and websockets took ~3 ms). With
`--soak-s`, it then runs a soak at `--soak-clients` over HTTP on the batching server and
reports errors and the server's resident-memory growth, measured from a baseline taken after
`--soak-warm-s` of the same load. It stops by itself.

    python scripts/load_test.py --duration-s 20 --clients 1,4,16 --soak-s 600 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import grpc
import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from perception.frames import Frame, image_size  # noqa: E402
from perception.pipeline import Perceiver  # noqa: E402
from perception.zoo.registry import default_models  # noqa: E402
from serving.cli import opencv_on_the_callers_thread  # noqa: E402
from serving.decoding import decode, reduction  # noqa: E402
from serving.proto import perception_pb2, perception_pb2_grpc  # noqa: E402

DEFAULT_IMAGES = REPO.parent / "shared/assets/drives/bdd100k_frames/twinlitenet"
PROTOCOLS = {"http": ("http", False), "ws": ("ws", True), "grpc": ("grpc", False),
             "grpc-stream": ("grpc", True)}  # name -> (protocol, stream)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TIMEOUT = aiohttp.ClientTimeout(total=120)

Exchange = Callable[[bytes], Awaitable[None]]  # one image and its answer; raises on an error


@dataclass
class Level:
    protocol: str  # http, ws or grpc
    stream: bool  # ws and gRPC StreamPerceive: one connection, one message after another
    batching: bool
    clients: int
    seconds: float
    ok: int
    errors: int
    req_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms: float  # CPU time of the server process per answered request
    client_cpu_ms: float  # CPU time of the load generator per answered request
    load_average: float  # the machine's 1-minute load average at the level's end
    model_only_fps: float = float("nan")  # the model alone, measured just before the protocol


@dataclass
class ModelOnly:
    fps: float  # the best of the runs below
    fps_by_batch: dict[int, float]  # frames a call -> frames/s, one thread per core
    cpu_ms_by_batch: dict[int, float]  # frames a call -> CPU time per frame
    latency_p50_ms: float  # one frame alone, one call after another
    latency_p99_ms: float
    load_average: float  # the machine's 1-minute load average when done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Server:
    """`perception serve` with gRPC in a subprocess, ready when /readyz says so."""

    def __init__(self, batching: bool, extra: list[str]) -> None:
        self.batching = batching
        self.port, self.grpc_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "perception", "serve", "--port", str(self.port),
             "--grpc-port", str(self.grpc_port), *extra],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()  # never leave a half-started server behind
                raise SystemExit(f"server ({' '.join(extra)}) did not become ready in 120 s "
                                 "(are the models in the cache or the mirror?)")
            time.sleep(0.3)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()


# --- the clients: one connection each, one image after another ------------------------------

@asynccontextmanager
async def http_client(server: Server, outputs: str) -> AsyncIterator[Exchange]:
    url = f"{server.base}/v1/perceive?outputs={outputs}"
    connector = aiohttp.TCPConnector(limit=1)  # one keep-alive connection
    async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as http:
        async def exchange(image: bytes) -> None:
            async with http.post(url, data=image,
                                 headers={"content-type": "image/jpeg"}) as response:
                response.raise_for_status()
                json.loads(await response.read())

        yield exchange


@asynccontextmanager
async def ws_client(server: Server, outputs: str) -> AsyncIterator[Exchange]:
    url = f"ws://127.0.0.1:{server.port}/v1/stream?outputs={outputs}"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session, \
            session.ws_connect(url, max_msg_size=0) as ws:
        async def exchange(image: bytes) -> None:
            await ws.send_bytes(image)
            answer = json.loads(await ws.receive_str())
            if "error" in answer:
                raise RuntimeError(answer["error"])

        yield exchange


@asynccontextmanager
async def grpc_client(server: Server, outputs: str) -> AsyncIterator[Exchange]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = perception_pb2_grpc.PerceptionStub(channel)

        async def exchange(image: bytes) -> None:
            await stub.Perceive(perception_pb2.PerceiveRequest(image=image,
                                                               outputs=outputs.split(",")),
                                timeout=120)

        yield exchange


@asynccontextmanager
async def grpc_stream_client(server: Server, outputs: str) -> AsyncIterator[Exchange]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        call = perception_pb2_grpc.PerceptionStub(channel).StreamPerceive()

        async def exchange(image: bytes) -> None:
            await call.write(perception_pb2.PerceiveRequest(image=image,
                                                            outputs=outputs.split(",")))
            answer = await call.read()
            if answer is grpc.aio.EOF or answer.error:
                raise RuntimeError(getattr(answer, "error", "") or "the stream ended")

        try:
            yield exchange
        finally:
            call.cancel()


CLIENTS: dict[str, Callable[[Server, str], AbstractAsyncContextManager[Exchange]]] = {
    "http": http_client, "ws": ws_client, "grpc": grpc_client, "grpc-stream": grpc_stream_client}


async def drive(server: Server, protocol: str, images: list[bytes], clients: int,
                seconds: float, outputs: str) -> tuple[list[float], int]:
    """`clients` concurrent clients, connected first, sending images for `seconds`: the
    latencies of the requests that completed within that time, and the number of errors."""
    latencies: list[float] = []
    errors = 0

    async def client(offset: int, exchange: Exchange, stop_at: float) -> None:
        nonlocal errors
        i = offset
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                await exchange(images[i % len(images)])
                if time.monotonic() <= stop_at:  # requests draining after the window don't count
                    latencies.append(time.perf_counter() - started)
            except (aiohttp.ClientError, grpc.RpcError, RuntimeError, ValueError, OSError,
                    TimeoutError):
                errors += 1
            i += 1

    async with AsyncExitStack() as stack:
        exchanges = [await stack.enter_async_context(CLIENTS[protocol](server, outputs))
                     for _ in range(clients)]
        stop_at = time.monotonic() + seconds
        await asyncio.gather(*(client(k, exchange, stop_at)
                               for k, exchange in enumerate(exchanges)))
    return latencies, errors


def measure(server: Server, protocol: str, images: list[bytes], clients: int, seconds: float,
            outputs: str) -> Level:
    server_cpu, client_cpu = cpu_seconds(server.process.pid), time.process_time()
    latencies, errors = asyncio.run(drive(server, protocol, images, clients, seconds, outputs))
    server_cpu = cpu_seconds(server.process.pid) - server_cpu
    client_cpu = time.process_time() - client_cpu
    ms = np.array(latencies) * 1e3 if latencies else np.array([np.nan])
    per_request = 1e3 / max(1, len(latencies))
    name, stream = PROTOCOLS[protocol]
    return Level(name, stream, server.batching, clients, seconds, len(latencies), errors,
                 round(len(latencies) / seconds, 2), round(float(np.percentile(ms, 50)), 1),
                 round(float(np.percentile(ms, 99)), 1), round(server_cpu * per_request, 2),
                 round(client_cpu * per_request, 2), round(os.getloadavg()[0], 2))


# --- the model alone ----------------------------------------------------------------------------

class ModelAlone:
    """The Perceiver `perception serve` makes, on frames decoded as the server decodes them
    (reduced-scale JPEG decode included), measured without the server."""

    def __init__(self, models: list[str], images: list[bytes], max_batch: int) -> None:
        opencv_on_the_callers_thread()  # as `perception serve` runs OpenCV
        self.perceiver = Perceiver.from_names(models, fit_lanes=False)
        frames = []
        for data in images:
            width, height = image_size(data)
            factor = reduction(width, height, self.perceiver.specs)
            frames.append(decode(data, width, height, factor, width * height).image)
        height, width = frames[0].shape[:2]
        self.frame_size = f"{width}x{height}"
        self.frames = [Frame(frames[i % len(frames)], 0.0, i, "model-only")
                       for i in range(max(max_batch, len(frames)))]
        self.sizes = sorted({1, max_batch})
        for size in self.sizes:  # ONNX Runtime is slow on the first run of a batch size
            self.perceiver.perceive(self.frames[:size])
            self.perceiver.perceive(self.frames[:size])

    def measure(self, seconds: float) -> ModelOnly:
        """One frame alone, one call after another (latency); then one thread per core, each
        calling the models on one frame or `max_batch` frames (throughput, CPU per frame)."""
        latencies = []
        stop_at = time.monotonic() + seconds
        while time.monotonic() < stop_at:
            frame = self.frames[len(latencies) % len(self.frames)]
            started = time.perf_counter()
            self.perceiver.perceive([frame])
            latencies.append(time.perf_counter() - started)
        fps, cpu_ms = {}, {}
        for size in self.sizes:
            fps[size], cpu_ms[size] = self._threaded(self.frames[:size], seconds)
        ms = np.array(latencies) * 1e3
        return ModelOnly(max(fps.values()), fps, cpu_ms, round(float(np.percentile(ms, 50)), 1),
                         round(float(np.percentile(ms, 99)), 1), round(os.getloadavg()[0], 2))

    def _threaded(self, batch: list[Frame], seconds: float) -> tuple[float, float]:
        """(frames/s, CPU ms a frame) with one thread per worker of the perceiver, each
        calling it on `batch`."""
        workers = self.perceiver.workers
        done = [0] * workers
        stop_at = time.monotonic() + seconds

        def loop(k: int) -> None:
            while time.monotonic() < stop_at:
                self.perceiver.perceive(batch)
                done[k] += len(batch)

        threads = [threading.Thread(target=loop, args=(k,)) for k in range(workers)]
        started, cpu = time.monotonic(), time.process_time()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        frames = sum(done)
        return (round(frames / (time.monotonic() - started), 2),
                round((time.process_time() - cpu) / frames * 1e3, 2))

    def close(self) -> None:
        self.perceiver.close()


# --- the run --------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES,
                        help="folder of JPEG frames to send (cycled)")
    parser.add_argument("--models", default=None,
                        help="comma list of models (default: the server's default)")
    parser.add_argument("--clients", default="1,4,16", help="comma list of client counts")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS),
                        help=f"comma list of {', '.join(PROTOCOLS)} (default: all)")
    parser.add_argument("--duration-s", type=float, default=20.0, help="seconds per level")
    parser.add_argument("--warmup-s", type=float, default=15.0,
                        help="load at the most clients on each server before measuring (ONNX "
                             "Runtime is slow on the first run of each new batch size)")
    parser.add_argument("--model-only-s", type=float, default=5.0,
                        help="seconds for each model-only figure (measured before each "
                             "protocol and at the end)")
    parser.add_argument("--max-batch", type=int, default=8, help="batch size with batching on")
    parser.add_argument("--max-delay-ms", type=float, default=0.0)
    parser.add_argument("--outputs", default="detections,masks")
    parser.add_argument("--soak-s", type=float, default=0.0, help="soak length (0: no soak)")
    parser.add_argument("--soak-clients", type=int, default=16)
    parser.add_argument("--soak-warm-s", type=float, default=60.0,
                        help="load before the soak's baseline RSS is taken (arenas and caches "
                             "settle)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    images = [p.read_bytes() for p in sorted(args.images.glob("*.jpg"))]
    if not images:
        raise SystemExit(f"{args.images}: no .jpg frames")
    client_counts = [int(c) for c in args.clients.split(",")]
    protocols = [p.strip() for p in args.protocols.split(",")]
    unknown = sorted(set(protocols) - set(PROTOCOLS))
    if unknown:
        raise SystemExit(f"unknown protocols {unknown}; choose from {', '.join(PROTOCOLS)}")
    models = args.models.split(",") if args.models else default_models()
    load_before = os.getloadavg()
    print(f"# {len(images)} frames from {args.images}, models {','.join(models)}, "
          f"{args.duration_s:g} s per level, {os.cpu_count()} CPUs, load average "
          f"{load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}", flush=True)

    common = ["--max-delay-ms", str(args.max_delay_ms), "--queue-size", "256",
              "--grpc-max-calls", str(2 * max(client_counts) + 8),
              "--grpc-max-streams", str(max(client_counts) + 4),
              *(["--models", args.models] if args.models else [])]
    alone = ModelAlone(models, images, args.max_batch)
    print(f"model alone on {alone.frame_size} frames", flush=True)
    servers = [Server(True, ["--max-batch", str(args.max_batch), *common]),
               Server(False, ["--max-batch", "1", *common])]
    levels: list[Level] = []
    samples: list[ModelOnly] = []
    soak: dict = {}
    try:
        for server in servers:
            asyncio.run(drive(server, "http", images, max(client_counts), args.warmup_s,
                              args.outputs))
        for protocol in protocols:
            samples.append(show_model_only(alone.measure(args.model_only_s)))
            for i, clients in enumerate(client_counts):
                # on then off, off then on: a drift in the machine's load hits both alike
                for server in servers if i % 2 == 0 else servers[::-1]:
                    level = measure(server, protocol, images, clients, args.duration_s,
                                    args.outputs)
                    level.model_only_fps = samples[-1].fps
                    levels.append(level)
                    print(f"{protocol:11s} batching {'on ' if server.batching else 'off'} "
                          f"{clients:3d} clients: {level.req_per_s:7.2f} req/s  p50 "
                          f"{level.p50_ms:7.1f} ms  p99 {level.p99_ms:7.1f} ms  errors "
                          f"{level.errors}  CPU/req server {level.server_cpu_ms} ms, client "
                          f"{level.client_cpu_ms} ms  load {level.load_average}", flush=True)
        samples.append(show_model_only(alone.measure(args.model_only_s)))
        if args.soak_s > 0:
            servers[1].stop()
            soak = run_soak(servers[0], images, args.soak_clients, args.soak_s,
                            args.soak_warm_s, args.outputs)
    finally:
        alone.close()
        for server in servers:
            server.stop()

    model_only_fps = round(float(np.mean([sample.fps for sample in samples])), 2)
    report(levels, samples, soak, client_counts, protocols)
    if args.json:
        args.json.write_text(json.dumps({
            "model_only_fps": model_only_fps,
            "model_only_samples": [asdict(sample) for sample in samples],
            "model_only_frames": alone.frame_size,
            "levels": [{"protocol": lv.protocol, "stream": lv.stream, "batching": lv.batching,
                        "clients": lv.clients, "req_per_s": lv.req_per_s, "p50_ms": lv.p50_ms,
                        "p99_ms": lv.p99_ms, "errors": lv.errors,
                        "model_only_fps_before": lv.model_only_fps,
                        "server_cpu_ms_per_req": lv.server_cpu_ms,
                        "client_cpu_ms_per_req": lv.client_cpu_ms,
                        "load_average": lv.load_average} for lv in levels],
            "soak": soak, "cpus": os.cpu_count(), "load_average_before": load_before,
            "load_average_after": os.getloadavg(), "models": models,
            "max_batch": args.max_batch, "max_delay_ms": args.max_delay_ms,
            "duration_s": args.duration_s, "outputs": args.outputs}, indent=2))
    return 0


def show_model_only(sample: ModelOnly) -> ModelOnly:
    print(f"model alone: {sample.fps:.1f} frames/s (frames a call -> frames/s "
          f"{sample.fps_by_batch}, CPU ms a frame {sample.cpu_ms_by_batch}), one frame p50 "
          f"{sample.latency_p50_ms} ms, p99 {sample.latency_p99_ms} ms, load "
          f"{sample.load_average}", flush=True)
    return sample


def report(levels: list[Level], samples: list[ModelOnly], soak: dict,
           client_counts: list[int], protocols: list[str]) -> None:
    """The table, then each figure of issue 16: batching on/off, each level against the model
    alone measured just before its protocol (throughput, and CPU: the model's CPU a frame over
    the server's and the load generator's a request), the 1-client p99 bound."""
    print("\n| protocol | batching | clients | req/s | p50 ms | p99 ms | errors | server CPU "
          "ms/req | client CPU ms/req | model alone fps |\n|---|---|---|---|---|---|---|---|---|"
          "---|")
    for lv in levels:
        name = f"{lv.protocol} stream" if lv.protocol == "grpc" and lv.stream else lv.protocol
        print(f"| {name} | {'on' if lv.batching else 'off'} | {lv.clients} | {lv.req_per_s} | "
              f"{lv.p50_ms} | {lv.p99_ms} | {lv.errors} | {lv.server_cpu_ms} | "
              f"{lv.client_cpu_ms} | {lv.model_only_fps} |")
    fps = [sample.fps for sample in samples]
    print(f"\nmodel alone: {np.mean(fps):.1f} frames/s on average ({min(fps)} to {max(fps)}); "
          f"CPU a frame {np.mean([s.cpu_ms_by_batch[1] for s in samples]):.2f} ms")
    by_key = {(lv.protocol, lv.stream, lv.batching, lv.clients): lv for lv in levels}
    for index, protocol in enumerate(protocols):
        name, stream = PROTOCOLS[protocol]
        sample = samples[index]
        for clients in client_counts:
            on, off = (by_key[(name, stream, b, clients)] for b in (True, False))
            best = max(on, off, key=lambda lv: lv.req_per_s)
            cpu = sample.cpu_ms_by_batch[1] / (best.server_cpu_ms + best.client_cpu_ms)
            print(f"{protocol} {clients} clients: batching on/off "
                  f"{on.req_per_s / off.req_per_s:.2f}x; on {on.req_per_s / sample.fps:.0%}, "
                  f"off {off.req_per_s / sample.fps:.0%} of the model alone "
                  f"({sample.fps} frames/s); in CPU, {cpu:.0%}")
        bound = 1.5 * sample.latency_p50_ms + 10
        for batching in (True, False):
            one = by_key[(name, stream, batching, min(client_counts))]
            print(f"{protocol} p99 at {one.clients} client(s), batching "
                  f"{'on' if batching else 'off'}: {one.p99_ms} ms (1.5 x model-alone p50 "
                  f"{sample.latency_p50_ms} ms + 10 ms = {bound:.1f} ms)")
    if soak:
        print(f"soak: {soak['clients']} HTTP clients for {soak['seconds']} s: {soak['ok']} "
              f"requests, {soak['errors']} errors, {soak['rps']} req/s, RSS (after warm-up, "
              f"from {soak['rss_before_warm_mb']} MB) {soak['rss_start_mb']} -> "
              f"{soak['rss_end_mb']} MB ({soak['rss_growth_pct']:+.1f}%), max "
              f"{soak['rss_max_mb']} MB")


def run_soak(server: Server, images: list[bytes], clients: int, seconds: float, warm_s: float,
             outputs: str) -> dict:
    """`warm_s` of load, then the baseline RSS, then `seconds` of load sampling RSS every 10 s."""
    pid = server.process.pid
    before_warm = rss_mb(pid)
    asyncio.run(drive(server, "http", images, clients, warm_s, outputs))
    start_rss = rss_mb(pid)
    samples = [start_rss]
    ok = errors = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        chunk = min(10.0, seconds - (time.monotonic() - started))
        latencies, failed = asyncio.run(drive(server, "http", images, clients, chunk, outputs))
        ok, errors = ok + len(latencies), errors + failed
        samples.append(rss_mb(pid))
    elapsed = time.monotonic() - started  # a little over `seconds`: each chunk drains
    return {"clients": clients, "seconds": round(elapsed), "ok": ok, "errors": errors,
            "rps": round(ok / elapsed, 2), "rss_before_warm_mb": round(before_warm, 1),
            "rss_start_mb": round(start_rss, 1), "rss_end_mb": round(samples[-1], 1),
            "rss_max_mb": round(max(samples), 1),
            "rss_growth_pct": round(100 * (samples[-1] - start_rss) / start_rss, 2),
            "rss_samples_mb": [round(sample, 1) for sample in samples]}


if __name__ == "__main__":
    raise SystemExit(main())
