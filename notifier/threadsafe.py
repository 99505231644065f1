"""Blocking calls into the service for code running in other threads."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

from .models import NotifyRequest, PublishRequest, TaskCreate, TaskProgress
from .records import Envelope, Notification, Task

T = TypeVar("T")


class _Service(Protocol):
    """The service's calls this façade makes blocking (`service.Notifier`)."""

    async def publish(self, request: PublishRequest, key: str | None = None) -> Envelope: ...

    async def notify(self, request: NotifyRequest, key: str | None = None) -> list[Notification]: ...

    async def create_task(self, request: TaskCreate) -> Task: ...

    async def report_progress(self, request: TaskProgress) -> Task: ...

    async def complete_task(self, task_id: str, result: Any = None, message: str | None = None) -> Task: ...

    async def fail_task(self, task_id: str, error: str) -> Task: ...


class ThreadSafeNotifier:
    """Blocking calls for code running in other threads: each runs on the service's own loop.

    (Creating a fresh event loop per call, as hand-written versions do, delivers nothing: the
    sockets live on the service's loop.)
    """

    def __init__(self, notifier: _Service, loop: asyncio.AbstractEventLoop, timeout: float = 10.0):
        self._notifier = notifier
        self._loop = loop
        self._timeout = timeout

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(self._timeout)

    def publish(self, room: str, type: str, data: dict[str, Any] | None = None) -> Envelope:
        request = PublishRequest(room=room, type=type, data=data or {})
        return self._run(self._notifier.publish(request))

    def notify(
        self, user_ids: list[str], title: str, body: str | None = None, data: dict[str, Any] | None = None
    ) -> list[Notification]:
        request = NotifyRequest(user_ids=user_ids, title=title, body=body, data=data or {})
        return self._run(self._notifier.notify(request))

    def create_task(self, project_id: str, **fields: Any) -> Task:
        return self._run(self._notifier.create_task(TaskCreate(project_id=project_id, **fields)))

    def report_progress(self, task_id: str, progress: float, **fields: Any) -> Task:
        request = TaskProgress(task_id=task_id, progress=progress, **fields)
        return self._run(self._notifier.report_progress(request))

    def complete_task(self, task_id: str, result: Any = None) -> Task:
        return self._run(self._notifier.complete_task(task_id, result))

    def fail_task(self, task_id: str, error: str) -> Task:
        return self._run(self._notifier.fail_task(task_id, error))
