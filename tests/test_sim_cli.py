"""`perception sim` end to end against the fake, with our real models over the fake's frames,
and its bad-input messages (one line on stderr, exit code 2)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

carla = pytest.importorskip("carla", reason="needs the carla wheel (the [sim] extra)")

from mcap.reader import make_reader  # noqa: E402

from perception.cli import main  # noqa: E402
from perception.logs.sources import open_log  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def read_topics(path) -> dict[str, list[bytes]]:
    topics: dict[str, list[bytes]] = {}
    with open(path, "rb") as file:
        for _, channel, message in make_reader(file).iter_messages():
            topics.setdefault(channel.topic, []).append(message.data)
    return topics


def test_sim_with_real_models_over_fake_frames_records_mcap(models_mirror, tmp_path,
                                                            capsys) -> None:
    out = tmp_path / "run.mcap"
    code = main(["sim", "--fake", "stopped-car", "--port", "2611", "--ticks", "12",
                 "--models", "yolox-nano,twinlitenet",
                 "--camera", "320x180,90", "--out", str(out), "--ground-truth",
                 "--route", "50"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "distance_m" in captured.out and "perception_ms" in captured.out
    topics = read_topics(out)
    assert len(topics["/camera/image"]) == len(topics["/camera/calibration"]) == 12
    results = [json.loads(data) for data in topics["/perception/result"]]
    assert len(results) == 12
    assert results[0]["models"] == ["yolox-nano", "twinlitenet"]
    assert {"yolox-nano/inference", "twinlitenet/inference", "control"} <= set(
        results[0]["timings_ms"])
    assert results[-1]["plan"]["status"] in {"ok", "degraded", "safe_stop"}
    assert len(topics["/ground_truth/drivable"]) == len(topics["/ground_truth/lanes"]) == 12
    boxes = json.loads(topics["/ground_truth/boxes"][0])
    assert [b["label"] for b in boxes["boxes"]] == ["car"]  # the stopped car, 60 m ahead
    states = [json.loads(data) for data in topics["/sim/state"]]
    assert [s["carla_frame"] for s in states] == sorted({s["carla_frame"] for s in states})
    metrics = json.loads(topics["/sim/metrics"][0])
    assert metrics["ticks"] == 12 and metrics["route_completion"] is not None
    replayed = list(open_log(out, topic="/camera/image"))  # what `perception replay` reads
    assert len(replayed) == 12 and replayed[0].image.shape == (180, 320, 3)
    assert replayed[0].meta["camera_info"].K[0] == pytest.approx(160.0)  # CARLA's f at 90 deg


@pytest.mark.parametrize("arguments, message", [
    (["--camera", "wide"], "--camera 'wide': expected WIDTHxHEIGHT[,FOV]"),
    (["--camera", "640x360,190"], "field of view 1..179"),
    (["--ticks", "0"], "--ticks 0: must be at least 1"),
    (["--delta", "0.5"], "--delta 0.5: must be in (0, 0.1]"),
    (["--out", "nowhere/run.mcap"], "folder nowhere does not exist"),
    (["--out", "run.txt"], "must end in .mcap"),
    (["--route", "-5"], "--route -5: must be >= 0 metres"),
    (["--timeout", "nan"], "--timeout nan: must be > 0"),
    (["--host", "nosuchhost.invalid", "--timeout", "1"],
     "no CARLA server answered at nosuchhost.invalid:2613"),
    (["--fake", "straight", "--town", "Town99"], "unknown town 'Town99'"),
    (["--fake", "straight", "--vehicle", "vehicle.none"], "blueprint 'vehicle.none' is not"),
])
def test_bad_input_is_one_line_and_exit_2(arguments, message, capsys, tmp_path,
                                          monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["sim", "--perception", "ground-truth", "--port", "2613", *arguments])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_models_without_a_detector_plan_degraded_and_without_segmentation_are_refused(
        models_mirror, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["sim", "--fake", "straight", "--port", "2615", "--models", "yolox-nano"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "planning needs a segmentation model" in err and list(tmp_path.iterdir()) == []
    code = main(["sim", "--fake", "straight", "--port", "2617", "--models", "twinlitenet",
                 "--ticks", "3", "--camera", "320x180,90", "--out", "run.mcap"])
    assert code == 0, capsys.readouterr().err
    plans = [json.loads(data)["plan"] for data in read_topics("run.mcap")["/perception/result"]]
    assert len(plans) == 3
    for plan in plans:  # obstacles unseen: never `ok` at cruise speed
        assert plan["status"] in {"degraded", "safe_stop"}
        assert plan["target_speed_mps"] <= 5.0
    assert any(p["status"] == "degraded" and "no detector" in p["reasons"][0] for p in plans)


def test_no_server_with_the_real_client(capsys) -> None:
    port = closed_port()
    code = main(["sim", "--perception", "ground-truth", "--port", str(port), "--timeout", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"perception: error: no CARLA server answered at 127.0.0.1:{port}")


def test_sim_publishes_live_for_foxglove() -> None:
    """`perception sim --foxglove-port 0`: a Foxglove client gets the camera and the
    simulator's state live while the car drives (fake CARLA, ground-truth perception)."""
    from websockets.sync.client import connect

    from tests.test_foxglove_live import SUBPROTOCOL, Viewer

    process = subprocess.Popen(
        [sys.executable, "-m", "perception", "sim", "--fake", "straight", "--port", "2623",
         "--ticks", "2000", "--perception", "ground-truth", "--camera", "320x180,90",
         "--foxglove-port", "0"],
        env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()
        match = re.search(r"Foxglove live on (ws://\S+)", line)
        assert match, line
        seen: set[str] = set()
        with connect(match[1], subprotocols=[SUBPROTOCOL], max_size=None, compression=None,
                     open_timeout=30) as ws:
            viewer = Viewer(ws)
            viewer.subscribe(json.loads(ws.recv(timeout=30))["channels"])
            deadline = time.monotonic() + 60
            while not {"/camera/image", "/sim/state"} <= seen and time.monotonic() < deadline:
                kind, value = viewer.next()
                if kind == "data":
                    seen.add(value[0]["topic"])
                    if value[0]["topic"] == "/sim/state":
                        assert "speed_mps" in value[2] and "status" in value[2]
        assert {"/camera/image", "/sim/state"} <= seen
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C: the run ends with its scores so far
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
