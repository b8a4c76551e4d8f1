"""Pictures for people: a result drawn on its frame (tinted drivable area, lane pixels, the
fitted lane boundaries, boxes labelled with score and distance, road users in the ego path
marked), the planned path on the camera image, and the bird's-eye view as a picture.

Used for `perception run --out` and `--save-bev`, replay's video, the Foxglove overlay and the
service's `bev` output. Colours are BGR. Nothing here decides anything: the numbers come from
perception (results.py) and planning (driving/).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from perception.driving.bev import BirdsEye
from perception.driving.camera import CameraModel, fit_to_frame
from perception.results import Detection, FrameResult, LaneBoundary, Plan

DRIVABLE_COLOUR = (0, 200, 0)
LANE_COLOUR = (0, 0, 255)
CATEGORY_COLOURS = {"car": (255, 160, 0), "truck": (255, 90, 0), "bus": (255, 40, 120),
                    "motorcycle": (200, 0, 200), "bicycle": (200, 0, 200),
                    "person": (0, 220, 255), "traffic_light": (0, 255, 255),
                    "stop_sign": (60, 60, 255)}
OTHER_COLOUR = (180, 180, 180)
IN_PATH_COLOUR = (0, 40, 255)  # a road user in the ego corridor: red-orange, thick box
EGO_BOUNDARY_COLOUR = (255, 255, 0)  # the ego lane's left and right lines: cyan
OTHER_BOUNDARY_COLOUR = (230, 230, 230)  # the other lanes' lines: thin, near white
TEXT_COLOUR = (0, 0, 0)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def line_width(image_width: int) -> int:
    """Box and lane-line thickness in pixels: 2 up to 1280 px wide frames, more above."""
    return max(2, round(image_width / 640))


def font_scale(image_width: int) -> float:
    """About 15 px tall capitals at 960 px wide, 20 px at 1280; never below 0.5."""
    return max(0.5, image_width / 1600)


def distance_text(distance_m: float) -> str:
    """12.3 m; whole metres from 100 m (a tenth of a metre says nothing that far)."""
    return f"{distance_m:.1f} m" if distance_m < 100 else f"{distance_m:.0f} m"


def detection_text(detection: Detection) -> str:
    """'car 0.87', with the distance when known: 'car 0.87 12.3 m'."""
    text = f"{detection.label} {detection.score:.2f}"
    if detection.distance_m is not None:
        text += f" {distance_text(detection.distance_m)}"
    return text


def draw_result(image: np.ndarray, result: FrameResult, alpha: float = 0.35) -> np.ndarray:
    """A copy of the BGR frame with the result's masks, lane boundaries and detections."""
    canvas = image.copy()
    drivable = result.mask_at_frame_size("drivable")
    if drivable is not None:
        tint(canvas, drivable, DRIVABLE_COLOUR, alpha)
    lanes = result.mask_at_frame_size("lanes")
    if lanes is not None:
        canvas[lanes > 0] = LANE_COLOUR
    width = line_width(canvas.shape[1])
    for boundary in sorted(result.lane_boundaries, key=lambda b: b.position != "other"):
        draw_polyline(canvas, boundary.image_points, *boundary_style(boundary.position, width))
    for detection in sorted(result.detections, key=lambda d: bool(d.in_path)):  # in path on top
        draw_detection(canvas, detection)
    return canvas


def boundary_style(position: str, width: int) -> tuple[tuple[int, int, int], int]:
    """(colour, thickness): the ego lane's lines bold and cyan, other lanes' thin and white."""
    if position == "other":
        return OTHER_BOUNDARY_COLOUR, width
    return EGO_BOUNDARY_COLOUR, 2 * width


def draw_polyline(canvas: np.ndarray, points: Sequence[tuple[float, float]],
                  colour: tuple[int, int, int], thickness: int) -> None:
    if len(points) >= 2:
        pixels = np.asarray(points, np.float64).round().astype(np.int32)
        cv2.polylines(canvas, [pixels], False, colour, thickness, cv2.LINE_AA)


def tint(canvas: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int],
         alpha: float) -> None:
    """Blend `colour` into the pixels where `mask` is set, in place."""
    region = mask > 0
    pixels = canvas[region].astype(np.float32)
    canvas[region] = (pixels * (1 - alpha) + np.float32(colour) * alpha).astype(np.uint8)


