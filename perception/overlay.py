"""Drawing a result on its frame: tinted drivable area, lane pixels, labelled boxes.

Used for `perception run --out` (images or video) and anywhere a person looks at results.
Colours are BGR. The planning work adds its path on top with its own function.
"""

from __future__ import annotations

import cv2
import numpy as np

from perception.results import Detection, FrameResult

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
