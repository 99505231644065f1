"""Progress coalescing: a chatty worker cannot flood browsers, and they still see the newest value."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .clock import Clock

# What is offered and emitted: a task's state (an immutable version of it).
Snapshot = Any
EmitProgress = Callable[[str, Snapshot], Awaitable[None]]


class Cancellable(Protocol):
    def cancel(self) -> None: ...


Schedule = Callable[[float, Callable[[], None]], Cancellable]


@dataclass(slots=True)
class _Slot:
    last_emitted: float = float("-inf")
    # The newest state offered and not yet emitted (replaced by every newer offer).
    pending: Snapshot | None = None
    due: float = 0.0


class ProgressCoalescer:
    """At most `max_per_second` progress events per task; the newest value always wins.

    Overflow policy: each task keeps one pending snapshot, replaced by newer ones, so memory is
    one snapshot per active task however fast a worker reports. One timer serves every task: it
    fires a little after the earliest due emission (never before it), and every task due by then
    is emitted in the same pass, so they share one commit of the store.

    Emissions of one task leave in the order they are started, and the broker appends them in
    that order, so a newer value is never overtaken by an older one.
    """

    def __init__(self, max_per_second: float, clock: Clock, emit: EmitProgress, schedule: Schedule) -> None:
        self._interval = 1.0 / max_per_second
        # How long the timer waits past the earliest due emission, gathering others with it.
        self._slack = self._interval / 4
        self._clock = clock
        self._emit = emit
        self._schedule = schedule
        self._slots: dict[str, _Slot] = {}
        self._due: list[tuple[float, str]] = []  # a heap; entries of finished tasks are stale
        self._timer: Cancellable | None = None
        self._emitting: set[asyncio.Future[Any]] = set()

    async def offer(self, task_id: str, snapshot: Snapshot) -> None:
        """Note a new progress value; emit it now if the task's budget allows, else later."""
        slot = self._slots.get(task_id)
        if slot is None:
            slot = self._slots[task_id] = _Slot()
        now = self._clock.monotonic()
        if slot.pending is None and now >= slot.last_emitted + self._interval:
            slot.last_emitted = now
            await self._emit(task_id, snapshot)
            return
        if slot.pending is None:
            slot.due = slot.last_emitted + self._interval
            heapq.heappush(self._due, (slot.due, task_id))
            self._arm(now)
        slot.pending = snapshot

    async def finish(self, task_id: str) -> None:
        """Emit what is pending for the task, then forget it; call before its terminal event."""
        slot = self._slots.pop(task_id, None)
        if slot is not None and slot.pending is not None:
            await self._emit(task_id, slot.pending)
        if self._emitting:
            # An emission the timer started must be appended before the terminal event.
            await asyncio.gather(*list(self._emitting), return_exceptions=True)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task_id in list(self._slots):
            await self.finish(task_id)

    def _arm(self, now: float) -> None:
        if self._timer is None and self._due:
            delay = self._due[0][0] + self._slack - now
            self._timer = self._schedule(max(delay, 0.0), self._tick)

    def _tick(self) -> None:
        self._timer = None
        now = self._clock.monotonic()
        batch = []
        while self._due and self._due[0][0] <= now:
            due, task_id = heapq.heappop(self._due)
            slot = self._slots.get(task_id)
            if slot is None or slot.pending is None or slot.due != due:
                continue  # finished, or emitted already
            snapshot, slot.pending = slot.pending, None
            slot.last_emitted = now
            batch.append(self._emit(task_id, snapshot))
        if batch:
            emission = asyncio.ensure_future(asyncio.gather(*batch, return_exceptions=True))
            self._emitting.add(emission)
            emission.add_done_callback(self._emitting.discard)
        self._arm(now)
