"""Raw model outputs to detections and masks, following each model's documented convention.

Conventions (../shared/assets/MANIFEST.md, section 1): YOLOX-Nano outputs undecoded grid rows
(stride 8, 16, 32); FastestDet one stride-16 grid with tanh offsets and sigmoid sizes;
TwinLiteNet two-class scores per pixel for drivable area and lane lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

import cv2
import numpy as np

from perception.modelspec import ModelSpec
from perception.preprocess import Placement
from perception.results import Detection

# The road-user view on top of COCO-80 ids: class id -> category.
ROAD_USERS = {0: "person", 1: "bicycle", 2: "car", 3: "motorcycle", 5: "bus", 7: "truck",
              9: "traffic_light", 11: "stop_sign"}


@cache
def yolox_grid(width: int, height: int, strides: tuple[int, ...] = (8, 16, 32)) -> tuple:
    """Cell offsets (R, 2) and strides (R, 1) for the rows of a YOLOX head output."""
    grids, steps = [], []
    for stride in strides:
        ys, xs = np.meshgrid(np.arange(height // stride), np.arange(width // stride),
                             indexing="ij")
        grids.append(np.stack((xs, ys), -1).reshape(-1, 2))
        steps.append(np.full((grids[-1].shape[0], 1), stride))
    return (np.concatenate(grids).astype(np.float32), np.concatenate(steps).astype(np.float32))


def yolox_candidates(rows: np.ndarray, spec: ModelSpec) -> tuple[np.ndarray, ...]:
    """(R, 85) rows of one image -> boxes in input pixels, scores, class ids above threshold."""
    class_ids = rows[:, 5:].argmax(1)
    scores = rows[:, 4] * rows[np.arange(len(rows)), 5 + class_ids]
    keep = scores >= spec.score_threshold
    rows, scores, class_ids = rows[keep], scores[keep], class_ids[keep]
    grid, stride = yolox_grid(spec.input.width, spec.input.height)
    grid, stride = grid[keep], stride[keep]
    centre = (rows[:, :2] + grid) * stride
    size = np.exp(rows[:, 2:4]) * stride
    boxes = np.concatenate((centre - size / 2, centre + size / 2), 1)
    return boxes, scores, class_ids


def fastestdet_candidates(grid: np.ndarray, spec: ModelSpec) -> tuple[np.ndarray, ...]:
    """(85, H, W) output of one image -> boxes in input pixels, scores, class ids."""
    channels, rows, cols = grid.shape
    cells = grid.reshape(channels, -1).T  # (H*W, 85), row-major over (y, x)
    class_ids = cells[:, 5:].argmax(1)
    scores = cells[:, 0] ** 0.6 * cells[np.arange(len(cells)), 5 + class_ids] ** 0.4
    keep = np.flatnonzero(scores >= spec.score_threshold)
    cells, scores, class_ids = cells[keep], scores[keep], class_ids[keep]
    cx = (np.tanh(cells[:, 1]) + keep % cols) / cols * spec.input.width
    cy = (np.tanh(cells[:, 2]) + keep // cols) / rows * spec.input.height
    w = 1 / (1 + np.exp(-cells[:, 3])) * spec.input.width
    h = 1 / (1 + np.exp(-cells[:, 4])) * spec.input.height
    boxes = np.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), 1)
    return boxes, scores, class_ids


def nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray,
        score_threshold: float, iou: float) -> np.ndarray:
    """Indices kept by per-class non-maximum suppression."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    xywh = np.concatenate((boxes[:, :2], boxes[:, 2:] - boxes[:, :2]), 1)
    keep = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), class_ids.tolist(),
                                   score_threshold, iou)
    return np.asarray(keep, np.int64).reshape(-1)


def to_detections(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray,
                  spec: ModelSpec, placement: Placement, width: int, height: int,
                  categories: Mapping[int, str] = ROAD_USERS) -> list[Detection]:
    """Candidates (input px) -> NMS -> detections in frame pixels, best first; `categories`
    names the road-user category of a class id (COCO-80 ids by default)."""
    keep = nms(boxes, scores, class_ids, spec.score_threshold, spec.nms_iou)
    frame_boxes = placement.boxes_to_frame(boxes[keep].astype(np.float32))
    frame_boxes = np.clip(frame_boxes, 0, [width, height, width, height])
    detections = []
    for box, score, class_id in zip(frame_boxes, scores[keep], class_ids[keep], strict=True):
        cid = int(class_id)
        label = spec.classes[cid] if cid < len(spec.classes) else str(cid)
        detections.append(Detection(class_id=cid, label=label, score=round(float(score), 4),
                                    box=tuple(round(float(v), 1) for v in box),
                                    category=categories.get(cid)))
    detections.sort(key=lambda d: -d.score)
    return detections


def decode_detections(outputs: list[np.ndarray], spec: ModelSpec, placements: list[Placement],
                      sizes: list[tuple[int, int]]) -> list[list[Detection]]:
    """Detections per image of a batch; `sizes` are the frames' (width, height)."""
    candidates = {"yolox": yolox_candidates, "fastestdet": fastestdet_candidates}[spec.decoder]
    return [to_detections(*candidates(outputs[0][i], spec), spec, placement, *size)
            for i, (placement, size) in enumerate(zip(placements, sizes, strict=True))]


def decode_twinlitenet(drivable: np.ndarray, lanes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2, H, W) drivable and lane scores -> uint8 0/1 masks (N, H, W): foreground > background.

    Comparing the two channels equals the argmax and costs one pass; masks stay at model
    resolution until someone needs them at frame size.
    """
    return ((drivable[:, 1] > drivable[:, 0]).view(np.uint8),
            (lanes[:, 1] > lanes[:, 0]).view(np.uint8))
