"""A synthetic road seen through a camera: the masks and boxes perception would report.

The road lives in a world raster (0.05 m cells, drawn with OpenCV: the drivable strip, the lane
lines, stopped cars). A camera on a car at some pose looks at it: every image pixel below the
horizon is cast onto the road and looked up in the raster, which gives the drivable and lane
masks of a perfect segmenter; cars become detection boxes by projecting their 3-D corners.
Used by the planning cases and the closed-loop runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from perception.driving.bev import BevGrid
from perception.driving.camera import CameraModel, Mount
from perception.results import Detection, FrameResult

CELL_M = 0.05
SIM_CAMERA = CameraModel(640, 360, np.array([[500.0, 0, 320], [0, 500.0, 180], [0, 0, 1]]),
                         np.zeros(5), Mount(x=1.5, y=0.0, z=1.4, roll=0.0, pitch=5.0, yaw=0.0))


@dataclass
class Car:
    x: float  # world position of its rear-edge centre
    y: float
    yaw: float = 0.0
    length: float = 4.5
    width: float = 1.8
    height: float = 1.5

    def corners(self) -> np.ndarray:
        """(8, 3) world corners."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        pts = []
        for along in (0.0, self.length):
            for across in (-self.width / 2, self.width / 2):
                for z in (0.0, self.height):
                    pts.append([self.x + along * c - across * s,
                                self.y + along * s + across * c, z])
        return np.array(pts)


@dataclass
class Road:
    centre: np.ndarray  # (M, 2) world polyline of the ego lane's centre, dense
    lane_width: float = 3.6
    lanes_left: int = 0  # extra lanes left of the ego lane
    lanes_right: int = 0
    cars: list[Car] = field(default_factory=list)
    drivable: np.ndarray = field(init=False)
    lanes: np.ndarray = field(init=False)
    origin: np.ndarray = field(init=False)  # world x, y of raster cell (0, 0)

    def __post_init__(self) -> None:
        pad = 15.0
        self.origin = self.centre.min(axis=0) - pad
        size = np.ceil((self.centre.max(axis=0) + pad - self.origin) / CELL_M).astype(int)
        self.drivable = np.zeros((size[1], size[0]), np.uint8)
        self.lanes = np.zeros_like(self.drivable)
        normal = self.normals()
        w = self.lane_width
        left_edge, right_edge = w / 2 + self.lanes_left * w, -(w / 2 + self.lanes_right * w)
        strip = np.vstack([self.centre + normal * left_edge,
                           (self.centre + normal * right_edge)[::-1]])
        cv2.fillPoly(self.drivable, [self.to_raster(strip)], 1)
        for k in range(-self.lanes_right, self.lanes_left + 2):
            offset = -w / 2 + k * w
            line = self.to_raster(self.centre + normal * offset)
            cv2.polylines(self.lanes, [line], False, 1, max(1, int(0.15 / CELL_M)))
        for car in self.cars:
            footprint = car.corners()[::2, :2][[0, 1, 3, 2]]
            cv2.fillPoly(self.drivable, [self.to_raster(footprint)], 0)

    def normals(self) -> np.ndarray:
        tangent = np.gradient(self.centre, axis=0)
        tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
        return np.column_stack([-tangent[:, 1], tangent[:, 0]])  # left of travel

    def to_raster(self, points: np.ndarray) -> np.ndarray:
        return np.round((points - self.origin) / CELL_M).astype(np.int32)

    def lookup(self, layer: np.ndarray, points: np.ndarray) -> np.ndarray:
        idx = np.floor((points - self.origin) / CELL_M).astype(np.int64)
        inside = ((idx[:, 0] >= 0) & (idx[:, 0] < layer.shape[1]) & (idx[:, 1] >= 0)
                  & (idx[:, 1] < layer.shape[0]))
        out = np.zeros(len(points), np.uint8)
        out[inside] = layer[idx[inside, 1], idx[inside, 0]]
        return out

    def cross_track(self, x: float, y: float) -> tuple[float, float]:
        """Signed distance (left +) from the ego-lane centre, and arc length there."""
        d = np.hypot(self.centre[:, 0] - x, self.centre[:, 1] - y)
        i = int(np.argmin(d))
        n = self.normals()[i]
        seg = np.hypot(*np.diff(self.centre, axis=0).T)
        return float(np.dot([x, y] - self.centre[i], n)), float(seg[:i].sum())


def straight_centre(length: float = 200.0, start: float = -20.0) -> np.ndarray:
    x = np.arange(start, length, 0.25)
    return np.column_stack([x, np.zeros_like(x)])


