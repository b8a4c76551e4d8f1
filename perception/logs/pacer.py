"""A drive log played like a live camera: frames arrive at their recorded times (scaled by a
rate), perception takes the newest, and what it could not take in time is dropped.

Used by `perception replay --rate R`. The same "newest frame wins" rule as the service's
WebSocket stream.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from perception.frames import Frame


class Pacer:
    """Delivers frames like a live camera at `rate` x recorded speed: a thread releases each
    frame at its log time into a one-frame slot; `next()` takes the newest, and a frame
    replaced before it was taken is dropped. A reader error is raised by `next()` once the
    frames before it were taken."""

    def __init__(self, frames: Iterable[Frame], rate: float) -> None:
        self.frames, self.rate = frames, rate
        self.arrived = self.dropped = 0
        self._slot: tuple[Frame, float] | None = None
        self._done = False
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, name="pacer", daemon=True)
        self._thread.start()

    def _play(self) -> None:
        try:
            origin: tuple[float, float] | None = None
            for frame in self.frames:
                if origin is None:
                    origin = (time.perf_counter(), frame.timestamp)
                due = origin[0] + (frame.timestamp - origin[1]) / self.rate
                if self._stop.wait(max(0.0, due - time.perf_counter())):
                    return
                with self._changed:
                    self.dropped += self._slot is not None
                    self._slot = (frame, time.perf_counter())
                    self.arrived += 1
                    self._changed.notify()
        except BaseException as error:  # handed to the consumer
            self._error = error
        finally:
            with self._changed:
                self._done = True
                self._changed.notify()

    def next(self) -> tuple[Frame, float] | None:
        """(newest frame, when it arrived), or None at the end of the log."""
        with self._changed:
            self._changed.wait_for(lambda: self._slot is not None or self._done)
            if self._slot is not None:
                item, self._slot = self._slot, None
                return item
            if self._error is not None:
                raise self._error
            return None

    def newer_waiting(self) -> bool:
        with self._changed:
            return self._slot is not None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
