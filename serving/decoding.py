"""Request bytes to the pixels the models need, and the models' answer back to frame pixels.

A JPEG larger than the models' input is decoded at 1/2, 1/4 or 1/8 scale by the JPEG decoder
itself (OpenCV's IMREAD_REDUCED_COLOR_n, which scales in the DCT domain): less memory and time
(a 1280x720 frame for a 512x288 model decodes at 640x360 in about a third of the time), and
nothing the models would see, since the reduced frame still has at least their input's pixels
on each side and they shrink it further anyway (on the BDD100K frames, the default model's
drivable area scores the same IoU against the labels either way). The models then work on the
reduced frame, so their boxes and lane lines are scaled back to the frame's own pixels; masks
stay at the models' resolution, as for any frame. Other formats (OpenCV would decode them
fully, then resize) and smaller JPEGs decode as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from perception.frames import SourceError, decode_image
from perception.modelspec import ModelSpec
from perception.results import FrameResult

REDUCED_DECODE = {8: cv2.IMREAD_REDUCED_COLOR_8, 4: cv2.IMREAD_REDUCED_COLOR_4,
                  2: cv2.IMREAD_REDUCED_COLOR_2}


@dataclass
class Decoded:
    """Pixels for the models, and the size of the frame they stand for."""

    image: np.ndarray  # BGR uint8, possibly reduced
    width: int  # the frame's own size, in which answers are given
    height: int


def reduction(width: int, height: int, specs: list[ModelSpec]) -> int:
    """The JPEG scale-down (1, 2, 4 or 8) for a frame of this size and these models."""
    if not specs:
        return 1
    need_w = max(spec.input.width for spec in specs)  # the models shrink, never enlarge
    need_h = max(spec.input.height for spec in specs)
    for factor in REDUCED_DECODE:  # largest first
        if math.ceil(width / factor) >= need_w and math.ceil(height / factor) >= need_h:
            return factor
    return 1


def decode(data: bytes, width: int, height: int, factor: int, max_pixels: int) -> Decoded:
    """Decode bytes whose header said `width` x `height`, reduced by `factor` if a JPEG."""
    if factor == 1 or data[:2] != b"\xff\xd8":
        image = decode_image(data, max_pixels=max_pixels)
        return Decoded(image, image.shape[1], image.shape[0])
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), REDUCED_DECODE[factor])
    except cv2.error:  # OpenCV's own size limit, a backstop
        image = None
    if image is None:
        raise SourceError("image could not be decoded as an image (truncated or corrupt)")
    # The decoder turns the image upright from its EXIF orientation, as a full decode does:
    # a quarter turn swaps the frame's sides.
    upright = image.shape[:2] == (math.ceil(height / factor), math.ceil(width / factor))
    return Decoded(image, *((width, height) if upright else (height, width)))


def to_frame_pixels(result: FrameResult, decoded: Decoded) -> FrameResult:
    """The models' result on a reduced frame, in the frame's own pixels."""
    if (result.width, result.height) == (decoded.width, decoded.height):
        return result
    sx, sy = decoded.width / result.width, decoded.height / result.height
    detections = [d.model_copy(update={"box": (d.box[0] * sx, d.box[1] * sy, d.box[2] * sx,
                                               d.box[3] * sy)})
                  for d in result.detections]
    lanes = [b.model_copy(update={"image_points": [(u * sx, v * sy) for u, v in b.image_points]})
             for b in result.lane_boundaries]
    return result.model_copy(update={"width": decoded.width, "height": decoded.height,
                                     "detections": detections, "lane_boundaries": lanes})
