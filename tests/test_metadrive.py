"""MetaDrive in the closed loop, for real: the simulator renders headless on the CPU, our loop
drives its car. MetaDrive lives in its own virtual environment (scripts/setup_metadrive.sh), so
these tests run its Python on small scripts and on `perception sim`; PERCEPTION_METADRIVE_PYTHON
names it (.ci/run sets it). Without it they skip, saying so, except in CI, where they fail.

Each MetaDrive start costs ~30-45 s on two cores (map, assets, shaders), so the drives are few,
short and at small camera sizes. Bad input that is refused before MetaDrive starts is tested
in this (the project's) environment, where MetaDrive is absent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mcap.reader import make_reader

from perception.cli import main
from perception.driving.camera import load_camera

REPO = Path(__file__).resolve().parents[1]
METADRIVE_PYTHON = os.environ.get("PERCEPTION_METADRIVE_PYTHON")
needs_metadrive = pytest.mark.skipif(
    not METADRIVE_PYTHON and not os.environ.get("CI"),
    reason="MetaDrive's environment is not set up: run scripts/setup_metadrive.sh VENV and set "
           "PERCEPTION_METADRIVE_PYTHON=VENV/bin/python")


def metadrive(code: str, timeout: float = 420) -> subprocess.CompletedProcess:
    """Run Python `code` in MetaDrive's environment from the repository root."""
    assert METADRIVE_PYTHON, "PERCEPTION_METADRIVE_PYTHON is not set (scripts/setup_metadrive.sh)"
    return subprocess.run([METADRIVE_PYTHON, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def sim_code(arguments: tuple[str, ...], code: str = "") -> str:
    """Python that runs `perception sim --simulator metadrive ARGUMENTS` after `code` (which may
    change the world the command sees), then prints whether MetaDrive's engine is closed."""
    return (f"import sys\n{code}\nfrom metadrive.engine.engine_utils import engine_initialized\n"
            f"from perception.cli import main\n"
            f"status = main(['sim', '--simulator', 'metadrive', *{list(arguments)!r}])\n"
            f"print('engine closed', not engine_initialized())\nsys.exit(status)")


def sim(*arguments: str, code: str = "", env: dict | None = None
        ) -> subprocess.CompletedProcess:
    """`perception sim --simulator metadrive ARGUMENTS` in MetaDrive's environment."""
    assert METADRIVE_PYTHON, "PERCEPTION_METADRIVE_PYTHON is not set (scripts/setup_metadrive.sh)"
    return subprocess.run([METADRIVE_PYTHON, "-c", sim_code(arguments, code)], cwd=REPO,
                          capture_output=True, text=True, timeout=420,
                          env=None if env is None else {**os.environ, **env})


def topics(path: Path) -> dict[str, list[bytes]]:
    found: dict[str, list[bytes]] = {}
    with open(path, "rb") as file:
        for _, channel, message in make_reader(file).iter_messages():
            found.setdefault(channel.topic, []).append(message.data)
    return found


@needs_metadrive
def test_a_short_drive_renders_frames_drives_the_car_and_records(tmp_path) -> None:
    """Frames arrive, the planner's controls move the car along the lane, the run is scored
    and recorded like a replay log, and the camera file is the one the planner used."""
    out, summary, camera = tmp_path / "run.mcap", tmp_path / "run.json", tmp_path / "cam.yaml"
    done = sim("--map", "S", "--traffic", "0", "--ticks", "12", "--camera", "128x72",
               "--perception", "ground-truth", "--out", str(out), "--json", str(summary),
               "--save-camera", str(camera))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "engine closed True" in done.stdout  # the end of the ticks closes MetaDrive
    scores = json.loads(summary.read_text())
    assert scores["ticks"] == 12 and scores["frames_missed"] == 0
    assert scores["distance_m"] > 1.0 and scores["mean_speed_mps"] > 0.3  # it drove
    assert scores["crashes"] == 0 and scores["out_of_road"] == 0
    assert 0 < scores["route_completion"] < 0.2  # of 300 m
    assert scores["cross_track_rms_m"] < 0.5 and scores["realtime_factor"] > 0
    for key in ("cross_track_max_m", "min_lead_gap_m", "drivable_iou", "lane_iou"):
        assert key in scores
    recorded = topics(out)
    assert len(recorded["/camera/image"]) == len(recorded["/perception/result"]) == 12
    assert len(recorded["/ground_truth/drivable"]) == len(recorded["/ground_truth/lanes"]) == 12
    results = [json.loads(data) for data in recorded["/perception/result"]]
    assert results[0]["models"] == ["metadrive-ground-truth"]
    assert {r["plan"]["status"] for r in results} <= {"ok", "degraded"}
    states = [json.loads(data) for data in recorded["/sim/state"]]
    assert [s["metadrive_step"] for s in states] == list(range(1, 13))
    assert states[-1]["x"] > states[0]["x"]  # forward along the straight
    assert json.loads(recorded["/sim/metrics"][0])["ticks"] == 12
    planner_camera = load_camera(camera)
    assert (planner_camera.width, planner_camera.height) == (128, 72)
    assert planner_camera.K[0, 0] == pytest.approx(64 / 0.57735, rel=1e-3)  # 60 deg wide
    assert planner_camera.mount.z == pytest.approx(2.1, abs=0.1)  # MetaDrive's mount


LEAD_AND_TEARDOWN = """
import json
from metadrive.engine.engine_utils import engine_initialized
from sim_bridge.metadrive_run import MetaDriveRun, run
from sim_bridge.metadrive_sim import LeadVehicle, MetaDriveConfig

class Boom(Exception):
    pass

def exploding(simulator):
    def perceive(frame):
        if frame.index == 2:
            raise Boom("perception failed")
        return simulator.ground_truth(frame)
    return perceive

small = MetaDriveConfig(map="SS", traffic=0.0, width=128, height=72)
try:
    run(MetaDriveRun(small, ticks=10), exploding)
except Boom:
    print("raised", engine_initialized())
lead = MetaDriveConfig(map="SS", traffic=0.0, width=160, height=90,
                       lead=LeadVehicle(gap_m=12.0, speed_mps=2.0))
print(json.dumps(run(MetaDriveRun(lead, ticks=70), None)))
print("closed", engine_initialized())
"""


@needs_metadrive
def test_follows_a_slower_lead_car_without_crashing_and_always_closes() -> None:
    """An error inside the loop closes MetaDrive (a second one then starts in the same
    process); behind a car driving 2 m/s in its lane the ego car slows and keeps its distance;
    the end of the ticks closes MetaDrive too."""
    done = metadrive(LEAD_AND_TEARDOWN, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert "raised False" in lines  # the exception passed through; the engine was closed
    assert lines[-1] == "closed False"
    scores = json.loads(lines[-2])
    assert scores["crashes"] == 0 and scores["out_of_road"] == 0
    assert scores["min_lead_gap_m"] is not None and scores["min_lead_gap_m"] > 2.0
    assert scores["distance_m"] > 5.0  # it did drive up to the lead car


@needs_metadrive
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_ends_the_drive_with_complete_outputs_and_closes_metadrive(tmp_path,
                                                                          stop) -> None:
    """SIGINT (Ctrl-C) or SIGTERM (a process manager) while the car drives: exit 130,
    MetaDrive closed, and the run's --json and --out complete (the steps so far), with no
    partial file left beside them."""
    out, summary, camera = tmp_path / "run.mcap", tmp_path / "run.json", tmp_path / "cam.yaml"
    arguments = ("--map", "S", "--traffic", "0", "--ticks", "100000", "--camera", "96x54",
                 "--perception", "ground-truth", "--out", str(out), "--json", str(summary),
                 "--save-camera", str(camera))
    process = subprocess.Popen([METADRIVE_PYTHON, "-c", sim_code(arguments)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not camera.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # the camera file is written once MetaDrive runs, before the loop
        time.sleep(3.0)  # a few steps into the drive
        process.send_signal(stop)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, stderr[-3000:]
    assert "engine closed True" in stdout
    scores = json.loads(summary.read_text())
    assert scores["interrupted"] is True and 0 < scores["ticks"] < 1000
    recorded = topics(out)
    assert len(recorded["/camera/image"]) == scores["ticks"]
    assert json.loads(recorded["/sim/metrics"][0])["ticks"] == scores["ticks"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cam.yaml", "run.json",
                                                                 "run.mcap"]


@needs_metadrive
@pytest.mark.parametrize("arguments, code, env, message", [
    (["--map", "SQ"], "", {}, "--map 'SQ': unknown block 'Q'"),
    (["--ticks", "1"], "import metadrive; metadrive.__file__ = '/nowhere/metadrive/x.py'", {},
     "MetaDrive's asset folder /nowhere/metadrive/assets is missing"),
    # libglvnd finds no EGL vendor (Mesa): Panda3D cannot open its headless display
    (["--ticks", "1", "--camera", "96x54", "--perception", "ground-truth"], "",
     {"__EGL_VENDOR_LIBRARY_FILENAMES": "/nonexistent.json"},
     "MetaDrive could not start its renderer"),
])
def test_bad_map_missing_assets_and_no_egl_are_one_line_and_exit_2(arguments, code, env,
                                                                   message) -> None:
    done = sim(*arguments, code=code, env=env)
    assert done.returncode == 2, done.stderr[-3000:]
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "engine closed True" in done.stdout


@pytest.mark.parametrize("arguments, message", [
    (["--traffic", "1.5"], "--traffic 1.5: MetaDrive's traffic density must be in [0, 1]"),
    (["--traffic", "-0.1"], "must be in [0, 1]"),
    (["--traffic", "nan"], "must be in [0, 1]"),
    (["--map", "S-C"], "--map 'S-C': expected MetaDrive block letters"),
    (["--camera", "8x8"], "size must be 16..4096 px"),
    (["--route", "0"], "--route 0: MetaDrive scores a route: must be > 0"),
    (["--json", "scores.txt"], "--json scores.txt: must end in .json"),
    (["--truth-every", "0"], "--truth-every 0: must be at least 1"),
    (["--ticks", "2"], "MetaDrive is not installed in this Python"),  # the project's venv
])
def test_refused_before_metadrive_starts(arguments, message, capsys, tmp_path,
                                         monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["sim", "--simulator", "metadrive", "--perception", "ground-truth",
                 *arguments])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
