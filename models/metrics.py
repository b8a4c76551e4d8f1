"""The figures we report: mask IoU over a set of frames, and box AP@0.5 per road-user group.

IoU is accumulated over the whole set (sum of intersections / sum of unions), as the
TwinLiteNet and YOLOP papers report it. AP is the area under the all-point interpolated
precision-recall curve (PASCAL VOC 2010+), with greedy matching by score at IoU >= 0.5 inside
each group; mAP is the mean over the groups that have ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.net import CLASSES

# Box AP groups: every vehicle class counts as "vehicle" (a car the teacher calls a truck
# is still a hit), persons alone; traffic lights and stop signs are not scored.
GROUPS = {"vehicle": ("bicycle", "car", "motorcycle", "bus", "truck"), "person": ("person",)}
GROUP_OF = {CLASSES.index(name): group for group, names in GROUPS.items() for name in names}


@dataclass
class MaskIoU:
    intersection: int = 0
    union: int = 0

    def add(self, predicted: np.ndarray, truth: np.ndarray) -> None:
        predicted, truth = predicted > 0, truth > 0
        self.intersection += int(np.count_nonzero(predicted & truth))
        self.union += int(np.count_nonzero(predicted | truth))

    @property
    def value(self) -> float:
        return self.intersection / self.union if self.union else float("nan")


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) x1 y1 x2 y2 -> (N, M) IoU."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


@dataclass
class BoxAP:
    """Collects detections and ground truth frame by frame; `values()` gives AP per group."""

    iou: float = 0.5
    scores: dict[str, list[float]] = field(default_factory=dict)
    hits: dict[str, list[bool]] = field(default_factory=dict)
    truths: dict[str, int] = field(default_factory=dict)

    def add(self, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
            true_boxes: np.ndarray, true_classes: np.ndarray) -> None:
        for group in GROUPS:
            mine = np.array([GROUP_OF.get(int(c)) == group for c in classes], bool)
            theirs = np.array([GROUP_OF.get(int(c)) == group for c in true_classes], bool)
            self.truths[group] = self.truths.get(group, 0) + int(theirs.sum())
            predicted, truth = boxes[mine], true_boxes[theirs]
            order = np.argsort(-scores[mine], kind="stable")
            overlaps = box_iou(predicted[order], truth) if len(truth) else None
            taken = np.zeros(len(truth), bool)
            for rank, score in zip(range(len(order)), scores[mine][order], strict=True):
                hit = False
                if overlaps is not None:
                    candidates = np.where(~taken, overlaps[rank], -1.0)
                    best = int(candidates.argmax())
                    if candidates[best] >= self.iou:
                        taken[best] = hit = True
                self.scores.setdefault(group, []).append(float(score))
                self.hits.setdefault(group, []).append(hit)

    def values(self) -> dict[str, float]:
        result = {}
        for group, total in self.truths.items():
            if total == 0:
                continue
            order = np.argsort(-np.asarray(self.scores.get(group, [])), kind="stable")
            hits = np.asarray(self.hits.get(group, []), bool)[order]
            true_positives = np.cumsum(hits)
            recall = true_positives / total
            precision = true_positives / np.arange(1, len(hits) + 1)
            recall = np.concatenate(([0.0], recall, [1.0]))
            precision = np.concatenate(([1.0], precision, [0.0]))
            precision = np.maximum.accumulate(precision[::-1])[::-1]
            steps = np.flatnonzero(recall[1:] != recall[:-1])
            result[group] = float(np.sum((recall[steps + 1] - recall[steps])
                                         * precision[steps + 1]))
        return result

    def mean(self) -> float:
        values = self.values()
        return float(np.mean(list(values.values()))) if values else float("nan")
