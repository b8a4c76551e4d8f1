"""`perception replay --ray` on a local Ray instance (127.0.0.1): one task per log, outputs per
log, a summary across all; a broken log among them does not stop the others."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from perception.cli import main as cli


@pytest.fixture(scope="module")
def logs(video_path: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("fleet-logs")
    paths = [folder / "first.mcap", folder / "second.mcap"]
    for path in paths:
        assert cli(["record", "--video", str(video_path), "--out", str(path),
                    "--duration", "0.4"]) == 0
    return paths


def test_local_ray_replays_each_log_in_its_own_task(logs, tmp_path, capsys):
    broken = logs[0].parent / "broken.mcap"
    broken.write_text("not an mcap")
    out = tmp_path / "out"
    code = cli(["replay", "--ray", *map(str, logs), str(broken), "--models", "yolox-nano",
                "--out-dir", str(out)])
    table = capsys.readouterr().err
    assert code == 2, table  # one log was unusable; the others were processed
    summary = json.loads((out / "summary.json").read_text())
    by_name = {Path(s["log"]).name: s for s in summary["logs"]}
    assert by_name["first.mcap"]["processed"] == by_name["second.mcap"]["processed"] == 10
    workers = {by_name[name]["worker"].rsplit(":", 1)[1] for name in ("first.mcap", "second.mcap")}
    assert str(os.getpid()) not in workers  # processed in Ray worker processes
    assert by_name["broken.mcap"]["exit_code"] == 2
    assert "not an MCAP file" in by_name["broken.mcap"]["error"]
    for stem in ("first", "second"):
        assert len((out / f"{stem}.jsonl").read_text().splitlines()) == 10
        assert (out / f"{stem}.mcap").stat().st_size > 0
    assert not (out / "broken.mcap").exists()
    assert "3 logs, 20 frames processed" in table
