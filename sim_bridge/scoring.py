"""Scoring a drive from the simulator's ground truth, beyond `DrivingMetrics`: how well the car
kept its lane and its distance, what it hit, and how well perception matched the labels.

Per step the simulator reports the ego car's signed offset from its lane's centre line (and
whether that lane is curved), the bumper-to-bumper gap to the nearest vehicle ahead in its
lane, and its crash and out-of-road flags; an event that lasts several steps counts once. Per
frame with labels, the drivable-area and lane-line IoU of our perception against them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from perception.results import FrameResult


def mask_iou(predicted: np.ndarray | None, truth: np.ndarray | None) -> float | None:
    """Intersection over union of two 0/1 masks of one size; None when either is missing or
    both are empty."""
    if predicted is None or truth is None:
        return None
    predicted, truth = predicted.astype(bool), truth.astype(bool)
    union = np.count_nonzero(predicted | truth)
    return None if union == 0 else np.count_nonzero(predicted & truth) / union


def result_ious(result: FrameResult, truth: FrameResult) -> tuple[float | None, float | None]:
    """Drivable-area and lane-line IoU of `result` against `truth`, at the frame's size."""
    return (mask_iou(result.mask_at_frame_size("drivable"), truth.mask_at_frame_size("drivable")),
            mask_iou(result.mask_at_frame_size("lanes"), truth.mask_at_frame_size("lanes")))


@dataclass
class DriveScore:
    route_m: float  # the route scored: its first metres
    travelled_m: float = 0.0  # along the route
    route_time_s: float | None = None  # when the first route_m metres were done
    crashes: int = 0
    out_of_road: int = 0
    cross_track_m: list[float] = field(default_factory=list)
    cross_track_curve_m: list[float] = field(default_factory=list)
    lead_gaps_m: list[float] = field(default_factory=list)
    drivable_iou: list[float] = field(default_factory=list)
    lane_iou: list[float] = field(default_factory=list)
    _crashing: bool = False
    _off_road: bool = False

    def step(self, time_s: float, travelled_m: float, cross_track_m: float, on_curve: bool,
             lead_gap_m: float | None, crashing: bool, off_road: bool) -> None:
        self.travelled_m = travelled_m
        if self.route_time_s is None and travelled_m >= self.route_m:
            self.route_time_s = time_s
        self.cross_track_m.append(cross_track_m)
        if on_curve:
            self.cross_track_curve_m.append(cross_track_m)
        if lead_gap_m is not None:
            self.lead_gaps_m.append(lead_gap_m)
        self.crashes += crashing and not self._crashing
        self.out_of_road += off_road and not self._off_road
        self._crashing, self._off_road = crashing, off_road

    def perception(self, result: FrameResult, truth: FrameResult) -> None:
        drivable, lanes = result_ious(result, truth)
        if drivable is not None:
            self.drivable_iou.append(drivable)
        if lanes is not None:
            self.lane_iou.append(lanes)

    @property
    def route_done(self) -> bool:
        return self.route_time_s is not None

    def summary(self) -> dict:
        return {
            "route_m": self.route_m,
            "route_completion": round(min(1.0, self.travelled_m / self.route_m), 4),
            "route_time_s": self.route_time_s,
            "crashes": self.crashes, "out_of_road": self.out_of_road,
            "cross_track_rms_m": _rms(self.cross_track_m),
            "cross_track_max_m": _round(max(map(abs, self.cross_track_m), default=None)),
            "cross_track_curve_rms_m": _rms(self.cross_track_curve_m),
            "min_lead_gap_m": _round(min(self.lead_gaps_m, default=None)),
            "drivable_iou": _round(float(np.mean(self.drivable_iou))
                                   if self.drivable_iou else None),
            "lane_iou": _round(float(np.mean(self.lane_iou)) if self.lane_iou else None),
            "iou_frames": len(self.drivable_iou),
        }


def _rms(values: list[float]) -> float | None:
    return _round(math.sqrt(float(np.mean(np.square(values))))) if values else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
