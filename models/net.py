"""Our multi-task network: one backbone, one forward pass, three outputs.

    frame (BGR, stretched to 512x288, /255)
      -> backbone: a stem and four stages of depthwise-separable blocks (strides 4, 8, 16, 32)
      -> neck: a top-down path that brings the stride-16 and stride-32 context to stride 8
      -> detection head at stride 8: per cell, 4 box distances + objectness + 8 class logits
      -> segmentation path: `seg_context` dilated blocks on the stride-8 features (a wider view
         of the road), then a head at stride 4 -> bilinear x4: drivable-area and lane-line logits

Everything is ReLU, BatchNorm and plain convolutions so that the graph folds, exports to ONNX
at any opset >= 17 and quantizes to INT8 without surprises. `MultiTaskNet.forward` returns raw
logits for training; `Deployed` wraps it with the sigmoids and box decoding that the exported
ONNX graph and the PyTorch runtime path share.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.classes import CLASSES

ARCHITECTURE = "multitask-dsconv-v1"  # checkpoints of another architecture are refused


@dataclass(frozen=True)
class NetConfig:
    width: int = 512  # input width and height (multiples of 32; 16:9 like most dashcams)
    height: int = 288
    channels: tuple[int, ...] = (16, 32, 64, 128, 192)  # stem, stride 4, 8, 16, 32
    depths: tuple[int, ...] = (1, 3, 4, 2)  # blocks per stage
    neck: int = 96
    seg: int = 32
    seg_context: int = 0  # residual blocks, dilation 2, 4, ..., on the segmentation path
    num_classes: int = len(CLASSES)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NetConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
            act: bool = True, dilation: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, dilation * (kernel // 2), dilation, groups,
                  bias=False),
        nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SeparableBlock(nn.Module):
    """Depthwise 3x3 (optionally strided) then pointwise 1x1; residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.depthwise = conv_bn(cin, cin, 3, stride, groups=cin, dilation=dilation)
        self.pointwise = conv_bn(cin, cout, 1, act=stride != 1 or cin != cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pointwise(self.depthwise(x))
        return F.relu(x + y) if self.residual else y


def context_block(channels: int, dilation: int) -> SeparableBlock:
    """A residual block with a dilated depthwise 3x3 whose last BatchNorm starts at zero: it
    begins as the identity, so a trained network grown by such blocks computes what it did
    (its inputs are ReLU outputs) and fine-tunes from there."""
    block = SeparableBlock(channels, channels, dilation=dilation)
    nn.init.zeros_(block.pointwise[1].weight)
    return block


def stage(cin: int, cout: int, depth: int) -> nn.Sequential:
    return nn.Sequential(SeparableBlock(cin, cout, 2),
                         *[SeparableBlock(cout, cout) for _ in range(depth - 1)])


def upsample(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="nearest")


class MultiTaskNet(nn.Module):
    stride = 8  # of the detection grid

    def __init__(self, config: NetConfig = NetConfig()) -> None:
        super().__init__()
        self.config = config
        c0, c1, c2, c3, c4 = config.channels
        d1, d2, d3, d4 = config.depths
        n, s = config.neck, config.seg
        self.stem = conv_bn(3, c0, 3, 2)
        self.stage1 = stage(c0, c1, d1)  # stride 4
        self.stage2 = stage(c1, c2, d2)  # stride 8
        self.stage3 = stage(c2, c3, d3)  # stride 16
        self.stage4 = stage(c3, c4, d4)  # stride 32
        self.lateral4, self.lateral3, self.lateral2 = conv_bn(c4, n), conv_bn(c3, n), conv_bn(c2, n)
        self.smooth3, self.smooth2 = SeparableBlock(n, n), SeparableBlock(n, n)
        self.det_tower = nn.Sequential(SeparableBlock(n, n), SeparableBlock(n, n))
        self.det_out = nn.Conv2d(n, 4 + 1 + config.num_classes, 1)
        self.seg_context = nn.Sequential(*[context_block(n, 2 ** (i + 1))
                                           for i in range(config.seg_context)])
        self.seg_lateral = conv_bn(c1, s)
        self.seg_reduce = conv_bn(n, s)
        self.seg_tower = nn.Sequential(SeparableBlock(s, s), SeparableBlock(s, s))
        self.seg_out = nn.Conv2d(s, 2, 1)
        self._init_biases()

    def _init_biases(self) -> None:
        """Start objectness/class and lanes near their rare-positive priors (stable early loss)."""
        with torch.no_grad():
            self.det_out.bias[4:].fill_(-4.6)
            self.seg_out.bias.copy_(torch.tensor([0.0, -3.0]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) in [0, 1] -> det (N, 4+1+C, H/8, W/8) raw, seg (N, 2, H, W) logits."""
        f1 = self.stage1(self.stem(x))
        f2 = self.stage2(f1)
        f3 = self.stage3(f2)
        f4 = self.stage4(f3)
        p4 = self.lateral4(f4)
        p3 = self.smooth3(self.lateral3(f3) + upsample(p4, f3))
        p2 = self.smooth2(self.lateral2(f2) + upsample(p3, f2))
        det = self.det_out(self.det_tower(p2))
        wide = self.seg_reduce(self.seg_context(p2))
        s = self.seg_lateral(f1) + F.interpolate(wide, size=f1.shape[-2:], mode="bilinear",
                                                 align_corners=False)
        seg = self.seg_out(self.seg_tower(s))
        seg = F.interpolate(seg, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return det, seg


def cell_centres(det: torch.Tensor, stride: int) -> torch.Tensor:
    """(H*W, 2) x, y centres in input pixels of the cells of a (N, C, H, W) grid, row-major."""
    h, w = det.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h, device=det.device), torch.arange(w, device=det.device),
                            indexing="ij")
    return (torch.stack((xs, ys), -1).reshape(-1, 2).to(det.dtype) + 0.5) * stride


def decode_boxes(det: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw grid -> boxes (N, A, 4) x1 y1 x2 y2 in input pixels and logits (N, A, 1+C)."""
    rows = det.flatten(2).transpose(1, 2)  # (N, A, 4+1+C), A = H*W, row-major
    distances = F.softplus(rows[..., :4]) * stride  # left, top, right, bottom
    centres = cell_centres(det, stride)
    boxes = torch.cat((centres - distances[..., :2], centres + distances[..., 2:]), -1)
    return boxes, rows[..., 4:]


class Deployed(nn.Module):
    """The inference form: what the ONNX graph and the PyTorch runtime path compute.

    Outputs: `detections` (N, A, 4+1+C): x1 y1 x2 y2 in input pixels, objectness and class
    probabilities (score = objectness x class probability); `drivable` and `lanes` (N, H, W)
    probabilities at input resolution.
    """

    output_names = ("detections", "drivable", "lanes")

    def __init__(self, net: MultiTaskNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        det, seg = self.net(x)
        boxes, logits = decode_boxes(det, self.net.stride)
        probabilities = torch.sigmoid(seg)
        return (torch.cat((boxes, torch.sigmoid(logits)), -1), probabilities[:, 0],
                probabilities[:, 1])

