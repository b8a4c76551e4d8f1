"""Our network: shapes, the shipped ONNX (metadata, dynamic batch), PyTorch vs ONNX Runtime
parity on real frames, and the numpy decoder the runtime uses for decoder "multitask"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.net import CLASSES, Deployed, MultiTaskNet, NetConfig
from perception.frames import read_image
from perception.inference import OnnxModel
from perception.multitask_decode import decode_multitask
from perception.preprocess import preprocess
from perception.zoo.registry import spec_from_onnx

EMBEDDED = Path(__file__).resolve().parents[1] / "perception" / "zoo" / "embedded"


def test_one_forward_three_outputs() -> None:
    net = MultiTaskNet(NetConfig(width=96, height=64)).eval()
    with torch.no_grad():
        detections, drivable, lanes = Deployed(net)(torch.rand(2, 3, 64, 96))
    assert detections.shape == (2, (64 // 8) * (96 // 8), 4 + 1 + len(CLASSES))
    assert drivable.shape == lanes.shape == (2, 64, 96)
    assert float(drivable.min()) >= 0 and float(drivable.max()) <= 1
    boxes = detections[..., :4]
    assert bool((boxes[..., 2] >= boxes[..., 0]).all() and (boxes[..., 3] >= boxes[..., 1]).all())


def test_growing_by_context_blocks_keeps_what_the_network_computes() -> None:
    from models.checkpoint import build_net

    small = NetConfig(width=96, height=64)
    net = MultiTaskNet(small).eval()
    for module in net.modules():  # BatchNorm statistics other than the identity's defaults
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    state = {"config": small.to_dict(), "ema": net.state_dict()}
    grown = build_net(state, config=NetConfig(width=96, height=64, seg_context=2))
    assert len(grown.seg_context) == 2
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        for before, after in zip(net(x), grown(x), strict=True):
            assert torch.equal(before, after)


def test_embedded_model_carries_its_spec_and_is_small() -> None:
    onnx_file = EMBEDDED / "multitask_lite.onnx"
    assert onnx_file.stat().st_size <= 5 * 1024 * 1024
    model = OnnxModel(onnx_file, providers=["CPUExecutionProvider"], threads=1)
    spec, path = spec_from_onnx(onnx_file)
    assert path == onnx_file and spec.name == "multitask-lite"
    assert spec.decoder == "multitask" and spec.task == "multitask"
    assert spec.classes == CLASSES
    assert (spec.input.width, spec.input.height, spec.input.resize) == (512, 288, "stretch")
    assert model.output_names == ["detections", "drivable", "lanes"]
    assert model.fixed_batch is None  # dynamic batch axis


def test_torch_and_onnxruntime_agree_on_real_frames(drives: Path) -> None:
    from models.torch_runtime import TorchModel

    onnx_model = OnnxModel(EMBEDDED / "multitask_lite.onnx", providers=["CPUExecutionProvider"],
                           threads=1)
    torch_model = TorchModel(EMBEDDED / "multitask_lite.pt", device="cpu")
    spec, _ = spec_from_onnx(EMBEDDED / "multitask_lite.onnx")
    assert torch_model.spec.input == spec.input and torch_model.spec.classes == spec.classes
    images = [read_image(drives / "bdd100k_frames" / "yolop" / "0ace96c3-48481887.jpg"),
              read_image(drives / "udacity_lanelines_p1" / "solidWhiteRight.jpg"),
              read_image(drives / "kitti_object" / "image_2" / "000001.png")]
    batch, placements = preprocess(images, spec.input)
    expected, found = torch_model.run(batch), onnx_model.run(batch)
    for name, e, f in zip(onnx_model.output_names, expected, found, strict=True):
        tolerance = 0.05 if name == "detections" else 1e-3  # boxes are in pixels
        assert np.abs(e - f).max() < tolerance, name
    sizes = [image.shape[1::-1] for image in images]
    by_torch = decode_multitask(dict(zip(onnx_model.output_names, expected, strict=True)), spec,
                                placements, sizes)
    by_onnx = decode_multitask(dict(zip(onnx_model.output_names, found, strict=True)), spec,
                               placements, sizes)
    assert [len(d) for d in by_torch[0]] == [len(d) for d in by_onnx[0]]
    assert sum(len(d) for d in by_onnx[0]) > 0  # real road scenes: something is found
    assert np.mean(by_torch[1] == by_onnx[1]) > 0.999
    assert by_onnx[1].shape == (3, 288, 512) and by_onnx[1].dtype == np.uint8
    assert by_onnx[1].mean() > 0.05  # the road is drivable somewhere in every frame


def test_decode_maps_boxes_to_the_frame_and_names_categories() -> None:
    from perception.modelspec import InputSpec, ModelSpec
    from perception.preprocess import Placement

    spec = ModelSpec(name="t", task="multitask", decoder="multitask",
                     input=InputSpec(width=64, height=32), classes=CLASSES)
    rows = np.zeros((1, 4, 5 + len(CLASSES)), np.float32)
    rows[0, 0, :5] = [8, 4, 24, 20, 0.9]
    rows[0, 0, 5 + CLASSES.index("traffic light")] = 0.8
    rows[0, 1, :5] = [9, 4, 24, 20, 0.9]  # a duplicate: suppressed
    rows[0, 1, 5 + CLASSES.index("traffic light")] = 0.7
    rows[0, 2, :5] = [0, 0, 10, 10, 0.1]  # below the threshold
    rows[0, 2, 5] = 0.5
    probabilities = np.full((1, 32, 64), 0.2, np.float32)
    probabilities[0, 16:] = 0.9
    detections, drivable, lanes = decode_multitask(
        {"detections": rows, "drivable": probabilities, "lanes": probabilities * 0},
        spec, [Placement(0.5, 0.25)], [(128, 128)])
    (only,) = detections[0]
    assert only.label == "traffic light" and only.category == "traffic_light"
    assert only.box == (16.0, 16.0, 48.0, 80.0)
    assert only.score == pytest.approx(0.72, abs=1e-3)
    assert drivable[0, 16:].all() and not drivable[0, :16].any() and not lanes.any()
