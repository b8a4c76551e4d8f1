"""The documented shapes of the HTTP API: response models, examples, the image request body.

The handlers build plain JSON (`Service.render`); these models only describe it in the
OpenAPI document, so the schema and the answers cannot drift apart silently (the fuzz test
checks every answer against the schema).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from perception.results import FrameResult


class ErrorBody(BaseModel):
    error: str = Field(examples=["image could not be decoded as an image (truncated or not "
                                 "JPEG/PNG)"])
    status: int = Field(examples=[400])


class Bev(BaseModel):
    png: str = Field(description="Bird's-eye picture, PNG base64")
    metres_per_pixel: float
    x_range: tuple[float, float] = Field(description="metres, x forward (vehicle frame)")
    y_range: tuple[float, float] = Field(description="metres, y left (vehicle frame)")


class PerceiveResponse(FrameResult):
    """The result schema, plus the bird's-eye picture when `outputs` has `bev`."""

    bev: Bev | None = None


class ModelInfo(BaseModel):
    name: str
    task: str
    classes: list[str]
    input: dict[str, Any]


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


RESPONSE_EXAMPLE = {
    "frame_index": 0, "source": "http", "timestamp": 1763870000.0, "width": 1280, "height": 720,
    "detections": [{"class_id": 2, "label": "car", "score": 0.87,
                    "box": [512.0, 380.5, 640.2, 470.0], "category": "car"}],
    "timings_ms": {"yolox-nano/inference": 18.2, "twinlitenet/inference": 95.1, "total": 120.4},
    "models": ["yolox-nano", "twinlitenet"],
    "masks": {"drivable": {"encoding": "rle", "width": 640, "height": 360, "frame_width": 1280,
                           "frame_height": 720, "data": None,
                           "counts": [115200, 640, 114560]}, "lanes": None},
    "lane_boundaries": [],
    "plan": None, "bev": None,
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` entry documenting these error statuses with the error body."""
    return {code: {"model": ErrorBody} for code in codes}


IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "description": "A JPEG or PNG, as the raw body or as the multipart field `image`.",
        "content": {
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["image"],
                "properties": {"image": {"type": "string", "format": "binary"}}}},
        },
    }
}
