"""Periodic `refresh` broadcasts on an interval that can change while running.

Ticks fall at `anchor + k * interval` on the wall clock (the anchor is when the interval was
last set, or the Unix epoch), so every process of a cluster computes the same ticks; each
tick has an id, and the broker lets exactly one process send it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable

from .clock import Clock
from .logs import get_logger

log = get_logger("notifier.refresh")


class RefreshTimer:
    """Calls `on_tick(tick_id)` every `interval` seconds (0 disables); a new interval restarts
    the schedule at once."""

    def __init__(self, clock: Clock, interval: float, on_tick: Callable[[str], Awaitable[None]]) -> None:
        self._clock = clock
        self._interval = interval
        self._anchor = 0.0  # seconds since the epoch
        self._on_tick = on_tick
        self._changed = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self.ticks = 0

    @property
    def interval(self) -> float:
        return self._interval

    def set(self, seconds: float, anchor: float) -> None:
        if (seconds, anchor) == (self._interval, self._anchor):
            return
        self._interval = seconds
        self._anchor = anchor
        self._changed.set()

    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="refresh-timer")

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None

    def _next_tick(self) -> tuple[int, float]:
        """The number of the next tick and the seconds until it."""
        now = self._clock.now()
        count = math.floor((now - self._anchor) / self._interval) + 1
        return count, self._anchor + count * self._interval - now

    async def _run(self) -> None:
        while True:
            self._changed.clear()
            if not self._interval:
                await self._changed.wait()
                continue
            count, delay = self._next_tick()
            try:
                await asyncio.wait_for(self._changed.wait(), delay)
                continue  # interval changed: a fresh schedule at once
            except TimeoutError:
                pass
            self.ticks += 1
            try:
                await self._on_tick(f"{self._anchor:.3f}:{count}")
            except Exception:
                log.exception("refresh_failed")
