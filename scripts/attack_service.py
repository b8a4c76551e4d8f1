"""Hostile inputs against `perception serve` on loopback: its peak memory and /healthz latency.

Each attack starts a fresh server (a subprocess, the real CLI), waits until it is ready, runs
for `--duration-s` while /healthz is probed every 50 ms, and reports the server's peak
resident memory (VmHWM, warm-up included) and the probes' p50/p99/max and failures:

- `strips` (issue 13, item 2): 16 clients posting 1x10000 and 10000x1 PNG strips between real
  frames (with a letterbox model, `--models yolox-nano,twinlitenet`).
- `headers` (item 4): 500 slow-header sockets (a byte every 0.5 s), 100 slow-body sockets,
  100 silent sockets, all re-opened as the server cuts them, and 6 clients sending 48 MB
  request heads in a loop.
- `bombs` (item 5): 16 clients posting a 631-byte JPEG that claims 7000x4000, and 4 posting
  an 8K (7680x4320) PNG of ~100 KB, which decodes in full.

    PERCEPTION_MODELS_MIRROR=../shared/assets/models python scripts/attack_service.py \
        --models yolox-nano,twinlitenet --attacks strips,headers,bombs --duration-s 20
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from scripts.load_test import Server  # noqa: E402  (a `perception serve` in a subprocess)

FRAMES = REPO.parent / "shared/assets/drives/bdd100k_frames/twinlitenet"


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Outcome:
    attack: str
    peak_rss_mb: float
    ready_rss_mb: float
    healthz_p50_ms: float
    healthz_p99_ms: float
    healthz_max_ms: float
    healthz_failures: int
    answers: dict


def probe_healthz(base: str, until: float, latencies: list[float], failures: list[str]) -> None:
    with httpx.Client(timeout=5) as client:
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                if client.get(f"{base}/healthz").status_code != 200:
                    failures.append("status")
            except httpx.HTTPError as error:
                failures.append(type(error).__name__)
            latencies.append(time.monotonic() - started)
            time.sleep(0.05)


def posting(base: str, bodies: list[tuple[bytes, str]], until: float, answers: Counter) -> None:
    with httpx.Client(timeout=60) as client:
        i = 0
        while time.monotonic() < until:
            data, content_type = bodies[i % len(bodies)]
            i += 1
            try:
                answer = client.post(f"{base}/v1/perceive?outputs=detections,masks"
                                     "&mask_encoding=rle", content=data,
                                     headers={"content-type": content_type})
                answers[answer.status_code] += 1
            except httpx.HTTPError as error:
                answers[type(error).__name__] += 1


def png(width: int, height: int) -> bytes:
    return cv2.imencode(".png", np.full((height, width, 3), 90, np.uint8))[1].tobytes()


def jpeg_bomb(width: int = 7000, height: int = 4000) -> bytes:
    data = bytearray(cv2.imencode(".jpg", np.full((16, 16, 3), 60, np.uint8))[1].tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def strips(base: str, port: int, until: float, answers: Counter) -> list[threading.Thread]:
    frames = [(p.read_bytes(), "image/jpeg") for p in sorted(FRAMES.glob("*.jpg"))[:4]]
    bodies = [(png(1, 10000), "image/png"), frames[0], (png(10000, 1), "image/png"), *frames[1:]]
    return [threading.Thread(target=posting, args=(base, bodies[i:] + bodies[:i], until,
                                                   answers)) for i in range(16)]


def bombs(base: str, port: int, until: float, answers: Counter) -> list[threading.Thread]:
    jpeg = [(jpeg_bomb(), "image/jpeg")]
    eight_k = [(png(7680, 4320), "image/png")]
    return ([threading.Thread(target=posting, args=(base, jpeg, until, answers))
             for _ in range(16)] +
            [threading.Thread(target=posting, args=(base, eight_k, until, answers))
             for _ in range(4)])


def headers(base: str, port: int, until: float, answers: Counter) -> list[threading.Thread]:
    slow_head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
    slow_body = (b"POST /v1/perceive HTTP/1.1\r\nHost: x\r\ncontent-type: image/png\r\n"
                 b"content-length: 1000000\r\n\r\n\x89PNG")

    def hold(first: bytes, dribble: bytes, count: int) -> None:
        """Keep `count` sockets open, sending `dribble` every 0.5 s; re-open the ones the
        server answered or closed."""
        socks: list[socket.socket] = []
        while time.monotonic() < until:
            for sock in list(socks):
                try:
                    reply = sock.recv(12, socket.MSG_DONTWAIT)
                except BlockingIOError:  # still waiting on us: go on
                    try:
                        if dribble:
                            sock.sendall(dribble)
                        continue
                    except OSError:
                        reply = b""
                except OSError:
                    reply = b""
                answers[f"cut ({reply[9:12].decode() or 'closed'})"] += 1
                sock.close()
                socks.remove(sock)
            while len(socks) < count:
                sock = socket.create_connection(("127.0.0.1", port), 5)
                sock.sendall(first)
                socks.append(sock)
            time.sleep(0.5)
        for sock in socks:
            sock.close()

    def big_heads() -> None:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (48 << 20)
        while time.monotonic() < until:
            with socket.create_connection(("127.0.0.1", port), 5) as sock:
                try:
                    sock.sendall(head)
                    answers[sock.recv(12)[9:12].decode() or "closed"] += 1
                except OSError:
                    answers["big head cut"] += 1

    return ([threading.Thread(target=hold, args=(slow_head, b"a", 500)),
             threading.Thread(target=hold, args=(slow_body, b"\x00", 100)),
             threading.Thread(target=hold, args=(b"", b"", 100))] +
            [threading.Thread(target=big_heads) for _ in range(6)])


ATTACKS: dict[str, Callable[[str, int, float, Counter], list[threading.Thread]]] = {
    "strips": strips, "headers": headers, "bombs": bombs}


def run(attack: str, models: str | None, extra: list[str], duration_s: float) -> Outcome:
    server = Server(models, extra)
    try:
        ready_rss = peak_rss_mb(server.process.pid)
        until = time.monotonic() + duration_s
        answers: Counter = Counter()
        latencies: list[float] = []
        failures: list[str] = []
        threads = ATTACKS[attack](server.base, server.port, until, answers)
        threads.append(threading.Thread(target=probe_healthz,
                                        args=(server.base, until, latencies, failures)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        peak = peak_rss_mb(server.process.pid)
    finally:
        server.stop()
    ms = np.array(latencies) * 1e3
    return Outcome(attack, round(peak), round(ready_rss), round(float(np.percentile(ms, 50)), 1),
                   round(float(np.percentile(ms, 99)), 1), round(float(ms.max()), 1),
                   len(failures), dict(answers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="--models of the server")
    parser.add_argument("--attacks", default="strips,headers,bombs")
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="one more argument for `perception serve` (repeatable)")
    args = parser.parse_args()
    print("| attack | peak RSS MB (ready) | /healthz p50 / p99 / max ms | probe failures | "
          "answers |")
    print("|---|---|---|---|---|")
    for attack in args.attacks.split(","):
        o = run(attack, args.models, args.serve_arg, args.duration_s)
        print(f"| {o.attack} | {o.peak_rss_mb} ({o.ready_rss_mb}) | {o.healthz_p50_ms} / "
              f"{o.healthz_p99_ms} / {o.healthz_max_ms} | {o.healthz_failures} | "
              f"{dict(sorted(o.answers.items(), key=str))} |", flush=True)


if __name__ == "__main__":
    main()
