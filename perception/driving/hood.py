"""Our own car in the picture: the hood (bonnet) and dashboard along the bottom of the frame.

Segmentation models see the hood as road and detectors box it as a car; both are dropped
before planning and drawing. Where the hood is comes from:
- the camera file's `hood` polygon (camera.py), fitted to the frame like the intrinsics
  (crop, scale): `hood_mask(fit_to_frame(camera, width, height))`;
- or, for a sequence whose camera file has none, `HoodEstimator`: the region along the bottom
  edge that stays still while the scene moves.

`drop_hood(result, mask)` clears the drivable and lane pixels inside the hood and removes the
detections whose box lies mostly inside it (`HOOD_BOX_FRACTION` of the box's area, with the
middle of its bottom edge inside the hood: a car ahead whose bottom is hidden behind our hood
ends above it and stays).
"""

from __future__ import annotations

from collections import deque
from functools import lru_cache

import cv2
import numpy as np

from perception.driving.camera import CameraModel
from perception.results import FrameResult

HOOD_BOX_FRACTION = 0.5  # a box with at least this share of its area in the hood is the hood


@lru_cache(maxsize=32)  # per camera object (fit_to_frame gives one per frame size)
def hood_mask(camera: CameraModel) -> np.ndarray | None:
    """uint8 0/1 mask of the camera's hood polygon at the camera's size (read-only, cached);
    None when the camera has no hood or it lies outside this (cropped) frame."""
    if camera.hood is None:
        return None
    mask = np.zeros((camera.height, camera.width), np.uint8)
    cv2.fillPoly(mask, [np.round(camera.hood).astype(np.int32)], 1)
    if not mask.any():
        return None
    mask.setflags(write=False)
    return mask


def hood_box_fraction(box: tuple[float, float, float, float], integral: np.ndarray) -> float:
    """Share of the box's pixels inside the hood, from the hood mask's integral image."""
    height, width = integral.shape[0] - 1, integral.shape[1] - 1
    x1, x2 = (int(np.clip(round(v), 0, width)) for v in (box[0], box[2]))
    y1, y2 = (int(np.clip(round(v), 0, height)) for v in (box[1], box[3]))
    if x2 <= x1 or y2 <= y1:
        return 0.0
    inside = integral[y2, x2] - integral[y1, x2] - integral[y2, x1] + integral[y1, x1]
    return float(inside) / ((x2 - x1) * (y2 - y1))


def drop_hood(result: FrameResult, hood: np.ndarray | None) -> FrameResult:
    """Remove what the models found on our own car, in place; returns the result.

    `hood` is a frame-size mask (`hood_mask`, `HoodEstimator`), None for no hood. Masks come at
    the model's resolution: a mask pixel is cleared when any part of it covers the hood (area
    resize), so the mask at frame size holds nothing inside the hood either. The masks are
    replaced, never written into (they may be shared with the caller).
    """
    if hood is None or not hood.any():
        return result
    if hood.shape != (result.height, result.width):
        raise ValueError(f"hood mask is {hood.shape[1]}x{hood.shape[0]}, the frame "
                         f"{result.width}x{result.height}")
    for which in ("drivable", "lanes"):
        mask = getattr(result, which)
        if mask is None:
            continue
        covered = cv2.resize(hood.astype(np.float32), (mask.shape[1], mask.shape[0]),
                             interpolation=cv2.INTER_AREA) > 0
        cleared = mask.copy()
        cleared[covered] = 0
        setattr(result, which, cleared)
    integral = cv2.integral(hood)
    kept = []
    for det in result.detections:
        x1, _, x2, y2 = det.box
        u = int(np.clip((x1 + x2) / 2, 0, result.width - 1))
        v = int(np.clip(y2 - 1, 0, result.height - 1))
        if not (hood[v, u] and hood_box_fraction(det.box, integral) >= HOOD_BOX_FRACTION):
            kept.append(det)
    result.detections = kept
    return result


