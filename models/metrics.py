"""The figures we report: mask IoU over a set of frames, and per road-user group box AP@0.5
(over all scores) and precision / recall / F1 at IoU 0.5 (at the model's own threshold).

IoU is accumulated over the whole set (sum of intersections / sum of unions), as the
TwinLiteNet and YOLOP papers report it. AP is the area under the all-point interpolated
precision-recall curve (PASCAL VOC 2010+), with greedy matching by score at IoU >= 0.5 inside
each group; mAP is the mean over the groups that have ground truth. Needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.classes import CLASSES

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


def match(boxes: np.ndarray, scores: np.ndarray, truth: np.ndarray, iou: float
          ) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching by descending score: the order of the predictions and, in that
    order, whether each one hit a ground-truth box not taken by a higher-scoring one."""
    order = np.argsort(-scores, kind="stable")
    hits = np.zeros(len(order), bool)
    if len(truth) and len(order):
        overlaps = box_iou(boxes[order], truth)
        taken = np.zeros(len(truth), bool)
        for rank in range(len(order)):
            candidates = np.where(~taken, overlaps[rank], -1.0)
            best = int(candidates.argmax())
            if candidates[best] >= iou:
                taken[best] = hits[rank] = True
    return order, hits


def in_group(classes: np.ndarray, group: str) -> np.ndarray:
    return np.array([GROUP_OF.get(int(c)) == group for c in classes], bool)


@dataclass
class BoxCounts:
    """True/false positives and misses per group at IoU >= `iou` (boxes as the model gives
    them, after its score threshold and NMS); "all" sums the groups."""

    iou: float = 0.5
    counts: dict[str, list[int]] = field(default_factory=dict)  # group -> [tp, fp, fn]

    def add(self, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
            true_boxes: np.ndarray, true_classes: np.ndarray) -> None:
        for group in GROUPS:
            mine, theirs = in_group(classes, group), in_group(true_classes, group)
            _, hits = match(boxes[mine], scores[mine], true_boxes[theirs], self.iou)
            found = int(hits.sum())
            for key in (group, "all"):
                tp, fp, fn = self.counts.setdefault(key, [0, 0, 0])
                self.counts[key] = [tp + found, fp + len(hits) - found,
                                    fn + int(theirs.sum()) - found]

    def values(self) -> dict[str, dict[str, float]]:
        """Per group: precision, recall, F1 (NaN where undefined) and the counts."""
        result = {}
        for group, (tp, fp, fn) in self.counts.items():
            precision = tp / (tp + fp) if tp + fp else float("nan")
            recall = tp / (tp + fn) if tp + fn else float("nan")
            f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
            result[group] = {"precision": precision, "recall": recall, "f1": f1,
                             "tp": tp, "fp": fp, "fn": fn}
        return result


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
            mine, theirs = in_group(classes, group), in_group(true_classes, group)
            self.truths[group] = self.truths.get(group, 0) + int(theirs.sum())
            order, hits = match(boxes[mine], scores[mine], true_boxes[theirs], self.iou)
            self.scores.setdefault(group, []).extend(scores[mine][order].tolist())
            self.hits.setdefault(group, []).extend(hits.tolist())

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
