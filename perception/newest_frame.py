"""Newest frame wins: how a live stream meets perception that is slower than the camera.

A `NewestFrame` holds at most one item. The producer `put`s every frame as it arrives; the
consumer `take`s the newest when it is free. A frame replaced before it was taken is dropped
and counted, so perception always works on the freshest frame and latency never piles up.
Used by the service's WebSocket and gRPC streams and by `perception replay --rate`.

`take` blocks a thread; `take_async` awaits on an event loop whose own tasks `put` (the
WebSocket receiver). `end` closes the stream: `take` returns what is left, then None (or raises
the error the producer ended with, once the frames before it were taken).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Taken(Generic[T]):
    item: T
    sequence: int  # position of the item in the stream, from 0
    dropped: int  # items replaced unseen since the previous take


class NewestFrame(Generic[T]):
    def __init__(self) -> None:
        self.arrived = 0
        self.dropped = 0  # in all
        self._item: T | None = None
        self._sequence = 0
        self._dropped_since_take = 0
        self._ended = False
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        self._event: asyncio.Event | None = None  # made by take_async, set by put and end

    def put(self, item: T) -> bool:
        """Offer the newest item; True when it replaced one not yet taken (that one is
        dropped). Never blocks."""
        with self._changed:
            replaced = self._item is not None
            self._item, self._sequence = item, self.arrived
            self.arrived += 1
            self.dropped += replaced
            self._dropped_since_take += replaced
            self._changed.notify_all()
        if self._event is not None:
            self._event.set()
        return replaced

    def end(self, error: BaseException | None = None) -> None:
        """No more items; `take` raises `error`, if given, once the last item is taken."""
        with self._changed:
            self._ended, self._error = True, error
            self._changed.notify_all()
        if self._event is not None:
            self._event.set()

    def waiting(self) -> bool:
        """Whether an item arrived that nobody has taken yet."""
        with self._changed:
            return self._item is not None

    def take(self) -> Taken[T] | None:
        """The newest item, waiting for one; None once the stream has ended."""
        with self._changed:
            self._changed.wait_for(lambda: self._item is not None or self._ended)
            return self._take()

    async def take_async(self) -> Taken[T] | None:
        """`take` for a consumer on the event loop whose tasks `put`."""
        if self._event is None:
            self._event = asyncio.Event()
        while True:
            with self._changed:
                if self._item is not None or self._ended:
                    return self._take()
                self._event.clear()
            await self._event.wait()

    def _take(self) -> Taken[T] | None:
        if self._item is None:
            if self._error is not None:
                raise self._error
            return None
        taken = Taken(self._item, self._sequence, self._dropped_since_take)
        self._item, self._dropped_since_take = None, 0
        return taken
