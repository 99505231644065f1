"""Progress coalescing: a chatty worker cannot flood browsers, and they still see the newest value."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .clock import Clock

Snapshot = dict[str, Any]
TakeSnapshot = Callable[[], Snapshot]
EmitProgress = Callable[[str, Snapshot], Awaitable[None]]


class Cancellable(Protocol):
    def cancel(self) -> None: ...


Schedule = Callable[[float, Callable[[], None]], Cancellable]


@dataclass
class _Slot:
    last_emitted: float = float("-inf")
    # Taken when the value is emitted, not when it is offered: the newest state at that
    # moment, and no copying for the updates that are coalesced away.
    pending: TakeSnapshot | None = None
    timer: Cancellable | None = None
    # Serialises emits of one task, so values leave in the order they were taken (newest last).
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    flushes: set[asyncio.Task[None]] = field(default_factory=set)


class ProgressCoalescer:
    """At most `max_per_second` progress events per task; the newest value always wins.

    Overflow policy: each task keeps one pending snapshot, replaced by newer ones, so memory is
    one snapshot per active task however fast a worker reports.
    """

    def __init__(
        self, max_per_second: float, clock: Clock, emit: EmitProgress, schedule: Schedule
    ) -> None:
        self._interval = 1.0 / max_per_second
        self._clock = clock
        self._emit = emit
        self._schedule = schedule
        self._slots: dict[str, _Slot] = {}

    async def offer(self, task_id: str, snapshot: TakeSnapshot) -> None:
        """Note a new progress value; emit it now if the task's budget allows, else later."""
        slot = self._slots.setdefault(task_id, _Slot())
        slot.pending = snapshot
        if slot.timer is not None:
            return
        wait = slot.last_emitted + self._interval - self._clock.monotonic()
        if wait <= 0 and not slot.lock.locked():
            await self._flush(task_id, slot)
        else:
            slot.timer = self._schedule(max(wait, 0.0), lambda: self._on_timer(task_id, slot))

    async def finish(self, task_id: str) -> None:
        """Emit what is pending for the task, then forget it; call before its terminal event."""
        slot = self._slots.pop(task_id, None)
        if slot is None:
            return
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        await self._flush(task_id, slot)
        if slot.flushes:
            await asyncio.gather(*slot.flushes)

    async def close(self) -> None:
        for task_id in list(self._slots):
            await self.finish(task_id)

    def _on_timer(self, task_id: str, slot: _Slot) -> None:
        slot.timer = None
        flush = asyncio.get_running_loop().create_task(self._flush(task_id, slot))
        slot.flushes.add(flush)
        flush.add_done_callback(slot.flushes.discard)

    async def _flush(self, task_id: str, slot: _Slot) -> None:
        async with slot.lock:
            take, slot.pending = slot.pending, None
            if take is None:
                return
            slot.last_emitted = self._clock.monotonic()
            await self._emit(task_id, take())