class HoodEstimator:
    """The hood of a sequence: what stays still along the bottom edge while the scene moves.

    Each frame is shrunk to `width` pixels across, in grey. A frame counts when the scene moved
    since the last counted one (mean absolute change of the upper two thirds >= `min_motion`
    grey levels), so a car standing at a light teaches nothing. Over the last `frames` counted
    frames (a ring of small frames: bounded memory):
    - a pixel is still when its standard deviation over them is below `still_std` grey levels
      or `still_ratio` x the scene's median (a white hood mirrors the moving sky a little);
    - per column, the still pixels from the bottom edge up (one-pixel gaps closed, at most
      `max_height` of the frame) hold the hood; its top is the highest sharp edge of the mean
      frame among them (>= `min_edge` grey levels per row): a moving road blurs in the mean,
      the outline of our own car stays sharp. Plain asphalt is as still as a hood, but has no
      such edge;
    - a hood spans the frame: with an outline in fewer than `min_columns` of the columns there
      is none; the outline is median-filtered across 5 columns.
    `update` returns the frame-size uint8 0/1 mask once `frames` moving frames were seen (all
    zeros for a camera without a hood), None before. Frames of another size start over.
    """

    def __init__(self, frames: int = 24, width: int = 96, min_motion: float = 4.0,
                 still_std: float = 3.0, still_ratio: float = 0.5, min_edge: float = 10.0,
                 min_columns: float = 0.8, max_height: float = 0.4) -> None:
        self.frames, self.width, self.min_motion = frames, width, min_motion
        self.still_std, self.still_ratio, self.min_edge = still_std, still_ratio, min_edge
        self.min_columns, self.max_height = min_columns, max_height
        self.size: tuple[int, int] | None = None  # (width, height) of the frames
        self.ring: deque[np.ndarray] = deque(maxlen=frames)
        self.mask: np.ndarray | None = None

    def update(self, image: np.ndarray) -> np.ndarray | None:
        """Take the next frame (BGR or grey); the hood mask at frame size, or None (not yet)."""
        height, width = image.shape[:2]
        if self.size != (width, height):
            self.size, self.mask = (width, height), None
            self.ring.clear()
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        small = cv2.resize(grey, (self.width, max(1, round(self.width * height / width))),
                           interpolation=cv2.INTER_AREA).astype(np.float32)
        scene = slice(0, max(1, small.shape[0] * 2 // 3))
        if self.ring and np.abs(small[scene] - self.ring[-1][scene]).mean() < self.min_motion:
            return self.mask
        self.ring.append(small)
        if len(self.ring) == self.frames:
            self.mask = self._estimate()
        return self.mask

    def _estimate(self) -> np.ndarray:
        stack = np.stack(self.ring)
        std = stack.std(axis=0)
        scene_std = float(np.median(std[: max(1, std.shape[0] * 2 // 3)]))
        still = (std < max(self.still_std, self.still_ratio * scene_std)).astype(np.uint8)
        still = cv2.morphologyEx(still, cv2.MORPH_CLOSE, np.ones((3, 1), np.uint8))
        rows = still.shape[0]
        row = np.arange(rows)[:, None]
        broken = np.flipud(still) == 0  # per column, still rows from the bottom edge up
        run = np.where(broken.any(axis=0), broken.argmax(axis=0), rows)
        run = np.minimum(run, int(self.max_height * rows))
        mean = stack.mean(axis=0)
        edge = np.zeros_like(mean)
        edge[1:] = np.abs(np.diff(mean, axis=0))  # edge[r]: between rows r - 1 and r
        outline = (edge >= self.min_edge) & (row >= rows - run[None, :])
        top = np.where(outline.any(axis=0), outline.argmax(axis=0), rows)
        hood_rows = (rows - top).astype(np.uint8)
        if (hood_rows > 0).mean() < self.min_columns:
            hood_rows[:] = 0
        hood_rows = cv2.medianBlur(hood_rows.reshape(1, -1), 5).ravel()
        small = (row >= rows - hood_rows[None, :]).astype(np.uint8)
        return cv2.resize(small, self.size, interpolation=cv2.INTER_NEAREST)