def draw_detection(canvas: np.ndarray, detection: Detection) -> None:
    """The box in its category's colour (a road user in the ego path: thicker, red-orange),
    and a filled label above it: 'car 0.87 12.3 m'."""
    thickness = line_width(canvas.shape[1])
    colour = CATEGORY_COLOURS.get(detection.category or "", OTHER_COLOUR)
    if detection.in_path:
        colour, thickness = IN_PATH_COLOUR, 2 * thickness
    x1, y1, x2, y2 = (int(round(v)) for v in detection.box)
    cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
    scale = font_scale(canvas.shape[1])
    weight = max(1, round(scale * 1.5))
    text = detection_text(detection)
    (width, height), baseline = cv2.getTextSize(text, FONT, scale, weight)
    top = max(y1 - height - baseline - 4, 0)
    left = min(max(x1, 0), max(canvas.shape[1] - width - 6, 0))  # keep the label in the frame
    cv2.rectangle(canvas, (left, top), (left + width + 6, top + height + baseline + 4), colour,
                  -1)
    cv2.putText(canvas, text, (left + 3, top + height + 2), FONT, scale, TEXT_COLOUR, weight,
                cv2.LINE_AA)


# --- the bird's-eye view and the planned path -----------------------------------------------

COLOURS = {"unknown": (40, 40, 40), "road": (70, 70, 70), "drivable": (60, 140, 60),
           "lanes": (0, 220, 255), "obstacle": (40, 40, 230), "path": (255, 0, 255),
           "grid": (110, 110, 110), "ego": (255, 255, 255)}


def render_bev(bev: BirdsEye, plan: Plan | None = None, scale: int = 2,
               lane_boundaries: Sequence[LaneBoundary] = ()) -> np.ndarray:
    """BGR picture: unknown dark, seen road grey, drivable green, lane pixels yellow, the
    fitted lane boundaries that have ground points (ego lane cyan, others thin white),
    obstacles red with their x written beside them (metres ahead of the vehicle origin, as
    the grid counts; the camera sits at mount x), the chosen path magenta, a
    metre grid every 5 m (labels every 10 m), the ego car at the bottom."""
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
    for boundary in sorted(lane_boundaries, key=lambda b: b.position != "other"):
        if boundary.ground_points:
            points = np.asarray(boundary.ground_points, np.float64)
            pixels = g.to_pixel(points[:, 0], points[:, 1], scale)
            draw_polyline(picture, pixels, *boundary_style(boundary.position, scale))
    corners = [g.to_pixel(np.array([ob.x, ob.x + ob.length]),
                          np.array([ob.y + ob.width / 2, ob.y - ob.width / 2]), scale).astype(int)
               for ob in bev.obstacles]  # (near left, far right) picture corners
    for near_left, far_right in corners:
        cv2.rectangle(picture, tuple(near_left), tuple(far_right), COLOURS["obstacle"], -1)
    for ob, (near_left, far_right) in zip(bev.obstacles, corners, strict=True):  # labels on top
        draw_bev_label(picture, distance_text(ob.x), int(far_right[0]) + 3, int(near_left[1]))
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


def draw_bev_label(picture: np.ndarray, text: str, left: int, bottom: int) -> None:
    """White text on a dark patch with its bottom-left corner at (left, bottom), moved inside
    the picture where it would cross an edge."""
    (width, height), baseline = cv2.getTextSize(text, FONT, 0.4, 1)
    left = min(left, picture.shape[1] - width - 2)
    bottom = min(max(bottom, height + 2), picture.shape[0] - baseline - 1)
    cv2.rectangle(picture, (left - 1, bottom - height - 2), (left + width + 1, bottom + baseline),
                  COLOURS["unknown"], -1)
    cv2.putText(picture, text, (left, bottom), FONT, 0.4, COLOURS["ego"], 1, cv2.LINE_AA)


def draw_path(image: np.ndarray, camera: CameraModel, waypoints: list[tuple[float, float]],
              colour: tuple[int, int, int] = COLOURS["path"], thickness: int = 3) -> np.ndarray:
    """Draw planned waypoints (vehicle frame) on the camera image, in place; returns the image."""
    if len(waypoints) < 2:
        return image
    points = np.asarray(waypoints, np.float64)
    camera = fit_to_frame(camera, image.shape[1], image.shape[0])
    pixels, in_front = camera.ground_to_pixel(points)
    pixels = pixels[in_front]
    if len(pixels) >= 2:
        cv2.polylines(image, [pixels.round().astype(np.int32)], False, colour, thickness,
                      cv2.LINE_AA)
    return image
