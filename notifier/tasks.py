"""The task state machine: validated transitions, coalesced progress, terminal events in order.

Every change is a compare-and-set on the task's version in the store, so several processes
may change one task and none overwrites another's change; an answer is sent only once the
change is stored. Task events carry the task's version, and the broker drops a snapshot older
than one it already appended (`Guard`): progress never goes backwards in any room, and the
terminal event comes after the last progress, whichever process emits them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from .clock import Clock, millis
from .coalescer import ProgressCoalescer
from .errors import ErrorCode, NotifierError
from .models import TaskCreate, TaskProgress
from .records import FINISHED_STATUSES, Task, TaskStatus, new_id
from .store import Store

UNFINISHED_STATUSES = frozenset(TaskStatus) - FINISHED_STATUSES

TERMINAL_EVENT = {
    TaskStatus.COMPLETED: "task.completed",
    TaskStatus.FAILED: "task.failed",
    TaskStatus.CANCELLED: "task.cancelled",
}

# A change that keeps meeting a newer version (other processes changing the task) gives up.
_MAX_ATTEMPTS = 8

AnnounceTask = Callable[[Task, str], Awaitable[None]]
Publish = Callable[[str, str, dict[str, Any]], Awaitable[Any]]


class TaskBook:
    """Task changes, and the events that tell subscribers about them.

    Progress is emitted at most `max_progress_per_second` per task (per process): a worker
    reporting 100,000 times a second costs the browsers no more than that, and they always
    get the newest value.
    """

    def __init__(
        self,
        store: Store,
        announce: AnnounceTask,
        publish: Publish,
        clock: Clock,
        max_progress_per_second: float,
    ) -> None:
        self._store = store
        self._announce = announce
        self._publish = publish
        self._clock = clock
        self._coalescer = ProgressCoalescer(max_progress_per_second, clock, self._emit_progress, _call_later)

    async def close(self) -> None:
        await self._coalescer.close()

    async def create(self, request: TaskCreate) -> Task:
        now = millis(self._clock.now())
        task = Task(
            id=request.id or new_id(),
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
        if not await self._store.insert_task(task):
            raise NotifierError(ErrorCode.CONFLICT, f"task {task.id!r} already exists")
        await self._announce(task, "task.created")
        await self._publish(
            f"project:{task.project_id}", "refresh", {"reason": "task_created", "task_id": task.id}
        )
        return task

    async def report_progress(self, request: TaskProgress) -> Task:
        now = millis(self._clock.now())
        task = await self._change(request.task_id, lambda current: _progressed(current, request, now))
        await self._coalescer.offer(task.id, task)
        return task

    async def finish(
        self,
        task_id: str,
        status: TaskStatus,
        *,
        result: Any = None,
        error: str | None = None,
        message: str | None = None,
    ) -> Task:
        now = millis(self._clock.now())

        def finished(current: Task) -> Task:
            _must_be_unfinished(current)
            changes: dict[str, Any] = {
                "status": status,
                "updated_at": now,
                "finished_at": now,
                "error": error,
            }
            if status is TaskStatus.COMPLETED:
                changes.update(progress=100.0, result=result)
            if message is not None:
                changes["message"] = message
            return current.evolve(**changes)

        task = await self._change(task_id, finished)
        # The last progress leaves, with the state it was reported in, before the terminal
        # event: clients never see progress after completion.
        await self._coalescer.finish(task_id)
        await self._announce(task, TERMINAL_EVENT[status])
        return task

    async def get(self, task_id: str) -> Task:
        task = await self._store.get_task(task_id)
        if task is None:
            raise NotifierError(ErrorCode.NOT_FOUND, f"task {task_id!r} does not exist")
        return task

    async def list(
        self, statuses: frozenset[TaskStatus] | None, project_ids: frozenset[str] | None
    ) -> list[Task]:
        return await self._store.list_tasks(statuses, project_ids)

    async def forget_finished_before(self, ts: int) -> int:
        return await self._store.delete_tasks_finished_before(ts)

    async def _change(self, task_id: str, change: Callable[[Task], Task]) -> Task:
        """Read, change, compare-and-set; again if another process changed it meanwhile."""
        for _ in range(_MAX_ATTEMPTS):
            current = await self._store.get_task(task_id)
            if current is None:
                raise NotifierError(ErrorCode.NOT_FOUND, f"task {task_id!r} does not exist")
            task = change(current)
            if await self._store.replace_task(task, current.version):
                return task
        raise NotifierError(ErrorCode.CONFLICT, f"task {task_id!r} is being changed elsewhere; retry")

    async def _emit_progress(self, task_id: str, task: Task) -> None:
        await self._announce(task, "task.progress")


def _must_be_unfinished(task: Task) -> None:
    if task.status.is_finished:
        raise NotifierError(ErrorCode.CONFLICT, f"task {task.id!r} is already finished")


def _progressed(task: Task, request: TaskProgress, now: int) -> Task:
    _must_be_unfinished(task)
    if request.progress < task.progress:
        raise NotifierError(
            ErrorCode.CONFLICT,
            f"progress cannot go backwards ({request.progress} < {task.progress})",
        )
    changes: dict[str, Any] = {
        "status": TaskStatus.RUNNING,
        "progress": float(request.progress),
        "updated_at": now,
    }
    for counter in ("current", "completed", "total", "message"):
        value = getattr(request, counter)
        if value is not None:
            changes[counter] = value
    return task.evolve(**changes)


def _call_later(delay: float, callback: Any) -> asyncio.TimerHandle:
    return asyncio.get_running_loop().call_later(delay, callback)
