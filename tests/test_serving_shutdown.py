"""`perception serve` as a real process: SIGTERM while requests are in flight lets them finish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import pytest
from serving_harness import BDD, free_port

from serving.proto import perception_pb2, perception_pb2_grpc

REPO = Path(__file__).resolve().parents[1]


def queue_depth(base: str) -> float:
    for line in httpx.get(f"{base}/metrics", timeout=5).text.splitlines():
        if line.startswith("perception_queue_depth "):
            return float(line.split()[1])
    return 0.0


def test_sigterm_finishes_in_flight_requests(models_mirror: Path, assets: Path) -> None:
    port, grpc_port = free_port(), free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "perception", "serve", "--port", str(port), "--grpc-port",
         str(grpc_port), "--max-batch", "1", "--batch-workers", "1"],
        cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                pytest.fail(f"server did not become ready:\n{server.stdout.read()}")
            time.sleep(0.2)
        frames = [p.read_bytes() for p in sorted((assets / BDD).glob("*.jpg"))]
        images = [frames[i % len(frames)] for i in range(16)]  # a queue that lasts a while
        sent = threading.Semaphore(0)

        def body(data: bytes) -> Iterator[bytes]:
            yield data
            sent.release()  # httpx asks for more once the image is written

        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        stub = perception_pb2_grpc.PerceptionStub(channel)
        with ThreadPoolExecutor(len(images) + 1) as pool:
            grpc_call = pool.submit(stub.Perceive,
                                    perception_pb2.PerceiveRequest(image=images[0]), timeout=60)
            http_calls = [pool.submit(httpx.post, f"{base}/v1/perceive", content=body(data),
                                      headers={"content-type": "image/jpeg"}, timeout=60)
                          for data in images]
            for _ in images:  # every request is on its way before SIGTERM
                assert sent.acquire(timeout=30)
            waited = time.monotonic() + 30
            while (depth := queue_depth(base)) < 2 and time.monotonic() < waited:
                time.sleep(0.01)  # until several requests wait behind a running one
            server.send_signal(signal.SIGTERM)
            assert depth >= 2, "the requests were all answered before SIGTERM"
            answers = [call.result(60) for call in http_calls]
            grpc_answer = grpc_call.result(60)
        channel.close()
        assert [a.status_code for a in answers] == [200] * len(images)
        assert all(a.json()["width"] == 1280 for a in answers)
        assert grpc_answer.width == 1280
        server.wait(60)
        log = server.stdout.read()
        assert "Application shutdown complete" in log
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/healthz", timeout=2)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
