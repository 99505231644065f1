"""Periodic `refresh` broadcasts on an interval that can change while running."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from .logs import get_logger

log = get_logger("notifier.refresh")


class RefreshTimer:
    """Calls `on_tick` every `interval` seconds (0 disables); a new interval restarts the wait."""

    def __init__(self, interval: float, on_tick: Callable[[], Awaitable[None]]) -> None:
        self._interval = interval
        self._on_tick = on_tick
        self._changed = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self.ticks = 0

    @property
    def interval(self) -> float:
        return self._interval

    def set_interval(self, seconds: float) -> None:
        self._interval = seconds
        self._changed.set()

    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="refresh-timer")

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None

    async def _run(self) -> None:
        while True:
            self._changed.clear()
            try:
                timeout = self._interval or None
                await asyncio.wait_for(self._changed.wait(), timeout)
                continue  # interval changed: start a fresh period at once
            except TimeoutError:
                pass
            self.ticks += 1
            try:
                await self._on_tick()
            except Exception:
                log.exception("refresh_failed")
