"""Progress absorption, in-process: how many updates a second the task book takes in."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from notifier import Notifier, Settings
from notifier.broker import Delivery, open_broker
from notifier.health import Health
from notifier.models import TaskCreate, TaskProgress
from notifier.store import open_store

# Updates handled per loop turn, as a socket hands over a read's worth of frames at once:
# they share one commit, as real traffic does.
BATCH = 100


class _CountingEmitter:
    """Stands in for the sockets (a service Transport): counts what would be delivered."""

    def __init__(self) -> None:
        self.emitted = 0

    def deliver(self, delivery: Delivery) -> None:
        if delivery.type == "task.progress":
            self.emitted += 1

    def has_members(self, room: str) -> bool:
        return False

    def drop_members(self, room: str, reason: str) -> None:
        pass

    def user_connection_count(self) -> int:
        return 0


async def _watch_lag(stop: asyncio.Event, lags: list[float], period: float = 0.005) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        expected = loop.time() + period
        await asyncio.sleep(period)
        lags.append(max(0.0, loop.time() - expected))


async def measure_progress(tasks: int, updates: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(jwt_secret="x" * 32, data_dir=Path(data_dir), refresh_interval_seconds=0)
        health = Health()
        store = open_store(settings.resolved_store_url, health)
        broker = open_broker("", store, health, max_events_per_room=settings.history_max_events)
        notifier = Notifier(settings, store, broker, health)
        emitter = _CountingEmitter()
        notifier.attach(emitter)
        await notifier.start()
        try:
            ids = [f"t{n}" for n in range(tasks)]
            for task_id in ids:
                await notifier.create_task(TaskCreate(id=task_id, project_id="bench"))
            stop, lags = asyncio.Event(), []
            watcher = asyncio.create_task(_watch_lag(stop, lags))
            requests = [
                TaskProgress(task_id=ids[n % tasks], progress=min(100, n * 100 / updates))
                for n in range(updates)
            ]
            started = time.perf_counter()
            for first in range(0, len(requests), BATCH):
                # Every update is acknowledged only once stored; a batch shares one commit.
                await asyncio.gather(
                    *(notifier.report_progress(request) for request in requests[first : first + BATCH])
                )
            elapsed = time.perf_counter() - started
            stop.set()
            await watcher
            for task_id in ids:
                await notifier.complete_task(task_id)
        finally:
            await notifier.stop()
    return {
        "tasks": tasks,
        "updates": updates,
        "updates_per_s": updates / elapsed,
        "max_loop_lag_ms": max(lags, default=0) * 1000,
        "emitted": emitter.emitted,
    }
