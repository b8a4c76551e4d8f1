"""`perception export`: ONNX with a dynamic batch and its spec in the metadata, fp16 and INT8
(calibrated on real frames) variants, PyTorch parity, and refusals that leave files alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from models.checkpoint import build_net, load_checkpoint, save_checkpoint
from models.export import parity
from models.net import ARCHITECTURE, MultiTaskNet, NetConfig
from models.torch_runtime import TorchModel
from perception.cli import main as cli_main
from perception.inference import OnnxModel
from perception.zoo.registry import spec_from_onnx

CONFIG = NetConfig(width=96, height=64)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    net = MultiTaskNet(CONFIG)
    path = tmp_path_factory.mktemp("run") / "last.pt"
    save_checkpoint(path, {"architecture": ARCHITECTURE, "config": CONFIG.to_dict(), "step": 0,
                           "ema": net.state_dict()})
    return path


def export(*options: str) -> int:
    return cli_main(["export", *options])


def test_export_all_variants(checkpoint: Path, drives: Path, tmp_path: Path) -> None:
    out = tmp_path / "lite.onnx"
    calibration = drives / "udacity_lanelines_p1"
    assert export("--checkpoint", str(checkpoint), "--out", str(out), "--fp16", "--int8",
                  "--torch", "--calibration", str(calibration),
                  "--calibration-frames", "4", "--score-threshold", "0.4") == 0
    model = onnx.load(str(out))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    net = build_net(load_checkpoint(checkpoint))
    assert parity(net, out, batch=3) < 1e-3
    batch = np.random.default_rng(0).random((3, 3, 64, 96), np.float32)
    reference = OnnxModel(out, providers=["CPUExecutionProvider"], threads=1).run(batch)
    for variant in ("lite.fp16.onnx", "lite.int8.onnx"):
        runtime = OnnxModel(tmp_path / variant, providers=["CPUExecutionProvider"], threads=1)
        spec, _ = spec_from_onnx(tmp_path / variant)
        assert spec.decoder == "multitask" and spec.file == variant
        assert spec.score_threshold == 0.4  # the threshold chosen at export travels along
        outputs = runtime.run(batch)
        assert [o.shape for o in outputs] == [r.shape for r in reference]
        assert np.abs(outputs[1] - reference[1]).mean() < 0.1  # drivable probabilities
    assert (tmp_path / "lite.int8.onnx").stat().st_size < out.stat().st_size
    assert load_checkpoint(tmp_path / "lite.pt")["config"] == CONFIG.to_dict()
    assert TorchModel(tmp_path / "lite.pt", device="cpu").spec.score_threshold == 0.4
    assert not list(tmp_path.glob("*partial*"))  # no temporary file left (files.py names)


def test_export_refuses_a_checkpoint_without_weights(checkpoint: Path, tmp_path: Path,
                                                     models_mirror: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "lite.onnx"
    out.write_bytes(b"previous export")
    empty = tmp_path / "empty.pt"
    save_checkpoint(empty, {"architecture": ARCHITECTURE, "config": CONFIG.to_dict(),
                            "step": 0})
    assert export("--checkpoint", str(empty), "--out", str(out)) == 2
    assert "no 'ema' weights" in capsys.readouterr().err
    assert export("--checkpoint", str(tmp_path / "missing.pt"), "--out", str(out)) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    assert export("--checkpoint", str(checkpoint), "--out", str(out),
                  "--score-threshold", "1.5") == 2
    assert "--score-threshold 1.5: must be in (0, 1)" in capsys.readouterr().err
    for garbage in (b"not a checkpoint", b"PK\x03\x04 not a zip", b"\x80\x02 no pickle"):
        (tmp_path / "garbage.pt").write_bytes(garbage)
        assert export("--checkpoint", str(tmp_path / "garbage.pt"), "--out", str(out)) == 2
        err = capsys.readouterr().err
        assert "not a readable PyTorch checkpoint" in err and err.count("\n") == 1, err
    fastestdet = models_mirror / "fastestdet" / "fastestdet_coco_352_state_dict.pth"
    assert export("--checkpoint", str(fastestdet), "--out", str(out)) == 2  # another network
    assert "a checkpoint of architecture 'none'" in capsys.readouterr().err
    assert export("--checkpoint", str(checkpoint), "--out", str(out), "--int8") == 2
    assert "--calibration" in capsys.readouterr().err
    assert export("--checkpoint", str(checkpoint), "--out", str(out), "--int8",
                  "--calibration", str(tmp_path / "nowhere")) == 2
    assert "no calibration images" in capsys.readouterr().err
    assert export("--checkpoint", str(empty), "--out", str(tmp_path / "empty.onnx"),
                  "--torch") == 2
    assert "over the checkpoint it reads" in capsys.readouterr().err
    assert out.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.pt", "garbage.pt", "lite.onnx"]
