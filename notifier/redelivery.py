"""Notifications stored but not delivered live reach their users all the same.

A notification is stored undelivered, and marked delivered once its event is in the broker's
history. If the broker failed (Redis down, a timeout) or the process died in between, a sweep
that every process runs claims it with a lease and delivers it, under the event id the first
attempt used (it derives from the notification's), appended at most once by the sweeps (Redis
keeps that mark for five minutes, the embedded history as long as the event).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from .clock import Clock, millis
from .errors import NotifierError
from .logs import get_logger
from .records import Notification
from .store import Store

log = get_logger("notifier.service")

# The request that stored a notification has this long to deliver it before a sweep may.
DELIVERY_WINDOW_MS = 10_000
# A claimed notification is left to its claimer this long (then another process may retry).
LEASE_MS = 10_000
SWEEP_SECONDS = 1.0
BATCH = 500

Deliver = Callable[[list[Notification]], Awaitable[None]]


class Redelivery:
    def __init__(self, store: Store, deliver: Deliver, clock: Clock) -> None:
        self._store = store
        self._deliver = deliver
        self._clock = clock
        # Ids delivered live, not yet marked so in the store: one UPDATE for many requests,
        # off the request's path (a mark lost in a crash costs a redelivery the broker drops).
        self._delivered: list[str] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # For the metrics: delivered by a sweep (not by the request that stored them).
        self.redelivered = 0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._mark_loop(), name="redelivery-marks"),
            loop.create_task(self._sweep_loop(), name="redelivery-sweep"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        with contextlib.suppress(NotifierError):
            await self._mark()

    def delivered(self, notifications: list[Notification]) -> None:
        self._delivered.extend(n.id for n in notifications)
        self._wake.set()

    async def sweep(self) -> int:
        """Deliver up to one batch of due undelivered notifications; how many were."""
        now = millis(self._clock.now())
        claimed = await self._store.claim_undelivered(now, now + LEASE_MS, BATCH)
        if not claimed:
            return 0
        await self._deliver(claimed)
        await self._store.mark_delivered([n.id for n in claimed])
        self.redelivered += len(claimed)
        log.info("notifications_redelivered", count=len(claimed))
        return len(claimed)

    async def _mark(self) -> None:
        ids, self._delivered = self._delivered, []
        if ids:
            await self._store.mark_delivered(ids)

    async def _mark_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._mark()
            except NotifierError as exc:
                # Left undelivered in the store: a sweep delivers them again, and the broker
                # drops the repeats.
                log.warning("delivery_marks_failed", detail=exc.message)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                while await self.sweep() == BATCH:
                    pass
            except NotifierError as exc:
                # The lease runs out and the next sweep (here or elsewhere) tries again.
                log.warning("redelivery_failed", detail=exc.message)
            except Exception:
                log.exception("redelivery_failed")
