"""Sensor data from CARLA's callback thread, matched to the tick that produced it.

CARLA calls a sensor's `listen` callback on its own thread, after `world.tick()` returns, and
with several sensors or a slow network the calls arrive in any order (a late image of the
previous tick can arrive after this tick's). So we never take "the latest image": each callback
files its data under the simulator frame number it carries, and the loop asks for exactly the
frame `world.tick()` returned, waiting a bounded time. Older entries are dropped as stale.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import carla
import numpy as np

from perception.errors import PerceptionError

# A dashcam behind the windscreen: 0.8 m ahead of the car's centre, 1.5 m above the ground,
# looking 5 degrees down (CARLA: x forward, y right, z up; negative pitch looks down).
CAMERA_MOUNT = carla.Transform(carla.Location(x=0.8, y=0.0, z=1.5), carla.Rotation(pitch=-5.0))


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


def _bgra(image: Any) -> np.ndarray:
    """A CARLA camera image's bytes (BGRA, row-major) as a read-only (H, W, 4) view."""
    return np.frombuffer(image.raw_data, dtype=np.uint8).reshape(image.height, image.width, 4)


def image_to_bgr(image: Any) -> np.ndarray:
    """A CARLA camera image as an (H, W, 3) BGR uint8 array."""
    return _bgra(image)[..., :3].copy()


def image_tags(image: Any) -> np.ndarray:
    """Semantic segmentation image -> (H, W) CARLA tags (the red channel of BGRA)."""
    return _bgra(image)[..., 2].copy()


class FrameBuffer:
    """Sensor data keyed by simulator frame; `take(frame)` waits for exactly that frame."""

    def __init__(self) -> None:
        self._items: dict[int, Any] = {}
        self._changed = threading.Condition()
        self._done_up_to = -1  # frames up to this one were taken or given up on
        self.stale = 0  # data discarded because its frame had already been taken or passed

    def put(self, data: Any) -> None:
        """The `listen` callback: file `data` under `data.frame`."""
        with self._changed:
            if data.frame <= self._done_up_to:
                self.stale += 1
                return
            self._items[data.frame] = data
            self._changed.notify_all()

    def take(self, frame: int, timeout: float) -> Any | None:
        """The data of `frame`, waiting up to `timeout` s; None if it does not come.

        Everything older than `frame` is discarded: the loop has moved past it for good.
        """
        with self._changed:
            self._changed.wait_for(lambda: frame in self._items, timeout=timeout)
            data = self._items.pop(frame, None)
            self._done_up_to = max(self._done_up_to, frame)
            for old in [f for f in self._items if f < frame]:
                del self._items[old]
                self.stale += 1
            return data
