"""What the runtime must know about a model to feed it and read its outputs.

A `ModelSpec` is plain data: the zoo keeps one per named model (`perception/zoo/zoo.yaml`), a user
registers their own ONNX with a YAML file of the same keys, and our own network stores the same
fields in its ONNX metadata (`SPEC_METADATA_KEY`), so the runtime never guesses a convention.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

SPEC_METADATA_KEY = "perception.spec"  # the ONNX metadata key holding a model's spec as JSON

Task = Literal["detection", "segmentation", "multitask"]
Decoder = Literal["yolox", "fastestdet", "twinlitenet", "multitask"]


@dataclass(frozen=True)
class InputSpec:
    """How a frame becomes the model's input tensor."""

    width: int
    height: int
    resize: Literal["stretch", "letterbox"] = "stretch"
    letterbox_anchor: Literal["top_left", "center"] = "top_left"
    pad_value: int = 114
    color: Literal["bgr", "rgb"] = "bgr"
    scale: float = 1.0 / 255.0  # multiply pixel values (0..255) by this first
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # then subtract (in `color` order)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)  # then divide
    interpolation: Literal["linear", "area", "nearest"] = "linear"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: Task
    decoder: Decoder
    input: InputSpec
    classes: tuple[str, ...] = ()
    score_threshold: float = 0.3
    nms_iou: float = 0.45
    file: str = ""  # file name in the cache or mirror
    url: str = ""  # pinned download URL (a commit, never a branch)
    sha256: str = ""
    licence: str = ""
    description: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def detects(self) -> bool:
        """Whether the model finds road users (boxes)."""
        return self.task in ("detection", "multitask")

    @property
    def segments(self) -> bool:
        """Whether the model paints the drivable area and lane lines (masks)."""
        return self.task in ("segmentation", "multitask")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        data = dict(data)
        raw_input = dict(data.pop("input"))
        for key in ("mean", "std"):
            if key in raw_input:
                raw_input[key] = tuple(float(v) for v in raw_input[key])
        data["classes"] = tuple(data.get("classes", ()))
        return cls(input=InputSpec(**raw_input), **data)
