"""The ego corridor drawn into the image: which road users stand in the car's way.

The corridor is the band the car sweeps along its path (half the car's width plus a margin on
each side), from the bumper to the horizon, projected into the frame; the planner also takes the
band straight ahead, where the car is heading now. A road user is in the
path when the bottom band of its box, below the horizon, overlaps that picture. This needs no
distance at all, so it still holds when the distance estimates are wrong: the planner slows for
such a road user whatever its estimated distance (planning.py, `in_path_limits`).
"""

from __future__ import annotations

import cv2
import numpy as np

from perception.driving.camera import CameraModel

BOTTOM_BAND = 0.15  # the part of a box, by height, that stands on the road


def corridor_mask(camera: CameraModel, path: np.ndarray, half_width_m: float, near_m: float,
                  far_m: float = 1000.0, step_m: float = 1.0) -> np.ndarray:
    """uint8 0/1 frame-size mask of the corridor around `path` ((N, 2) vehicle-frame x, y,
    ordered near to far; empty: straight ahead), continued straight past its end to `far_m`,
    which is as good as the horizon: a road user is judged wherever the camera file puts it."""
    path = np.asarray(path, np.float64).reshape(-1, 2)
    path = path[path[:, 0] >= near_m]
    if len(path) == 0:
        path = np.array([[near_m, 0.0]])
    start = path[0] if path[0, 0] <= near_m + step_m else np.array([near_m, path[0, 1]])
    heading = path[-1] - path[-2] if len(path) >= 2 else np.array([1.0, 0.0])
    heading = heading / max(np.linalg.norm(heading), 1e-9)
    reach = max(far_m - path[-1, 0], 2 * step_m)
    ahead = np.unique(np.concatenate([np.arange(step_m, min(reach, 40.0), step_m),
                                      np.geomspace(min(reach, 40.0), reach, 24)]))
    centre = np.vstack([start, path, path[-1] + np.outer(ahead, heading)])
    tangent = np.gradient(centre, axis=0)
    tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-9)
    normal = np.column_stack([-tangent[:, 1], tangent[:, 0]])  # to the left
    edges = np.vstack([centre + half_width_m * normal, (centre - half_width_m * normal)[::-1]])
    pixels, in_front = camera.ground_to_pixel(edges)
    mask = np.zeros((camera.height, camera.width), np.uint8)
    points = pixels[in_front]
    if len(points) >= 3:
        # fillPoly takes int32; clamp far outside points so they cannot overflow
        bound = 4.0 * max(camera.width, camera.height)
        cv2.fillPoly(mask, [np.clip(np.round(points), -bound, bound).astype(np.int32)], 1)
    return mask


def horizon_row(camera: CameraModel) -> float:
    """The image row of the horizon straight ahead (where the flat road ends), by the camera."""
    far = np.array([[camera.mount.x + 1e4, camera.mount.y]])
    pixels, _ = camera.ground_to_pixel(far)
    return float(pixels[0, 1])


def box_in_corridor(box: tuple[float, float, float, float], corridor: np.ndarray,
                    horizon: float) -> bool:
    """Whether the bottom band of a box, below the horizon, overlaps the corridor."""
    height, width = corridor.shape
    x1, y1, x2, y2 = box
    bottom = min(y2, height - 1.0)
    top = max(bottom - BOTTOM_BAND * max(y2 - y1, 1.0), horizon, 0.0)
    if bottom <= top:
        return False
    u0, u1 = int(np.clip(np.floor(x1), 0, width - 1)), int(np.clip(np.ceil(x2), 0, width - 1))
    v0, v1 = int(np.floor(top)), int(np.ceil(bottom))
    return bool(corridor[v0:v1 + 1, u0:u1 + 1].any())