def arc_centre(radius: float, length: float = 120.0, lead_in: float = 0.0) -> np.ndarray:
    """Straight lead-in from x = -20, then a circle bending left (radius > 0) or right (< 0)."""
    straight = straight_centre(lead_in, -20.0)
    s = np.arange(0.0, length, 0.25)
    angle = s / radius
    arc = np.column_stack([lead_in + radius * np.sin(angle), radius * (1 - np.cos(angle))])
    return np.vstack([straight, arc])


def s_curve_centre(radius: float = 60.0, turn_m: float = 50.0) -> np.ndarray:
    """Straight 30 m, left turn of length turn_m, right turn of the same, straight 60 m."""
    ds = 0.25
    curvature = np.concatenate([np.zeros(int(50 / ds)), np.full(int(turn_m / ds), 1 / radius),
                                np.full(int(turn_m / ds), -1 / radius), np.zeros(int(60 / ds))])
    heading = np.cumsum(curvature) * ds
    points = np.cumsum(np.column_stack([np.cos(heading), np.sin(heading)]) * ds, axis=0)
    return points + [-20.0, 0.0]


class RoadCamera:
    """Renders what a perfect perception would report for a camera at a pose on a road."""

    def __init__(self, road: Road, camera: CameraModel = SIM_CAMERA, max_range: float = 80.0,
                 mask_scale: float = 0.5):
        """Masks come at `mask_scale` of the frame size, like a segmentation model's output."""
        self.road, self.camera = road, camera
        self.mask_shape = (round(camera.height * mask_scale), round(camera.width * mask_scale))
        v, u = np.mgrid[0:self.mask_shape[0], 0:self.mask_shape[1]]
        pixels = (np.column_stack([u.ravel(), v.ravel()]) + 0.5) / mask_scale - 0.5
        ground, below = camera.pixel_to_ground(pixels)
        below &= np.hypot(ground[:, 0], ground[:, 1]) < max_range
        self.ground, self.below = np.nan_to_num(ground), below

    def observe(self, x: float, y: float, yaw: float, timestamp: float,
                index: int = 0) -> FrameResult:
        c, s = math.cos(yaw), math.sin(yaw)
        world = self.ground @ np.array([[c, s], [-s, c]]) + [x, y]
        shape = (self.camera.height, self.camera.width)
        drivable = (self.road.lookup(self.road.drivable, world) & self.below).reshape(
            self.mask_shape)
        lanes = (self.road.lookup(self.road.lanes, world) & self.below).reshape(self.mask_shape)
        scale = self.mask_shape[0] / shape[0]
        detections = []
        for car in self.road.cars:
            corners = car.corners() - [x, y, 0.0]
            local = np.column_stack([corners[:, 0] * c + corners[:, 1] * s,
                                     -corners[:, 0] * s + corners[:, 1] * c, corners[:, 2]])
            pixels, in_front = self.camera.project(local)
            if not in_front.all():
                continue
            x1, y1 = np.clip(pixels.min(axis=0), 0, [shape[1] - 1, shape[0] - 1])
            x2, y2 = np.clip(pixels.max(axis=0), 0, [shape[1] - 1, shape[0] - 1])
            if x2 - x1 < 2 or y2 - y1 < 2:
                continue
            hidden = (slice(int(y1 * scale), int(y2 * scale) + 1),
                      slice(int(x1 * scale), int(x2 * scale) + 1))
            drivable[hidden] = 0  # the car hides the road
            lanes[hidden] = 0
            detections.append(Detection(class_id=2, label="car", score=0.9,
                                        box=(float(x1), float(y1), float(x2), float(y2)),
                                        category="car"))
        result = FrameResult(frame_index=index, source="synthetic", timestamp=timestamp,
                             width=shape[1], height=shape[0], detections=detections)
        result.drivable, result.lanes = drivable, lanes
        return result


def ground_homography(camera: CameraModel) -> np.ndarray:
    """3x3 H with pixel ~ H @ [x, y, 1] for road points, ignoring lens distortion."""
    m = camera.mount
    return camera.K @ camera.rotation.T @ np.array([[1.0, 0.0, -m.x],
                                                     [0.0, 1.0, -m.y],
                                                     [0.0, 0.0, -m.z]])


def homography_to_ground(grid: BevGrid) -> np.ndarray:
    """3x3 A with [x, y, 1] = A @ [u, v, 1] for the grid's picture coordinates (u col, v row)."""
    r = grid.metres_per_pixel
    return np.array([[0.0, -r, grid.x_max - 0.5 * r],
                     [-r, 0.0, grid.y_max - 0.5 * r],
                     [0.0, 0.0, 1.0]])
