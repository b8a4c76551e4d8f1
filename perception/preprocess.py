"""Frames to model input tensors, driven by a model's `InputSpec`.

Resizing happens on uint8 pixels (cheap), then one `cv2.dnn.blobFromImages` call does colour
order, scale, mean and the HWC -> NCHW float32 layout for the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from perception.modelspec import InputSpec

INTERPOLATION = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "nearest": cv2.INTER_NEAREST}


@dataclass(frozen=True)
class Placement:
    """Where a frame landed in the model input: input = frame * scale + pad, per axis."""

    scale_x: float
    scale_y: float
    pad_x: float = 0.0
    pad_y: float = 0.0

    def boxes_to_frame(self, boxes: np.ndarray) -> np.ndarray:
        """Map (N, 4) x1, y1, x2, y2 boxes from input pixels back to frame pixels."""
        offset = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], np.float32)
        scale = np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y], np.float32)
        return (boxes - offset) / scale


def fit(image: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, Placement]:
    """Resize (stretch) or letterbox one BGR uint8 image to the spec's input size."""
    height, width = image.shape[:2]
    interpolation = INTERPOLATION[spec.interpolation]
    if spec.resize == "stretch":
        resized = cv2.resize(image, (spec.width, spec.height), interpolation=interpolation)
        return resized, Placement(spec.width / width, spec.height / height)
    ratio = min(spec.width / width, spec.height / height)
    # Truncation, as YOLOX does; at least one pixel, so that a thin strip (1x10000) still fits.
    new_w, new_h = max(1, int(width * ratio)), max(1, int(height * ratio))
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    canvas = np.full((spec.height, spec.width, 3), spec.pad_value, np.uint8)
    if spec.letterbox_anchor == "center":
        left, top = (spec.width - new_w) // 2, (spec.height - new_h) // 2
    else:
        left, top = 0, 0
    canvas[top:top + new_h, left:left + new_w] = resized
    return canvas, Placement(ratio, ratio, float(left), float(top))


def to_blob(images: list[np.ndarray], spec: InputSpec) -> np.ndarray:
    """Same-size BGR uint8 images -> contiguous NCHW float32 batch: (px * scale - mean) / std."""
    mean = tuple(m / spec.scale for m in spec.mean) if spec.scale else spec.mean
    blob = cv2.dnn.blobFromImages(images, scalefactor=spec.scale, mean=mean,
                                  swapRB=spec.color == "rgb", crop=False)
    if spec.std != (1.0, 1.0, 1.0):
        blob /= np.asarray(spec.std, np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray(blob, dtype=np.float32)


def preprocess(images: list[np.ndarray], spec: InputSpec) -> tuple[np.ndarray, list[Placement]]:
    fitted = [fit(image, spec) for image in images]
    return to_blob([f[0] for f in fitted], spec), [f[1] for f in fitted]
