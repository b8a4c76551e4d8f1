"""Load test of `perception serve`: throughput and latency at 1, 4 and 16 clients, batching on/off.

Starts the real server twice as subprocesses (`--max-batch 8` and `--max-batch 1`, the same
models), drives each with N concurrent HTTP clients posting real JPEG frames for a fixed time,
and prints requests/s, p50/p99 latency and errors per level, then the batching-on/off ratio.
With `--soak-s`, it then runs a soak at `--soak-clients` on the batching server and reports
errors and the server's resident-memory growth, measured from a baseline taken after
`--soak-warm-s` of the same load (ONNX Runtime's arenas grow to the largest batch first). It
stops by itself.

    PERCEPTION_MODELS_MIRROR=../shared/assets/models \
    python scripts/load_test.py --duration-s 20 --clients 1,4,16 --soak-s 600
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
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO.parent / "shared/assets/drives/bdd100k_frames/twinlitenet"


@dataclass
class Level:
    mode: str
    clients: int
    seconds: float
    ok: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    """`perception serve` in a subprocess, ready when /readyz says so."""

    def __init__(self, models: str | None, extra: list[str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "perception", "serve", "--port", str(self.port),
             *(["--models", models] if models else []), *extra],
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


async def drive(base: str, images: list[bytes], clients: int, seconds: float, query: str
                ) -> tuple[list[float], int]:
    """`clients` concurrent loops posting images for `seconds`: the latencies of the requests
    that completed within that time, and the number of errors."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + seconds

    async def client(offset: int, http: httpx.AsyncClient) -> None:
        nonlocal errors
        i = offset
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                response = await http.post(f"{base}/v1/perceive{query}",
                                           content=images[i % len(images)],
                                           headers={"content-type": "image/jpeg"})
                response.raise_for_status()
                response.json()
                if time.monotonic() <= stop_at:  # requests draining after the window don't count
                    latencies.append(time.perf_counter() - started)
            except (httpx.HTTPError, ValueError):
                errors += 1
            i += 1

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await asyncio.gather(*(client(k, http) for k in range(clients)))
    return latencies, errors


def measure(base: str, mode: str, images: list[bytes], clients: int, seconds: float,
            query: str) -> Level:
    latencies, errors = asyncio.run(drive(base, images, clients, seconds, query))
    ms = np.array(latencies) * 1e3 if latencies else np.array([np.nan])
    return Level(mode, clients, seconds, len(latencies), errors,
                 round(len(latencies) / seconds, 2), round(float(np.percentile(ms, 50)), 1),
                 round(float(np.percentile(ms, 99)), 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES,
                        help="folder of JPEG frames to post (cycled)")
    parser.add_argument("--models", default=None,
                        help="comma list of models (default: the server's default)")
    parser.add_argument("--clients", default="1,4,16", help="comma list of client counts")
    parser.add_argument("--duration-s", type=float, default=20.0, help="seconds per level")
    parser.add_argument("--warmup-s", type=float, default=15.0,
                        help="load at the most clients before measuring (ONNX Runtime is slow "
                             "on the first run of each new batch size)")
    parser.add_argument("--max-batch", type=int, default=8, help="batch size with batching on")
    parser.add_argument("--max-delay-ms", type=float, default=5.0)
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
    query = f"?outputs={args.outputs}"
    print(f"# {len(images)} frames from {args.images}, models {args.models or 'default'}, "
          f"{args.duration_s:g} s per level, {os.cpu_count()} CPUs")
    levels: list[Level] = []
    soak: dict = {}
    for mode, max_batch in (("batching on", args.max_batch), ("batching off", 1)):
        server = Server(args.models, ["--max-batch", str(max_batch), "--max-delay-ms",
                                      str(args.max_delay_ms), "--queue-size", "256"])
        try:
            asyncio.run(drive(server.base, images, max(client_counts), args.warmup_s, query))
            for clients in client_counts:
                level = measure(server.base, mode, images, clients, args.duration_s, query)
                levels.append(level)
                print(f"{mode:13s} {clients:3d} clients: {level.rps:7.2f} req/s  "
                      f"p50 {level.p50_ms:7.1f} ms  p99 {level.p99_ms:7.1f} ms  "
                      f"errors {level.errors}", flush=True)
            if mode == "batching on" and args.soak_s > 0:
                soak = run_soak(server, images, args.soak_clients, args.soak_s,
                                args.soak_warm_s, query)
        finally:
            server.stop()

    print("\n| mode | clients | req/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|")
    for level in levels:
        print(f"| {level.mode} | {level.clients} | {level.rps} | {level.p50_ms} | "
              f"{level.p99_ms} | {level.errors} |")
    by_key = {(lv.mode, lv.clients): lv for lv in levels}
    for clients in client_counts:
        on, off = by_key[("batching on", clients)], by_key[("batching off", clients)]
        print(f"throughput ratio on/off at {clients} clients: {on.rps / off.rps:.2f}x")
    if soak:
        print(f"soak: {soak['clients']} clients for {soak['seconds']} s: {soak['ok']} requests, "
              f"{soak['errors']} errors, {soak['rps']} req/s, RSS (after "
              f"{args.soak_warm_s:g} s warm-up, from {soak['rss_before_warm_mb']} MB) "
              f"{soak['rss_start_mb']} -> "
              f"{soak['rss_end_mb']} MB ({soak['rss_growth_pct']:+.1f}%), "
              f"max {soak['rss_max_mb']} MB")
    if args.json:
        args.json.write_text(json.dumps({"levels": [asdict(lv) for lv in levels], "soak": soak},
                                        indent=2))
    return 0


def run_soak(server: Server, images: list[bytes], clients: int, seconds: float, warm_s: float,
             query: str) -> dict:
    """`warm_s` of load, then the baseline RSS, then `seconds` of load sampling RSS every 10 s."""
    pid = server.process.pid
    before_warm = rss_mb(pid)
    asyncio.run(drive(server.base, images, clients, warm_s, query))
    start_rss = rss_mb(pid)
    samples = [start_rss]
    ok = errors = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        chunk = min(10.0, seconds - (time.monotonic() - started))
        latencies, failed = asyncio.run(drive(server.base, images, clients, chunk, query))
        ok, errors = ok + len(latencies), errors + failed
        samples.append(rss_mb(pid))
    elapsed = time.monotonic() - started  # a little over `seconds`: each chunk drains
    return {"clients": clients, "seconds": round(elapsed), "ok": ok, "errors": errors,
            "rps": round(ok / elapsed, 2), "rss_before_warm_mb": round(before_warm, 1),
            "rss_start_mb": round(start_rss, 1),
            "rss_end_mb": round(samples[-1], 1), "rss_max_mb": round(max(samples), 1),
            "rss_growth_pct": round(100 * (samples[-1] - start_rss) / start_rss, 2)}


if __name__ == "__main__":
    raise SystemExit(main())
