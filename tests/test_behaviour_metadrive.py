"""The behaviour layer in MetaDrive's environment (with the [behaviour] extra): one short
evaluation of the committed DQN and the rules (keeping the lane, and always following) on a
held-out seed (seeing ground truth, and seeing our perception), the DQN in the camera loop, and
the refusals that need MetaDrive. Runs MetaDrive's Python like tests/test_metadrive.py."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
METADRIVE_PYTHON = os.environ.get("PERCEPTION_METADRIVE_PYTHON")
POLICY = REPO / "models" / "behaviour" / "dqn.pt"
pytestmark = pytest.mark.skipif(
    not METADRIVE_PYTHON and not os.environ.get("CI"),
    reason="MetaDrive's environment is not set up: run scripts/setup_metadrive.sh VENV and set "
           "PERCEPTION_METADRIVE_PYTHON=VENV/bin/python")


def perception(*arguments: str) -> subprocess.CompletedProcess:
    assert METADRIVE_PYTHON, "PERCEPTION_METADRIVE_PYTHON is not set (scripts/setup_metadrive.sh)"
    code = f"import sys\nfrom perception.cli import main\nsys.exit(main({list(arguments)!r}))"
    return subprocess.run([METADRIVE_PYTHON, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_evaluate_scores_the_dqn_and_both_rules_on_the_same_seed(tmp_path) -> None:
    out = tmp_path / "eval.json"
    done = perception("behaviour", "evaluate", "--policy", str(POLICY), "--episodes", "1",
                      "--seeds", "100000", "--json", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    for name in ("dqn", "rules", "rules_follow"):
        scores = report[name]
        assert [e["seed"] for e in scores["episodes"]] == [100000]
        for key in ("collision_rate", "out_of_road_rate", "route_completion"):
            assert 0.0 <= scores[key] <= 1.0
        assert scores["mean_speed_mps"] > 0.5 and scores["route_completion"] > 0.05
        assert scores["lane_changes_per_km"] >= 0 and scores["hard_brakes_per_km"] >= 0
    for name in ("rules", "rules_follow"):
        assert report[name]["lane_changes_per_km"] == 0  # the rules keep their lane
        assert report[name]["vetoed_changes_per_km"] == 0  # so nothing is vetoed


@pytest.mark.slow
def test_evaluate_with_our_perception_as_the_policies_eyes(tmp_path) -> None:
    out = tmp_path / "eval.json"
    # Two episodes per policy: every reset after the first must render again (a stale camera
    # is refused, exit 2; it once showed the first episode's last frame for the rest).
    done = perception("behaviour", "evaluate", "--policy", str(POLICY), "--episodes", "2",
                      "--seeds", "100000", "--observe", "perception", "--route-m", "8",
                      "--json", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["observe"] == "perception" and report["camera"] == "320x180,60"
    assert report["frames_with_ego_lane"] > 0.5  # MetaDrive's lane lines are found
    for name in ("dqn", "rules"):
        assert [e["distance_m"] >= 8.0 for e in report[name]["episodes"]] == [True, True]
        assert report[name]["collision_rate"] == 0.0


@pytest.mark.slow
def test_the_dqn_drives_the_camera_loop(tmp_path) -> None:
    summary = tmp_path / "run.json"
    done = perception("sim", "--simulator", "metadrive", "--map", "SCS", "--traffic", "0.2",
                      "--ticks", "15", "--camera", "128x72", "--perception", "ground-truth",
                      "--behaviour", "dqn", "--behaviour-policy", str(POLICY),
                      "--json", str(summary))
    assert done.returncode == 0, done.stderr[-3000:]
    scores = json.loads(summary.read_text())
    assert scores["behaviour"] == "dqn" and scores["ticks"] == 15
    assert scores["distance_m"] > 1.0 and scores["crashes"] == 0


def test_bad_map_and_foreign_checkpoint_are_one_line_exit_2(tmp_path) -> None:
    done = perception("behaviour", "evaluate", "--policy", str(POLICY), "--map", "SQ")
    assert done.returncode == 2 and "unknown block 'Q'" in done.stderr
    assert done.stderr.strip().count("\n") == 0
    foreign = tmp_path / "foreign.zip"
    foreign.write_bytes(b"PK not really")
    done = perception("behaviour", "train", "--out", str(tmp_path / "run"), "--steps", "1",
                      "--resume", str(foreign))
    assert done.returncode == 2 and "not a DQN checkpoint" in done.stderr, done.stderr[-2000:]
