"""Sensor data from CARLA's callback thread, matched to the tick that produced it.

CARLA calls a sensor's `listen` callback on its own thread, after `world.tick()` returns, and
with several sensors or a slow network the calls arrive in any order (a late image of the
previous tick can arrive after this tick's). So we never take "the latest image": each callback
files its data under the simulator frame number it carries, and the loop asks for exactly the
frame `world.tick()` returned, waiting a bounded time. Older entries are dropped as stale.
"""

from __future__ import annotations

import threading
from typing import Any

import carla
import numpy as np

# A dashcam behind the windscreen: 0.8 m ahead of the car's centre, 1.5 m above the ground,
# looking 5 degrees down (CARLA: x forward, y right, z up; negative pitch looks down).
CAMERA_MOUNT = carla.Transform(carla.Location(x=0.8, y=0.0, z=1.5), carla.Rotation(pitch=-5.0))


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
