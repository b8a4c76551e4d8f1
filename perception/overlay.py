"""A result drawn on its frame: drivable area tinted green, lane lines red, boxes with labels.

Used for the overlay image topic of replay MCAPs and for `perception replay --video`.
"""

from __future__ import annotations

import cv2
import numpy as np

from perception.results import FrameResult

DRIVABLE_BGR = (0, 200, 0)
LANES_BGR = (0, 0, 255)
BOX_BGR = (255, 160, 0)


def draw_masks(image: np.ndarray, result: FrameResult) -> np.ndarray:
    """A copy of `image` with the drivable area tinted and the lane lines painted."""
    canvas = image.copy()
    drivable = result.mask_at_frame_size("drivable")
    if drivable is not None:
        tinted = cv2.addWeighted(image, 0.6, np.full_like(image, DRIVABLE_BGR), 0.4, 0)
        cv2.copyTo(tinted, drivable, canvas)
    lanes = result.mask_at_frame_size("lanes")
    if lanes is not None:
        cv2.copyTo(np.full_like(image, LANES_BGR), lanes, canvas)
    return canvas


def draw_result(image: np.ndarray, result: FrameResult) -> np.ndarray:
    """Masks, then a box and a 'label score' caption per detection."""
    canvas = draw_masks(image, result)
    for detection in result.detections:
        x1, y1, x2, y2 = (int(round(v)) for v in detection.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), BOX_BGR, 2)
        cv2.putText(canvas, f"{detection.label} {detection.score:.2f}", (x1, max(12, y1 - 4)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, BOX_BGR, 1, cv2.LINE_AA)
    return canvas
