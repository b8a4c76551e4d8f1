"""The decoded-pixel budget: how many image pixels all requests in flight may hold at once.

A small compressed image can declare a large frame (a 2.4 KB JPEG that says 7000x4000), and
its pixels are what cost memory: the decoded image, then the masks rendered at frame size.
Each request leases its frame's width*height from one `PixelBudget` before anything is
decoded and gives it back once its answer is sent; a request that does not fit is refused at
once (HTTP 503 with Retry-After, gRPC RESOURCE_EXHAUSTED) instead of growing the process.
"""

from __future__ import annotations

import threading


class PixelBudget:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the pixel budget must be at least 1 pixel")
        self.limit = limit
        self.in_use = 0
        self._lock = threading.Lock()

    def lease(self, pixels: int) -> Lease | None:
        """Take `pixels` from the budget; None when they do not fit now."""
        with self._lock:
            if self.in_use + pixels > self.limit:
                return None
            self.in_use += pixels
        return Lease(self, pixels)

    def _give_back(self, pixels: int) -> None:
        with self._lock:
            self.in_use -= pixels


class Lease:
    """Pixels taken from a budget; `release()` gives them back (once, however often called)."""

    def __init__(self, budget: PixelBudget, pixels: int) -> None:
        self.budget = budget
        self.pixels = pixels
        self._released = False
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self.budget._give_back(self.pixels)
