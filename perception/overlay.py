"""Pictures for people: a result drawn on its frame (tinted drivable area, lane pixels,
labelled boxes), the planned path on the camera image, and the bird's-eye view as a picture.

Used for `perception run --out` and `--save-bev`, replay's video, the Foxglove overlay and the
service's `bev` output. Colours are BGR. Nothing here decides anything: the numbers come from
perception (results.py) and planning (driving/).
"""

from __future__ import annotations

import cv2
import numpy as np

from perception.driving.bev import BirdsEye
from perception.driving.camera import CameraModel
from perception.results import Detection, FrameResult, Plan

DRIVABLE_COLOUR = (0, 200, 0)
LANE_COLOUR = (0, 0, 255)
CATEGORY_COLOURS = {"car": (255, 160, 0), "truck": (255, 90, 0), "bus": (255, 40, 120),
                    "motorcycle": (200, 0, 200), "bicycle": (200, 0, 200),
                    "person": (0, 220, 255), "traffic_light": (0, 255, 255),
                    "stop_sign": (60, 60, 255)}
OTHER_COLOUR = (180, 180, 180)


def draw_result(image: np.ndarray, result: FrameResult, alpha: float = 0.35) -> np.ndarray:
    """A copy of the BGR frame with the result's masks and detections drawn on it."""
    canvas = image.copy()
    drivable = result.mask_at_frame_size("drivable")
    if drivable is not None:
        tint(canvas, drivable, DRIVABLE_COLOUR, alpha)
    lanes = result.mask_at_frame_size("lanes")
    if lanes is not None:
        canvas[lanes > 0] = LANE_COLOUR
    for detection in result.detections:
        draw_detection(canvas, detection)
    return canvas


def tint(canvas: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int],
         alpha: float) -> None:
    """Blend `colour` into the pixels where `mask` is set, in place."""
    region = mask > 0
    pixels = canvas[region].astype(np.float32)
    canvas[region] = (pixels * (1 - alpha) + np.float32(colour) * alpha).astype(np.uint8)


def draw_detection(canvas: np.ndarray, detection: Detection) -> None:
    colour = CATEGORY_COLOURS.get(detection.category or "", OTHER_COLOUR)
    x1, y1, x2, y2 = (int(round(v)) for v in detection.box)
    cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, 2)
    text = f"{detection.label} {detection.score:.2f}"
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    top = max(y1 - height - baseline - 2, 0)
    cv2.rectangle(canvas, (x1, top), (x1 + width + 4, top + height + baseline + 2), colour, -1)
    cv2.putText(canvas, text, (x1 + 2, top + height + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                (0, 0, 0), 1, cv2.LINE_AA)


# --- the bird's-eye view and the planned path -----------------------------------------------

COLOURS = {"unknown": (40, 40, 40), "road": (70, 70, 70), "drivable": (60, 140, 60),
           "lanes": (0, 220, 255), "obstacle": (40, 40, 230), "path": (255, 0, 255),
           "grid": (110, 110, 110), "ego": (255, 255, 255)}


def render_bev(bev: BirdsEye, plan: Plan | None = None, scale: int = 2) -> np.ndarray:
    """BGR picture: unknown dark, seen road grey, drivable green, lanes yellow, obstacles red,
    the chosen path magenta, a metre grid every 5 m (labels every 10 m), the ego car at the
    bottom."""
    g = bev.grid
    picture = np.empty((g.rows, g.cols, 3), np.uint8)
    picture[:] = COLOURS["unknown"]
    picture[bev.visible > 0] = COLOURS["road"]
    if bev.drivable is not None:
        picture[(bev.drivable > 0) & (bev.visible > 0)] = COLOURS["drivable"]
    if bev.lanes is not None:
        picture[bev.lanes > 0] = COLOURS["lanes"]
    picture = cv2.resize(picture, (g.cols * scale, g.rows * scale),
                         interpolation=cv2.INTER_NEAREST)
    for x in np.arange(np.ceil(g.x_min / 5) * 5, g.x_max + 1e-6, 5.0):
        v = int(g.to_pixel(x, 0.0, scale)[1])
        cv2.line(picture, (0, v), (picture.shape[1], v), COLOURS["grid"], 1)
        if x % 10 == 0:
            cv2.putText(picture, f"{x:.0f} m", (3, v - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                        COLOURS["ego"], 1, cv2.LINE_AA)
    for y in np.arange(np.ceil(g.y_min / 5) * 5, g.y_max + 1e-6, 5.0):
        u = int(g.to_pixel(0.0, y, scale)[0])
        cv2.line(picture, (u, 0), (u, picture.shape[0]), COLOURS["grid"], 1)
    for ob in bev.obstacles:
        corners = g.to_pixel(np.array([ob.x, ob.x + ob.length]),
                             np.array([ob.y + ob.width / 2, ob.y - ob.width / 2]), scale)
        cv2.rectangle(picture, tuple(corners[0].astype(int)), tuple(corners[1].astype(int)),
                      COLOURS["obstacle"], -1)
    if plan is not None and plan.waypoints:
        points = np.array([[0.0, 0.0], *plan.waypoints])
        pixels = g.to_pixel(points[:, 0], points[:, 1], scale).round().astype(np.int32)
        cv2.polylines(picture, [pixels], False, COLOURS["path"], 2, cv2.LINE_AA)
    ego = g.to_pixel(np.array([g.x_min]), np.array([0.0]), scale)[0].astype(int)
    cv2.circle(picture, (int(ego[0]), int(ego[1]) - 4), 4, COLOURS["ego"], -1)
    if plan is not None:
        cv2.putText(picture, f"{plan.status} {plan.target_speed_mps:.1f} m/s", (3, 14),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, COLOURS["ego"], 1, cv2.LINE_AA)
    return picture


def draw_path(image: np.ndarray, camera: CameraModel, waypoints: list[tuple[float, float]],
              colour: tuple[int, int, int] = COLOURS["path"], thickness: int = 3) -> np.ndarray:
    """Draw planned waypoints (vehicle frame) on the camera image, in place; returns the image."""
    if len(waypoints) < 2:
        return image
    points = np.asarray(waypoints, np.float64)
    if image.shape[:2] != (camera.height, camera.width):
        camera = camera.scaled(image.shape[1], image.shape[0])
    pixels, in_front = camera.ground_to_pixel(points)
    pixels = pixels[in_front]
    if len(pixels) >= 2:
        cv2.polylines(image, [pixels.round().astype(np.int32)], False, colour, thickness,
                      cv2.LINE_AA)
    return image
