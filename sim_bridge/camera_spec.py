"""A simulator camera's size and horizontal field of view, as `--camera WxH[,FOV]` gives it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from perception.errors import PerceptionError


@dataclass(frozen=True)
class CameraSpec:
    width: int = 640
    height: int = 360
    fov: float = 90.0

    @classmethod
    def parse(cls, text: str) -> CameraSpec:
        """'WxH,fov' (e.g. '640x360,90'); the field of view is optional."""
        try:
            size, _, fov = text.partition(",")
            width, height = (int(v) for v in size.lower().split("x"))
            spec = cls(width, height, float(fov) if fov else cls.fov)
        except ValueError:
            raise PerceptionError(f"--camera {text!r}: expected WIDTHxHEIGHT[,FOV], "
                                  "e.g. 640x360,90") from None
        if not (16 <= spec.width <= 4096 and 16 <= spec.height <= 4096 and 1 <= spec.fov < 180):
            raise PerceptionError(f"--camera {text!r}: size must be 16..4096 px and field of "
                                  "view 1..179 degrees")
        return spec

    def configure(self, blueprint: Any) -> Any:
        """Set a camera blueprint's size and field of view (RGB or semantic segmentation)."""
        blueprint.set_attribute("image_size_x", str(self.width))
        blueprint.set_attribute("image_size_y", str(self.height))
        blueprint.set_attribute("fov", str(self.fov))
        return blueprint
