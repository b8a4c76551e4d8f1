"""Our embedded network is the default, needs no download, and its PyTorch path agrees."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from perception.frames import open_source
from perception.pipeline import Perceiver
from perception.zoo.registry import default_models, embedded, resolve

REPO = Path(__file__).resolve().parents[1]


def test_default_is_embedded_and_runs_offline(tmp_path: Path, drives: Path) -> None:
    """A fresh install: empty cache, no mirror, no network; `perception run` just works."""
    env = {"PATH": "/usr/bin:/bin", "PERCEPTION_CACHE_DIR": str(tmp_path / "empty-cache"),
           "PYTHONPATH": str(REPO)}
    out = tmp_path / "out.jsonl"
    frame = drives / "bdd100k_frames" / "yolop" / "0ace96c3-48481887.jpg"
    done = subprocess.run([sys.executable, "-m", "perception", "run", str(frame), "--json",
                           str(out), "--no-progress"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert default_models() == ["multitask-lite"]
    assert result["models"] == ["multitask-lite"]
    assert any(d["category"] == "car" for d in result["detections"])
    assert not (tmp_path / "empty-cache").exists()  # nothing was downloaded


def test_embedded_files_are_small_and_carry_their_spec() -> None:
    for name, path in embedded().items():
        assert path.stat().st_size <= 5 * 1024 * 1024, name
        spec, resolved = resolve(name)
        assert resolved == path and spec.name == name and spec.task == "multitask"
        assert "car" in spec.classes and "person" in spec.classes


def test_pytorch_path_matches_onnx_runtime(drives: Path) -> None:
    pytest.importorskip("torch", reason="the PyTorch path needs the [train] extra")
    frames = list(open_source(str(drives / "bdd100k_frames" / "yolop")))[:3]
    with Perceiver.from_names(["multitask-lite"]) as onnx, \
            Perceiver.from_names(["multitask-lite-torch"]) as torch_path:
        for a, b in zip(onnx.perceive(frames), torch_path.perceive(frames), strict=True):
            assert [d.label for d in a.detections] == [d.label for d in b.detections]
            boxes_a = np.array([d.box for d in a.detections]).reshape(-1, 4)
            boxes_b = np.array([d.box for d in b.detections]).reshape(-1, 4)
            np.testing.assert_allclose(boxes_a, boxes_b, atol=1.0)
            assert (a.drivable == b.drivable).mean() > 0.999
            assert (a.lanes == b.lanes).mean() > 0.999
