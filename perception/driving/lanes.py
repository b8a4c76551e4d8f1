"""Lane boundaries on the road: image polylines to metres, and the lane the car is in.

`perception.lane_lines` fits the boundaries in image pixels; with a camera, each point below
the horizon maps to the flat road (`CameraModel.pixel_to_ground`), in the vehicle frame (x
forward, y left, metres). Points farther than `MAX_RANGE_M` are dropped: a pixel there spans
metres of road, and a small pitch error moves them most.

The ego lane is measured at `LOOKAHEAD_M` ahead of the camera, or where both ego boundaries
are first seen if the lane mask misses the nearest road (up to `MAX_LOOKAHEAD_M`): its width
between the two boundaries and the car's offset from its centre. Widths outside
`LANE_WIDTH_M` are not a lane (a boundary from the next lane, or a wrong camera): no ego lane.
"""

from __future__ import annotations

import numpy as np

from perception.driving.camera import CameraModel
from perception.results import EgoLane, LaneBoundary

MAX_RANGE_M = 60.0  # forward, from the camera
LOOKAHEAD_M = 8.0  # ahead of the camera: near enough to be the car's lane, far enough to see
MAX_LOOKAHEAD_M = 20.0
LANE_WIDTH_M = (2.0, 5.5)  # narrow city lanes to wide highway lanes with a shoulder


def lanes_on_ground(boundaries: list[LaneBoundary], camera: CameraModel
                    ) -> tuple[list[LaneBoundary], EgoLane | None]:
    """The boundaries with `ground_points` added, and the ego lane (None where either ego
    boundary is missing or the width is not a lane's). The camera must be at the frame's
    size (the boundaries' pixels)."""
    placed = [boundary.model_copy(update={"ground_points": ground_points(boundary, camera)})
              for boundary in boundaries]
    return placed, ego_lane(placed, camera)


def ground_points(boundary: LaneBoundary, camera: CameraModel) -> list[tuple[float, float]]:
    """[x, y] metres of the boundary's image points that lie on the road within range."""
    if not boundary.image_points:
        return []
    ground, below = camera.pixel_to_ground(np.array(boundary.image_points))
    ahead = ground[:, 0] - camera.mount.x
    keep = below & (ahead > 0) & (ahead <= MAX_RANGE_M)
    return [(round(float(x), 3), round(float(y), 3)) for x, y in ground[keep]]


def ego_lane(boundaries: list[LaneBoundary], camera: CameraModel) -> EgoLane | None:
    """The lane between the `ego_left` and `ego_right` boundaries (their `ground_points` set),
    or None where it cannot be measured or its width is not a lane's."""
    lane = measure_ego_lane(boundaries, camera)
    if lane is None or not LANE_WIDTH_M[0] <= lane.width_m <= LANE_WIDTH_M[1]:
        return None
    return lane


def measure_ego_lane(boundaries: list[LaneBoundary], camera: CameraModel) -> EgoLane | None:
    """The ego lane whatever its width; None where an ego boundary is missing or the two are
    not seen together within `MAX_LOOKAHEAD_M`. (Calibration scales the camera height with
    it, where an implausible width is the point.)"""
    sides = {b.position: np.array(b.ground_points or [], np.float64).reshape(-1, 2)
             for b in boundaries if b.position != "other"}
    if len(sides) < 2 or min(len(points) for points in sides.values()) < 2:
        return None
    left, right = sides["ego_left"], sides["ego_right"]
    at = max(camera.mount.x + LOOKAHEAD_M, left[:, 0].min(), right[:, 0].min())
    if at > min(left[:, 0].max(), right[:, 0].max()) or at > camera.mount.x + MAX_LOOKAHEAD_M:
        return None
    y_left, y_right = _lateral_at(left, at), _lateral_at(right, at)
    return EgoLane(width_m=round(y_left - y_right, 3), offset_m=round(-(y_left + y_right) / 2, 3))


def _lateral_at(points: np.ndarray, x: float) -> float:
    order = np.argsort(points[:, 0])
    return float(np.interp(x, points[order, 0], points[order, 1]))
