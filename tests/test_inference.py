"""The ONNX Runtime wrapper and the perceiver's batching on the real zoo models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from perception.errors import PerceptionError
from perception.frames import open_source
from perception.inference import OnnxModel, choose_providers
from perception.pipeline import Perceiver


def test_graph_facts_and_fixed_batch(models_mirror: Path) -> None:
    model = OnnxModel(models_mirror / "twinlitenet" / "twinlitenet_best.onnx", threads=1)
    assert (model.input_name, model.input_shape, model.output_names) == \
        ("images", [1, 3, 360, 640], ["da", "ll"])
    assert model.fixed_batch == 1 and model.providers[-1] == "CPUExecutionProvider"
    batch = np.random.default_rng(0).random((3, 3, 360, 640), dtype=np.float32)
    drivable, lanes = model.run(batch)  # a fixed batch of 1 still takes three frames
    assert drivable.shape == lanes.shape == (3, 2, 360, 640)
    np.testing.assert_allclose(drivable[2:], model.run(batch[2:])[0], atol=1e-5)


def test_providers() -> None:
    assert choose_providers()[-1] == "CPUExecutionProvider"
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(PerceptionError, match="not available"):
        choose_providers(["NoSuchExecutionProvider"])


def test_perceive_batch_equals_stream(drives: Path) -> None:
    frames = list(open_source(str(drives / "kitti_object" / "image_2")))
    with Perceiver.from_names(["fastestdet", "twinlitenet"]) as perceiver:
        batch = perceiver.perceive(frames)
        streamed = [result for _, result in perceiver.stream(frames)]
    assert [r.frame_index for r in batch] == [0, 1, 2]
    for a, b in zip(batch, streamed, strict=True):
        assert a.detections == b.detections and a.models == ["fastestdet", "twinlitenet"]
        np.testing.assert_array_equal(a.drivable, b.drivable)
        assert a.drivable.shape == (360, 640) and a.lanes.dtype == np.uint8
        assert {"fastestdet/inference", "twinlitenet/decode", "total"} <= set(a.timings_ms)
    assert "read" in streamed[0].timings_ms


def test_our_multitask_network_through_the_perceiver(drives: Path) -> None:
    """The embedded network carries its spec in its ONNX metadata; one model, both outputs."""
    embedded = (Path(__file__).resolve().parents[1] / "perception" / "zoo" / "embedded"
                / "multitask_lite.onnx")
    frames = list(open_source(str(drives / "bdd100k_frames" / "yolop" / "3c0e7240-96e390d2.jpg")))
    with Perceiver.from_names([str(embedded)]) as perceiver:
        (result,) = perceiver.perceive(frames)
    spec = perceiver.models[0].spec
    assert spec.decoder == "multitask"
    assert result.drivable.shape == (spec.input.height, spec.input.width)
    assert result.mask_at_frame_size("lanes").shape == (720, 1280)
    assert 0.05 < result.drivable.mean() < 0.9
    assert all(0 <= d.box[0] < d.box[2] <= 1280 for d in result.detections)
