"""A drive log played like a live camera: frames arrive at their recorded times (scaled by a
rate), perception takes the newest, and what it could not take in time is dropped.

Used by `perception replay --rate R`, with the same newest-frame-wins rule as the service's
streams (perception/newest_frame.py). With `rate` None the frames come paced already (a
`Playback` that a viewer drives, playback.py) and are released as they come.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from perception.frames import Frame
from perception.newest_frame import NewestFrame


class Pacer:
    """Delivers frames like a live camera at `rate` x recorded speed: a thread releases each
    frame at its log time; `next()` takes the newest, and a frame replaced before it was taken
    is dropped. A reader error is raised by `next()` once the frames before it were taken."""

    def __init__(self, frames: Iterable[Frame], rate: float | None) -> None:
        self.frames, self.rate = frames, rate
        self._newest: NewestFrame[tuple[Frame, float]] = NewestFrame()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, name="pacer", daemon=True)
        self._thread.start()

    @property
    def arrived(self) -> int:
        return self._newest.arrived

    @property
    def dropped(self) -> int:
        return self._newest.dropped

    def _play(self) -> None:
        error: BaseException | None = None
        try:
            origin: tuple[float, float] | None = None
            for frame in self.frames:
                if origin is None:
                    origin = (time.perf_counter(), frame.timestamp)
                due = origin[0] + (frame.timestamp - origin[1]) / self.rate \
                    if self.rate is not None else 0.0
                if self._stop.wait(max(0.0, due - time.perf_counter())):
                    return
                self._newest.put((frame, time.perf_counter()))
        except BaseException as caught:  # handed to the consumer
            error = caught
        finally:
            self._newest.end(error)

    def next(self) -> tuple[Frame, float] | None:
        """(newest frame, when it arrived), or None at the end of the log."""
        taken = self._newest.take()
        return None if taken is None else taken.item

    def newer_waiting(self) -> bool:
        return self._newest.waiting()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
