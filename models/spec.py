"""Our network's `ModelSpec` and the ONNX metadata that carries it.

Shared by the exporter (which writes the metadata into the ONNX file) and the PyTorch runtime
path (which reports the same spec and metadata), so running on PyTorch needs neither `onnx`
nor the exporter.
"""

from __future__ import annotations

import json

from models.net import CLASSES, Deployed, MultiTaskNet
from perception.modelspec import SPEC_METADATA_KEY, InputSpec, ModelSpec

NAME = "multitask-lite"


DEFAULT_SCORE_THRESHOLD = 0.3


def model_spec(net: MultiTaskNet, file: str = "", licence: str = "", sha256: str = "",
               score_threshold: float = DEFAULT_SCORE_THRESHOLD) -> ModelSpec:
    config = net.config
    return ModelSpec(
        name=NAME, task="multitask", decoder="multitask",
        input=InputSpec(width=config.width, height=config.height, resize="stretch",
                        color="bgr", scale=1.0 / 255.0, interpolation="linear"),
        classes=CLASSES, score_threshold=score_threshold, nms_iou=0.45, file=file, sha256=sha256,
        licence=licence,
        description="Our multi-task network: road users, drivable area and lane lines in one "
                    "pass, distilled from yolox-nano and twinlitenet",
        extra={"outputs": list(Deployed.output_names), "mask_threshold": 0.5,
               "architecture": config.to_dict()})


def metadata_props(spec: ModelSpec) -> dict[str, str]:
    """The spec as the zoo reads it from an ONNX file (`perception.zoo.registry.spec_from_onnx`)."""
    return {SPEC_METADATA_KEY: json.dumps(spec.to_dict())}
