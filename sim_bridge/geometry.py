"""A CARLA camera in CARLA's own frames: world -> pixel projection and pixel rays -> the ground.

CARLA cameras are ideal pinholes with no distortion (K: `perception.driving.camera.fov_intrinsics`).
CARLA's frames are Unreal's: x forward, y right, z up
(left-handed), angles in degrees; an image's rows go down and columns go right, so a point
(x, y, z) in the camera's own frame lands at column f*y/x + cx, row -f*z/x + cy.
"""

from __future__ import annotations

from typing import Any

import carla
import numpy as np

from perception.driving.camera import fov_intrinsics


def compose(parent: carla.Transform, local: carla.Transform) -> carla.Transform:
    """World transform of something mounted at `local` on a parent that only yaws (flat road).

    `Transform.transform(point)` of the wheel transforms `point` in place, so it gets a copy.
    """
    local_location = carla.Location(x=local.location.x, y=local.location.y, z=local.location.z)
    location = parent.transform(local_location)
    return carla.Transform(
        carla.Location(x=location.x, y=location.y, z=location.z),
        carla.Rotation(pitch=parent.rotation.pitch + local.rotation.pitch,
                       yaw=parent.rotation.yaw + local.rotation.yaw,
                       roll=parent.rotation.roll + local.rotation.roll))


def box_corners(actor: Any) -> np.ndarray:
    """The 8 world corners (8, 3) of an actor's 3-D bounding box."""
    vertices = actor.bounding_box.get_world_vertices(actor.get_transform())
    return np.array([[p.x, p.y, p.z] for p in vertices])


def project(points_world: np.ndarray, camera: carla.Transform, K: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (N, 2) and depths (N,) of world points (N, 3) seen by a camera at `camera`.

    Depth is the distance along the optical axis; points with depth <= 0 are behind the camera
    and their pixels are meaningless.
    """
    world_to_camera = np.array(camera.get_inverse_matrix())
    homogeneous = np.c_[points_world, np.ones(len(points_world))]
    local = homogeneous @ world_to_camera.T  # x forward, y right, z up
    depth = local[:, 0]
    safe = np.where(depth > 1e-6, depth, 1e-6)
    u = K[0, 0] * local[:, 1] / safe + K[0, 2]
    v = -K[1, 1] * local[:, 2] / safe + K[1, 2]
    return np.stack([u, v], axis=1), depth


def ground_points(width: int, height: int, fov_deg: float, mount: carla.Transform
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Where each pixel's ray meets the ground (z = 0) in the vehicle's frame.

    Returns (points (H, W, 2) as x forward, y right in metres; hit (H, W) bool, False for rays
    at or above the horizon). Computed once per camera; a renderer then only moves the points
    with the vehicle's pose.
    """
    K = fov_intrinsics(width, height, fov_deg)
    columns, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    rays = np.stack([np.ones_like(columns), (columns - K[0, 2]) / K[0, 0],
                     -(rows - K[1, 2]) / K[1, 1]], axis=-1)  # camera frame, x forward
    rotation = np.array(mount.get_matrix())[:3, :3]
    rays = rays @ rotation.T  # vehicle frame
    origin = np.array([mount.location.x, mount.location.y, mount.location.z])
    down = rays[..., 2]
    hit = down < -1e-6
    distance = np.where(hit, -origin[2] / np.where(hit, down, -1.0), 0.0)
    points = origin[:2] + rays[..., :2] * distance[..., None]
    return points, hit
