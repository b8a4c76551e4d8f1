"""The result of perceiving one frame; these pydantic models are also the API schema.

Masks stay numpy arrays at the segmentation model's resolution inside `FrameResult` (cheap to
produce); they are resized to frame size or encoded (PNG base64, run-length; at the model's
resolution unless asked for at frame size) only when a caller asks, with `mask_at_frame_size()`
or `encode_masks()`.
"""

from __future__ import annotations

import base64
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

# Masks as PNG: 1 bit a pixel, zlib level 1 (as fast as any level here, and a third smaller
# than OpenCV's default).
PNG_MASK = [cv2.IMWRITE_PNG_BILEVEL, 1, cv2.IMWRITE_PNG_COMPRESSION, 1]


class Detection(BaseModel):
    class_id: int = Field(description="Index in the model's class list (COCO-80 for the zoo)")
    label: str = Field(description="Class name")
    score: float = Field(ge=0.0, le=1.0)
    box: tuple[float, float, float, float] = Field(
        description="x1, y1, x2, y2 in original frame pixels")
    category: str | None = Field(
        default=None,
        description="Road-user view: car, truck, bus, motorcycle, bicycle, person, "
                    "traffic_light, stop_sign; null for other classes")
    distance_m: float | None = Field(
        default=None,
        description="Forward distance in metres from the camera to where the road user meets "
                    "the road (its nearest face); set when a camera is known (a plan is made)")
    distance_source: Literal["ground", "size", "both"] | None = Field(
        default=None,
        description="Which estimate gave distance_m: the box bottom on the ground plane, the "
                    "class's typical size, or both agreeing (see docs/planning.md)")
    in_path: bool | None = Field(
        default=None, description="Whether it stands in the ego corridor; set when a plan is made")


class EncodedMask(BaseModel):
    """A binary mask of `width` x `height` pixels, covering the whole frame of `frame_width` x
    `frame_height`: PNG (one channel, 0/255) base64, or row-major run-lengths. By default it is
    at the segmentation model's resolution: to overlay it, stretch it over the frame (nearest
    neighbour, as `FrameResult.mask_at_frame_size` does); asked for at frame size, the two
    sizes are the same."""

    encoding: Literal["png", "rle"]
    width: int = Field(description="The mask's own width in pixels (the model's resolution, "
                                   "or the frame's when asked for at frame size)")
    height: int = Field(description="The mask's own height in pixels")
    frame_width: int = Field(description="Width of the frame the mask covers: scale the "
                                         "mask by frame_width / width")
    frame_height: int = Field(description="Height of the frame the mask covers")
    data: str | None = Field(default=None, description="PNG bytes, base64 (encoding=png)")
    counts: list[int] | None = Field(
        default=None,
        description="Alternating run lengths over the row-major flattened mask, starting "
                    "with a run of 0s (encoding=rle)")


class Masks(BaseModel):
    drivable: EncodedMask | None = None
    lanes: EncodedMask | None = None


class LaneBoundary(BaseModel):
    """One lane line fitted as a polyline, near to far."""

    position: Literal["ego_left", "ego_right", "other"]
    image_points: list[tuple[float, float]] = Field(description="[[u, v], ...] frame pixels")
    ground_points: list[tuple[float, float]] | None = Field(
        default=None,
        description="[[x, y], ...] metres in the vehicle frame (x forward, y left); with a camera")


class EgoLane(BaseModel):
    """The lane the car is in, from its two fitted boundaries near the car (with a camera)."""

    width_m: float = Field(description="Between the ego-left and ego-right boundaries")
    offset_m: float = Field(description="The car's distance left (+) of the lane's centre")


class CameraCheck(BaseModel):
    """Does the camera file fit the frames? The horizon seen in the lane lines and the drivable
    area's edges, compared with the horizon the camera file implies."""

    status: Literal["ok", "mismatch", "unknown"]
    pitch_error_deg: float | None = Field(
        default=None, description="Estimated minus configured pitch, degrees (> 0: the camera "
                                  "looks further down than its file says)")
    horizon_row: float | None = Field(default=None, description="Estimated horizon row, pixels")
    expected_row: float | None = Field(default=None, description="The camera file's horizon row")


