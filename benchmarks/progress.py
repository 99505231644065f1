"""Progress absorption, in-process: how many updates a second the task book takes in."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from notifier import Notifier, Settings
from notifier.models import TaskCreate, TaskProgress
from notifier.records import Envelope
from notifier.store import open_store


class _CountingEmitter:
    """Stands in for the sockets: counts what the service would deliver."""

    def __init__(self) -> None:
        self.emitted = 0

    async def emit(self, envelope: Envelope) -> None:
        if envelope["type"] == "task.progress":
            self.emitted += 1

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
        settings = Settings(jwt_secret="x" * 32, data_dir=Path(data_dir),
                            refresh_interval_seconds=0)
        store = open_store(settings.resolved_store_url)
        await store.open()
        notifier = Notifier(settings, store)
        emitter = _CountingEmitter()
        notifier.attach(emitter)
        await notifier.start()
        try:
            ids = [f"t{n}" for n in range(tasks)]
            for task_id in ids:
                await notifier.create_task(TaskCreate(id=task_id, project_id="bench"))
            stop, lags = asyncio.Event(), []
            watcher = asyncio.create_task(_watch_lag(stop, lags))
            requests = [TaskProgress(task_id=ids[n % tasks], progress=min(100, n * 100 / updates))
                        for n in range(updates)]
            started = time.perf_counter()
            for n, request in enumerate(requests):
                await notifier.report_progress(request)
                if n % 100 == 99:
                    # As when updates arrive from sockets: other work (timers, the lag
                    # watcher) gets its turn between batches.
                    await asyncio.sleep(0)
            elapsed = time.perf_counter() - started
            stop.set()
            await watcher
            for task_id in ids:
                await notifier.complete_task(task_id)
        finally:
            await notifier.stop()
            await store.close()
    return {"tasks": tasks, "updates": updates, "updates_per_s": updates / elapsed,
            "max_loop_lag_ms": max(lags, default=0) * 1000, "emitted": emitter.emitted}
