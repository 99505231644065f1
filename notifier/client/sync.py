"""`SyncWorker`: `Worker` for synchronous code, on a loop of its own in one thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .connection import TokenSource
from .worker import Worker

T = TypeVar("T")


class SyncWorker:
    """`Worker` for synchronous code (threads, scripts): each call blocks until it is acked.

    It runs its own event loop in a background thread, created once; calls from any thread go
    to that loop (never a new loop per call, which would lose the connection each time).
    """

    _FORWARDED = frozenset(
        {
            "publish",
            "notify",
            "create_task",
            "task_progress",
            "complete_task",
            "fail_task",
            "cancel_task",
            "get_task",
        }
    )

    def __init__(self, url: str, token: TokenSource, *, call_timeout: float = 60.0, **options: Any) -> None:
        self._call_timeout = call_timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="notifier-worker", daemon=True)
        self._thread.start()

        async def build() -> Worker:
            return Worker(url, token, **options)

        self._worker = self._run(build())

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(self._call_timeout)

    def connect(self) -> None:
        self._run(self._worker.connect())

    def close(self) -> None:
        try:
            self._run(self._worker.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            if not self._thread.is_alive():
                self._loop.close()  # else a ResourceWarning whenever it is collected

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name not in self._FORWARDED:
            raise AttributeError(name)
        method = getattr(self._worker, name)
        return lambda *args, **kwargs: self._run(method(*args, **kwargs))

    def __enter__(self) -> SyncWorker:
        self.connect()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
