"""A replay a viewer drives: play, pause, speed and seek on the log's own clock.

`Playback.frames()` yields a log's frames at `speed` x their recorded pace (or as fast as they
are taken when the speed is None, `--max`), holds while paused, and on a seek opens the log
again at the asked time. `control()` is called from another thread (the Foxglove server's,
foxglove_live.py) and takes effect at once, also in the middle of a wait. The first frame after
a seek (or a loop back to the start) carries `meta["after_seek"]`, so the replay can start its
planner over.

Times are nanoseconds on the frames' clock (their timestamps), as the viewer shows them; the
log is reopened at `(time - timeline.origin_ns)` seconds from its start.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from perception.frames import Frame
from perception.logs.mount import log_time_ns


@dataclass(frozen=True)
class Timeline:
    origin_ns: int  # the log's start (offset 0 for `open_log`) on the frames' clock
    start_ns: int  # the first and last time that can be played
    end_ns: int

    def offset(self, time_ns: int) -> float:
        """Seconds from the log's start to `time_ns`, kept within the playable range."""
        return (min(max(time_ns, self.start_ns), self.end_ns) - self.origin_ns) / 1e9


@dataclass(frozen=True)
class PlaybackState:
    playing: bool
    ended: bool
    speed: float | None  # None: as fast as the frames are taken
    time_ns: int  # the newest frame given out, or where a seek goes
    seeked: bool = False  # this state answers a seek


class Playback:
    def __init__(self, frames: Iterator[Frame], open_at: Callable[[float], Iterator[Frame]],
                 timeline: Timeline, speed: float | None, loop: bool = False) -> None:
        """`frames`: the log from the start of the range; `open_at(seconds)`: the log again
        from that many seconds after its start; `loop`: at the end, start over."""
        self.timeline, self.loop = timeline, loop
        self.on_change: Callable[[PlaybackState], None] | None = None  # e.g. the log ended
        self._frames, self._open_at = frames, open_at
        self._speed = speed
        self._playing, self._ended, self._closed = True, False, False
        self._seek_pending = False
        self._time_ns = timeline.start_ns
        self._clock: tuple[float, int] | None = None  # (wall time, frame time) in step
        self._changed = threading.Condition()

    @property
    def speed(self) -> float | None:
        return self._speed

    def state(self, seeked: bool = False) -> PlaybackState:
        with self._changed:
            return PlaybackState(self._playing, self._ended, self._speed, self._time_ns, seeked)

    def control(self, play: bool, speed: float | None = None,
                seek_ns: int | None = None) -> PlaybackState:
        """Play or pause, at `speed` (kept as None, as fast as possible, when the replay
        started so), and seek to `seek_ns` if given; returns the new state."""
        with self._changed:
            self._playing = play
            if speed is not None and speed > 0 and self._speed is not None:
                self._speed = speed
            if seek_ns is not None:
                self._time_ns = min(max(seek_ns, self.timeline.start_ns), self.timeline.end_ns)
                self._seek_pending = True
                self._ended = False
            self._clock = None  # pace from the next frame on
            self._changed.notify_all()
        return self.state(seeked=seek_ns is not None)

    def close(self) -> None:
        """End `frames()` now, also in the middle of a wait."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def frames(self) -> Iterator[Frame]:
        frames, after_seek = self._frames, False
        while True:
            frame = next(frames, None)
            if frame is None:
                if not self.loop:
                    self._end()
                    return
                start = self.timeline.offset(self.timeline.start_ns)
                frames, after_seek = self._open_at(start), True
                with self._changed:
                    self._clock = None
                continue
            with self._changed:
                outcome = self._wait(log_time_ns(frame.timestamp))
                if outcome == "closed":
                    return
                if outcome == "seek":  # this frame is from before the seek: reopen there
                    frames = self._open_at(self.timeline.offset(self._time_ns))
                    self._seek_pending, self._clock, after_seek = False, None, True
                    continue
                self._time_ns = log_time_ns(frame.timestamp)
            if after_seek:
                frame.meta["after_seek"] = True
                after_seek = False
            yield frame

    def _wait(self, frame_ns: int) -> str:
        """With the lock held: wait while paused and until the frame's time comes at the
        speed. "due", or "seek" when a seek came first, or "closed"."""
        while not self._closed and not self._seek_pending:
            if not self._playing:
                self._changed.wait()
                continue
            if self._speed is None:
                return "due"
            now = time.perf_counter()
            if self._clock is None:
                self._clock = (now, frame_ns)
            wall, start_ns = self._clock
            remaining = wall + (frame_ns - start_ns) / 1e9 / self._speed - now
            if remaining <= 0:
                return "due"
            self._changed.wait(remaining)
        return "closed" if self._closed else "seek"

    def _end(self) -> None:
        with self._changed:
            self._ended, self._playing = True, False
        if self.on_change is not None:
            self.on_change(self.state())
