"""Bird's-eye view: the camera's masks and boxes laid onto a metric grid of the flat road.

Inverse perspective mapping: every grid cell is a road point (x forward, y left, metres); its
pixel comes from the camera model (`ground_to_pixel`, lens distortion included), and
`cv2.remap` fetches the mask value there. Without distortion this is exactly
`cv2.warpPerspective` with the camera's ground homography (tests/test_bev.py checks both
agree); the remap form also handles distorted lenses. Cells the camera does not see (outside
the image, under the hood line) are marked not `visible`, which the planner treats as unknown,
never as free.

Obstacles are placed at the nearer of their two distance estimates (distance.py): where the
bottom edge of the box meets the road, or what the class's typical size says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from perception.driving.camera import CameraModel
from perception.driving.distance import SIZE_PRIORS, DistanceEstimate, estimate_distance
from perception.errors import PerceptionError
from perception.results import Detection, FrameResult

STOP_SIGN_SIZE_M = 0.75  # a US stop sign is 30 inches across


class BevError(PerceptionError):
    """Perception outputs that do not fit the camera (wrong size masks)."""


@dataclass(frozen=True)
class BevGrid:
    """A raster of the road ahead: row 0 is the far edge (x_max), column 0 the left edge (y_max)."""

    x_min: float = 0.0
    x_max: float = 40.0
    y_min: float = -10.0
    y_max: float = 10.0
    metres_per_pixel: float = 0.1

    @property
    def rows(self) -> int:
        return int(round((self.x_max - self.x_min) / self.metres_per_pixel))

    @property
    def cols(self) -> int:
        return int(round((self.y_max - self.y_min) / self.metres_per_pixel))

    def cell_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """x, y of every cell centre, each (rows, cols)."""
        r = self.metres_per_pixel
        x = self.x_max - (np.arange(self.rows) + 0.5) * r
        y = self.y_max - (np.arange(self.cols) + 0.5) * r
        return np.meshgrid(x, y, indexing="ij")

    def to_cell(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row, column (int) of points, and whether they fall on the grid."""
        row = np.floor((self.x_max - np.asarray(x)) / self.metres_per_pixel).astype(np.int64)
        col = np.floor((self.y_max - np.asarray(y)) / self.metres_per_pixel).astype(np.int64)
        inside = (row >= 0) & (row < self.rows) & (col >= 0) & (col < self.cols)
        return np.clip(row, 0, self.rows - 1), np.clip(col, 0, self.cols - 1), inside

    def to_pixel(self, x: np.ndarray, y: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """Float picture coordinates (u, v) of road points, for drawing."""
        u = (self.y_max - np.asarray(y)) / self.metres_per_pixel * scale
        v = (self.x_max - np.asarray(x)) / self.metres_per_pixel * scale
        return np.stack([u, v], axis=-1)


@dataclass
class Obstacle:
    """A road user on the grid: its rear edge centre (x, y), width and assumed length, metres."""

    x: float
    y: float
    width: float
    length: float
    label: str


@dataclass
class BirdsEye:
    grid: BevGrid
    visible: np.ndarray  # uint8 0/1: cells the camera sees
    drivable: np.ndarray | None  # uint8 0/1, None when perception had no drivable mask
    lanes: np.ndarray | None  # uint8 0/1, None when perception had no lane mask
    obstacles: list[Obstacle] = field(default_factory=list)
    stop_sign_x: float | None = None  # distance ahead of the nearest stop sign facing us


@lru_cache(maxsize=16)
def ipm_maps(camera: CameraModel, grid: BevGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-cell source pixel (map_x, map_y float32) and the visible mask, cached per camera."""
    x, y = grid.cell_centres()
    pixels, in_front = camera.ground_to_pixel(np.column_stack([x.ravel(), y.ravel()]))
    u, v = pixels[:, 0], pixels[:, 1]
    visible = in_front & (u >= 0) & (u <= camera.width - 1) & (v >= 0) & (v <= camera.height - 1)
    u = np.where(visible, u, -1.0).reshape(x.shape).astype(np.float32)
    v = np.where(visible, v, -1.0).reshape(x.shape).astype(np.float32)
    return u, v, visible.reshape(x.shape).astype(np.uint8)


def warp_to_grid(mask: np.ndarray, camera: CameraModel, grid: BevGrid) -> np.ndarray:
    """A frame-size uint8 mask -> the grid (nearest neighbour; 0 outside the image)."""
    map_x, map_y, _ = ipm_maps(camera, grid)
    return cv2.remap(mask, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=0)


def _frame_mask(result: FrameResult, which: str) -> np.ndarray | None:
    """A mask at frame size. Masks come at the model's resolution (any size, stretched to the
    frame like the model's input was); they must be 2-D and match the other mask's size."""
    raw = getattr(result, which)
    if raw is None:
        return None
    if raw.ndim != 2 or raw.size == 0:
        raise BevError(f"{which} mask must be a non-empty 2-D (H, W) array, got shape "
                       f"{list(raw.shape)}")
    other = result.lanes if which == "drivable" else result.drivable
    if other is not None and other.shape[:2] != raw.shape:
        raise BevError(f"drivable mask is {result.drivable.shape[1]}x{result.drivable.shape[0]} "
                       f"but lanes mask is {result.lanes.shape[1]}x{result.lanes.shape[0]}; "
                       "both must come at the same size")
    return result.mask_at_frame_size(which)


def obstacle_from_box(det: Detection, camera: CameraModel, near_x: float,
                      estimate: DistanceEstimate | None = None) -> Obstacle | None:
    """Place a road user on the road at the nearer of its two distance estimates (distance.py),
    across from the camera along the ray through its box's bottom centre.

    A box cut by the bottom of the image hides where it meets the road: it is put at `near_x`
    (the nearest road the planner cares about), the safe side. Returns None when neither
    estimate exists and the box is not cut (above the horizon, no size prior).
    """
    x1, _, x2, y2 = det.box
    if estimate is None:
        estimate = estimate_distance(det, camera)
    nearest = estimate.nearest_m if estimate is not None else None
    cut = y2 >= camera.height - 2
    if nearest is None and not cut:
        return None
    x = near_x if nearest is None else camera.mount.x + nearest
    if cut:
        x = min(x, near_x)
    forward = max(x - camera.mount.x, 0.1)
    ray = camera.pixel_rays(np.array([[(x1 + x2) / 2, min(y2, camera.height - 1.0)]]))[0]
    y = camera.mount.y + ray[1] / max(ray[0], 1e-6) * forward
    width = float(np.clip((x2 - x1) * forward / camera.K[0, 0], 0.3, 4.0))
    label = det.category or det.label
    return Obstacle(x=float(x), y=float(y), width=width,
                    length=SIZE_PRIORS[det.category].length_m, label=label)


def is_ego_hood(det: Detection, camera: CameraModel) -> bool:
    """The detector sometimes boxes our own hood (or reflections on it): a box on the bottom
    edge of the frame that is very wide, or that is flat and stays in the bottom quarter (a
    real car that close to the bumper would reach far up the image)."""
    x1, y1, x2, y2 = det.box
    on_bottom = y2 >= 0.95 * camera.height
    return on_bottom and ((x2 - x1) > 0.6 * camera.width or y1 > 0.75 * camera.height)


def stop_sign_distance(det: Detection, camera: CameraModel) -> float:
    """Distance ahead of a stop sign from its apparent size (signs are not on the road)."""
    x1, y1, x2, y2 = det.box
    size_px = max(1.0, y2 - y1, x2 - x1)
    return camera.mount.x + camera.K[1, 1] * STOP_SIGN_SIZE_M / size_px


def birdseye(result: FrameResult, camera: CameraModel, grid: BevGrid = BevGrid(),
             near_x: float = 0.0, estimates: list[DistanceEstimate | None] | None = None
             ) -> BirdsEye:
    """Lay a frame's masks and boxes onto the grid; `estimates` are the detections' distances
    (distance.py), made here when not given."""
    if (result.width, result.height) != (camera.width, camera.height):
        raise BevError(f"frame is {result.width}x{result.height} but the camera file describes "
                       f"{camera.width}x{camera.height} images")
    _, _, visible = ipm_maps(camera, grid)
    layers = {}
    for which in ("drivable", "lanes"):
        mask = _frame_mask(result, which)
        layers[which] = None if mask is None else warp_to_grid(mask, camera, grid)
    obstacles, stop_signs = [], []
    if estimates is None:
        estimates = [estimate_distance(det, camera) for det in result.detections]
    for det, estimate in zip(result.detections, estimates, strict=True):
        if det.category == "stop_sign":
            stop_signs.append(stop_sign_distance(det, camera))
        elif det.category in SIZE_PRIORS and not is_ego_hood(det, camera):
            obstacle = obstacle_from_box(det, camera, near_x, estimate)
            if obstacle is not None:
                obstacles.append(obstacle)
    return BirdsEye(grid, visible, layers["drivable"], layers["lanes"], obstacles,
                    min(stop_signs) if stop_signs else None)