class Control(BaseModel):
    """Actuator commands in CARLA's `VehicleControl` ranges."""

    steer: float = Field(ge=-1.0, le=1.0, description="-1 full left ... 1 full right")
    throttle: float = Field(ge=0.0, le=1.0)
    brake: float = Field(ge=0.0, le=1.0)


class PlanObstacle(BaseModel):
    x: float = Field(description="Metres ahead of the vehicle reference point (vehicle frame)")
    y: float = Field(description="Metres to the left (vehicle frame)")
    width: float = Field(description="Metres across")
    label: str


class Plan(BaseModel):
    """The planner's answer for one frame (perception/driving/); vehicle frame, metres."""

    status: Literal["ok", "degraded", "safe_stop"]
    reasons: list[str] = Field(default_factory=list,
                               description="Why the status is not ok, and why the car slows")
    waypoints: list[tuple[float, float]] = Field(
        default_factory=list, description="[x, y] metres, x forward, y left; empty on safe_stop")
    target_speed_mps: float = Field(ge=0.0)
    control: Control
    obstacles: list[PlanObstacle] = Field(default_factory=list)
    image_path: list[tuple[float, float]] = Field(
        default_factory=list,
        description="The waypoints in front of the camera, projected to [u, v] frame pixels")


class FrameResult(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    frame_index: int
    source: str
    timestamp: float
    width: int
    height: int
    detections: list[Detection] = Field(default_factory=list)
    timings_ms: dict[str, float] = Field(
        default_factory=dict, description="Milliseconds per stage, keyed model/stage, and total")
    models: list[str] = Field(default_factory=list)
    masks: Masks | None = None
    plan: Plan | None = None
    lane_boundaries: list[LaneBoundary] = Field(default_factory=list)
    ego_lane: EgoLane | None = None
    camera_check: CameraCheck | None = None
    # Runtime-only: uint8 0/1 masks at the segmentation model's resolution.
    drivable: SkipJsonSchema[np.ndarray | None] = Field(default=None, exclude=True, repr=False)
    lanes: SkipJsonSchema[np.ndarray | None] = Field(default=None, exclude=True, repr=False)

    def mask_at_frame_size(self, which: Literal["drivable", "lanes"]) -> np.ndarray | None:
        """uint8 0/1 mask resized (nearest) to the frame's width and height."""
        mask = getattr(self, which)
        if mask is None:
            return None
        if mask.shape[:2] == (self.height, self.width):
            return mask
        return cv2.resize(mask, (self.width, self.height), interpolation=cv2.INTER_NEAREST)

    def encode_masks(self, encoding: Literal["png", "rle"] = "png",
                     size: Literal["model", "frame"] = "model") -> Masks:
        """The masks encoded for an answer: at the model's resolution (cheap: the client
        stretches them over the frame) or resized to the frame's size."""
        return Masks(drivable=self._encode("drivable", encoding, size),
                     lanes=self._encode("lanes", encoding, size))

    def _encode(self, which: Literal["drivable", "lanes"], encoding: str, size: str
                ) -> EncodedMask | None:
        mask = self.mask_at_frame_size(which) if size == "frame" else getattr(self, which)
        if mask is None:
            return None
        height, width = mask.shape[:2]
        sizes = {"width": width, "height": height, "frame_width": self.width,
                 "frame_height": self.height}
        if encoding == "png":  # 1 bit a pixel, ~0.2 ms at 640x360; decodes as 0/255
            ok, png = cv2.imencode(".png", mask * 255, PNG_MASK)
            assert ok
            return EncodedMask(encoding="png", data=base64.b64encode(png.tobytes()).decode(),
                               **sizes)
        return EncodedMask(encoding="rle", counts=run_lengths(mask), **sizes)


def run_lengths(mask: np.ndarray) -> list[int]:
    """Run lengths of a binary mask, row-major, starting with the count of leading zeros."""
    flat = (mask.reshape(-1) > 0).astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts.insert(0, 0)
    return counts
