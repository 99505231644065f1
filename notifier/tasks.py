"""The task state machine: validated transitions, coalesced progress, terminal events in order."""

from __future__ import annotations

import asyncio
from typing import Any

from .clock import Clock, millis
from .coalescer import ProgressCoalescer, Snapshot
from .errors import ErrorCode, NotifierError
from .models import TaskCreate, TaskProgress
from .publisher import Publisher
from .records import FINISHED_STATUSES, Task, TaskStatus, new_id
from .rooms import room_for_project, room_for_task
from .store import Store

UNFINISHED_STATUSES = frozenset(TaskStatus) - FINISHED_STATUSES

_TERMINAL_EVENT = {
    TaskStatus.COMPLETED: "task.completed",
    TaskStatus.FAILED: "task.failed",
    TaskStatus.CANCELLED: "task.cancelled",
}


class TaskBook:
    """Owns every unfinished task in memory (the authoritative live state) and the store copy.

    Progress is applied to memory at once and persisted when it is emitted, at most
    `max_progress_per_second` per task, so a worker reporting 100,000 times a second costs
    neither the store nor the browsers more than that.
    """

    def __init__(
        self, store: Store, publisher: Publisher, clock: Clock, max_progress_per_second: float
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._clock = clock
        self._live: dict[str, Task] = {}
        self._coalescer = ProgressCoalescer(
            max_progress_per_second, clock, self._emit_progress, _call_later
        )

    async def load(self) -> None:
        """Pick unfinished tasks back up after a restart."""
        for task in await self._store.list_tasks(UNFINISHED_STATUSES, None):
            self._live[task.id] = task

    async def close(self) -> None:
        await self._coalescer.close()

    async def create(self, request: TaskCreate) -> Task:
        task_id = request.id or new_id()
        if task_id in self._live or await self._store.get_task(task_id) is not None:
            raise NotifierError(ErrorCode.CONFLICT, f"task {task_id!r} already exists")
        now = millis(self._clock.now())
        task = Task(
            id=task_id,
            project_id=request.project_id,
            owner=request.owner,
            title=request.title,
            status=TaskStatus.PENDING,
            progress=0.0,
            total=request.total,
            message=request.message,
            created_at=now,
            updated_at=now,
        )
        self._live[task_id] = task
        await self._store.save_task(task)
        await self._publish_task_event(task.project_id, task.id, "task.created", task.to_dict())
        await self._publisher.publish(
            room_for_project(task.project_id),
            "refresh",
            {"reason": "task_created", "task_id": task.id},
        )
        return task

    async def report_progress(self, request: TaskProgress) -> Task:
        task = await self._live_task(request.task_id)
        if request.progress < task.progress:
            raise NotifierError(
                ErrorCode.CONFLICT,
                f"progress cannot go backwards ({request.progress} < {task.progress})",
            )
        task.status = TaskStatus.RUNNING
        task.progress = float(request.progress)
        for counter in ("current", "completed", "total", "message"):
            value = getattr(request, counter)
            if value is not None:
                setattr(task, counter, value)
        task.updated_at = millis(self._clock.now())
        await self._coalescer.offer(task.id, task.to_dict)
        return task

    async def finish(
        self, task_id: str, status: TaskStatus, *, result: Any = None,
        error: str | None = None, message: str | None = None,
    ) -> Task:
        task = await self._live_task(task_id)
        # Leaving the live set before the first await makes a second finish a CONFLICT.
        del self._live[task_id]
        # The last progress leaves, with the state it was reported in, before the terminal
        # event: clients never see progress after completion.
        await self._coalescer.finish(task_id)
        now = millis(self._clock.now())
        task.status = status
        task.updated_at = task.finished_at = now
        if status is TaskStatus.COMPLETED:
            task.progress = 100.0
            task.result = result
        task.error = error
        if message is not None:
            task.message = message
        await self._store.save_task(task)
        await self._publish_task_event(
            task.project_id, task.id, _TERMINAL_EVENT[status], task.to_dict()
        )
        return task

    async def get(self, task_id: str) -> Task:
        task = self._live.get(task_id) or await self._store.get_task(task_id)
        if task is None:
            raise NotifierError(ErrorCode.NOT_FOUND, f"task {task_id!r} does not exist")
        return task

    async def find(self, task_id: str) -> Task | None:
        return self._live.get(task_id) or await self._store.get_task(task_id)

    async def list(
        self, statuses: frozenset[TaskStatus] | None, project_ids: frozenset[str] | None
    ) -> list[Task]:
        stored = await self._store.list_tasks(statuses, project_ids)
        # Live progress is newer than what was last persisted.
        return [self._live.get(task.id, task) for task in stored]

    async def forget_finished_before(self, ts: int) -> int:
        return await self._store.delete_tasks_finished_before(ts)

    async def _live_task(self, task_id: str) -> Task:
        task = self._live.get(task_id)
        if task is not None:
            return task
        if await self._store.get_task(task_id) is not None:
            raise NotifierError(ErrorCode.CONFLICT, f"task {task_id!r} is already finished")
        raise NotifierError(ErrorCode.NOT_FOUND, f"task {task_id!r} does not exist")

    async def _emit_progress(self, task_id: str, snapshot: Snapshot) -> None:
        task = self._live.get(task_id)
        if task is not None:
            await self._store.save_task(task)
        await self._publish_task_event(snapshot["project_id"], task_id, "task.progress", snapshot)

    async def _publish_task_event(
        self, project_id: str, task_id: str, event_type: str, data: Snapshot
    ) -> None:
        await self._publisher.publish(room_for_task(task_id), event_type, data)
        await self._publisher.publish(room_for_project(project_id), event_type, data)


def _call_later(delay: float, callback: Any) -> asyncio.TimerHandle:
    return asyncio.get_running_loop().call_later(delay, callback)
