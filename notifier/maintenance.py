"""Retention: finished tasks, old room events, notifications and idempotency keys are dropped
once past their settings' limits, by one process of a cluster each period."""

from __future__ import annotations

import asyncio
import contextlib
import time

from .broker import Broker
from .clock import Clock, millis
from .errors import NotifierError
from .logs import get_logger
from .settings import Settings
from .store import Store
from .tasks import TaskBook

log = get_logger("notifier.service")


class Maintenance:
    def __init__(
        self, settings: Settings, tasks: TaskBook, broker: Broker, store: Store, clock: Clock
    ) -> None:
        self._settings = settings
        self._tasks = tasks
        self._broker = broker
        self._store = store
        self._clock = clock
        self._loop_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._every_period(), name="maintenance")

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None

    async def run(self) -> None:
        settings = self._settings
        now = self._clock.now()
        await self._tasks.forget_finished_before(millis(now - settings.task_retention_seconds))
        await self._broker.trim(millis(now - settings.history_max_age_seconds), settings.history_max_events)
        await self._store.trim_notifications(
            millis(now - settings.inbox_max_age_seconds), settings.inbox_max_per_user
        )
        await self._store.trim_idempotency_keys(millis(now - settings.inbox_max_age_seconds))

    async def _every_period(self) -> None:
        period = self._settings.maintenance_interval_seconds
        while True:
            await asyncio.sleep(period)
            try:
                # One process of a cluster does it each period.
                if await self._broker.claim(f"maintenance:{int(time.time() // period)}", period):
                    await self.run()
            except NotifierError as exc:
                log.warning("maintenance_skipped", detail=exc.message)
            except Exception:
                log.exception("maintenance_failed")
