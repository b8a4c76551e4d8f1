"""Decoding our own multi-task network (decoder "multitask"): numpy only, no torch.

The network's graph already applies the sigmoids and turns its stride-8 grid into boxes, so the
outputs are (see models/net.py, `Deployed`):

- `detections` (N, A, 4 + 1 + C): x1 y1 x2 y2 in input pixels, objectness, C class
  probabilities; score = objectness x best class probability;
- `drivable`, `lanes` (N, H, W): per-pixel probabilities at input resolution.

The model's `ModelSpec` travels inside the ONNX file (metadata key `perception.spec`, read by
`perception.zoo.registry.resolve`), so no side file is needed.
"""

from __future__ import annotations

import numpy as np

from perception.decode import to_detections
from perception.modelspec import ModelSpec
from perception.preprocess import Placement
from perception.results import Detection

MASK_THRESHOLD = 0.5


def candidates(rows: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A, 5 + C) rows of one image -> boxes (input px), scores, class ids above threshold."""
    class_probabilities = rows[:, 5:]
    class_ids = class_probabilities.argmax(1)
    scores = rows[:, 4] * class_probabilities[np.arange(len(rows)), class_ids]
    keep = scores >= threshold
    return rows[keep, :4], scores[keep], class_ids[keep]


def decode_multitask(outputs: dict[str, np.ndarray], spec: ModelSpec,
                     placements: list[Placement], sizes: list[tuple[int, int]]
                     ) -> tuple[list[list[Detection]], np.ndarray, np.ndarray]:
    """Detections per image (frame pixels) and uint8 0/1 drivable and lane masks (N, H, W) at
    the network's input resolution; `sizes` are the frames' (width, height)."""
    threshold = float(spec.extra.get("mask_threshold", MASK_THRESHOLD))
    categories = {i: name.replace(" ", "_") for i, name in enumerate(spec.classes)}
    detections = [to_detections(*candidates(rows, spec.score_threshold), spec, placement, *size,
                                categories)
                  for rows, placement, size in zip(outputs["detections"], placements, sizes,
                                                   strict=True)]
    return (detections, (outputs["drivable"] > threshold).view(np.uint8),
            (outputs["lanes"] > threshold).view(np.uint8))
