"""The one service layer. Socket handlers, REST handlers and in-process callers all come here."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from . import __version__
from .auth import Claims
from .clock import Clock, SystemClock, millis
from .errors import ErrorCode, NotifierError
from .history import Replay, replay_since
from .inbox import Inbox
from .logs import get_logger
from .models import (
    MarkRead,
    NotificationsList,
    NotifyRequest,
    Position,
    PublishRequest,
    TaskCreate,
    TaskProgress,
)
from .publisher import Emitter, Publisher
from .records import Envelope, Notification, Task, TaskStatus
from .refresh import RefreshTimer
from .rooms import BROADCAST_ROOM, RoomKind, parse_room
from .settings import Settings
from .store import Store
from .tasks import TaskBook

log = get_logger("notifier.service")
T = TypeVar("T")


class Notifier:
    """Publish events, notify users, run tasks, keep inboxes and the refresh timer.

    Reach it in an aiohttp handler as `request.app[NOTIFIER]`; from a thread, use `.threadsafe()`.
    """

    def __init__(self, settings: Settings, store: Store, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self._store = store
        self._publisher = Publisher(store, self.clock)
        self.tasks = TaskBook(store, self._publisher, self.clock, settings.progress_max_per_second)
        self.inbox = Inbox(store, self._publisher, self.clock)
        self._refresh = RefreshTimer(settings.refresh_interval_seconds, self._send_refresh)
        self._maintenance: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.started_at = time.time()

    def attach(self, emitter: Emitter) -> None:
        """Connect the service to the transport that delivers its events."""
        self._publisher.emitter = emitter

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.tasks.load()
        self._refresh.start()
        self._maintenance = self._loop.create_task(self._maintain(), name="maintenance")

    async def stop(self) -> None:
        await self._refresh.stop()
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        await self.tasks.close()

    # Publishing

    async def publish(self, request: PublishRequest) -> Envelope:
        """Send `{type, data}` to a room (`user:<id>`, `project:<id>`, `task:<id>` or `*`)."""
        parse_room(request.room)
        return await self._publisher.publish(request.room, request.type, dict(request.data))

    async def notify(self, request: NotifyRequest) -> list[Notification]:
        """Store a notification for each user, then push it and their unread count to them."""
        return await self.inbox.notify(request)

    async def once(
        self, key: str | None, action: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        """Run `action` once per idempotency key; a retry gets the first answer back.

        Keys are remembered in the store (surviving restarts) for the inbox's retention time;
        a retry that arrives while the first attempt is still running waits for its answer.
        """
        if key is None:
            return await action()
        running = self._in_flight.get(key)
        if running is not None:
            return {**await asyncio.shield(running), "duplicate": True}
        remembered = await self._store.recall_idempotency_key(key)
        if remembered is not None:
            return {**remembered, "duplicate": True}
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            result = await action()
            await self._store.remember_idempotency_key(key, result, millis(self.clock.now()))
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a waiting retry re-raises it, nobody else must
            raise
        finally:
            del self._in_flight[key]

    # Tasks

    async def create_task(self, request: TaskCreate) -> Task:
        return await self.tasks.create(request)

    async def report_progress(self, request: TaskProgress) -> Task:
        return await self.tasks.report_progress(request)

    async def complete_task(
        self, task_id: str, result: Any = None, message: str | None = None
    ) -> Task:
        return await self.tasks.finish(
            task_id, TaskStatus.COMPLETED, result=result, message=message
        )

    async def fail_task(self, task_id: str, error: str) -> Task:
        return await self.tasks.finish(task_id, TaskStatus.FAILED, error=error)

    async def cancel_task(self, task_id: str, reason: str | None = None) -> Task:
        return await self.tasks.finish(task_id, TaskStatus.CANCELLED, message=reason)

    async def get_task(self, task_id: str, claims: Claims | None = None) -> Task:
        task = await self.tasks.get(task_id)
        if claims is not None and not _may_see_task(claims, task):
            raise NotifierError(ErrorCode.FORBIDDEN, f"task {task_id!r} is not visible to you")
        return task

    async def list_tasks(
        self, status: TaskStatus | None, project_id: str | None, claims: Claims | None = None
    ) -> list[Task]:
        statuses = frozenset({status}) if status else None
        projects = frozenset({project_id}) if project_id else None
        tasks = await self.tasks.list(statuses, projects)
        if claims is None:
            return tasks
        return [task for task in tasks if _may_see_task(claims, task)]

    # Inbox

    async def list_notifications(
        self, user_id: str, request: NotificationsList
    ) -> list[Notification]:
        return await self.inbox.list(user_id, request)

    async def mark_read(self, user_id: str, request: MarkRead) -> dict[str, Any]:
        return await self.inbox.mark_read(user_id, request)

    async def unread_count(self, user_id: str) -> int:
        return await self.inbox.unread_count(user_id)

    # Refresh

    @property
    def refresh_interval(self) -> float:
        return self._refresh.interval

    async def set_refresh_interval(self, seconds: float) -> float:
        """Restart the refresh timer with a new period and tell every client."""
        minimum = self.settings.refresh_min_interval_seconds
        if 0 < seconds < minimum:
            raise NotifierError(
                ErrorCode.INVALID_PAYLOAD,
                f"seconds: must be 0 (off) or at least {minimum:g}",
            )
        self._refresh.set_interval(float(seconds))
        await self._publisher.publish(
            BROADCAST_ROOM, "config.updated", {"refresh_interval": float(seconds)}
        )
        log.info("refresh_interval_changed", seconds=seconds)
        return float(seconds)

    async def _send_refresh(self) -> None:
        if self._publisher.emitter.user_connection_count() == 0:
            return
        await self._publisher.publish(
            BROADCAST_ROOM, "refresh", {"reason": "interval", "interval": self.refresh_interval}
        )

    # Rooms

    async def authorize_room(self, claims: Claims, room_name: str) -> Task | None:
        """May these claims join the room? Returns the task for a task room (state on subscribe)."""
        room = parse_room(room_name)
        if room.kind is RoomKind.USER and room.id != claims.sub:
            raise NotifierError(ErrorCode.FORBIDDEN, "you may not join another user's room")
        if room.kind is RoomKind.PROJECT and not claims.can_see_project(room.id):
            raise NotifierError(ErrorCode.FORBIDDEN, f"project {room.id!r} is not in your token")
        if room.kind is RoomKind.TASK:
            return await self.get_task(room.id, claims)
        return None

    async def replay(self, room: str, since: Position | None, up_to: int | None = None) -> Replay:
        return await replay_since(
            self._store, room, since, up_to, limit=self.settings.history_max_events
        )

    def status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "refresh_interval": self.refresh_interval,
            "server_time": millis(self.clock.now()),
        }

    # Housekeeping

    async def run_maintenance(self) -> None:
        """Drop finished tasks, old events and old notifications past their retention."""
        settings = self.settings
        now = self.clock.now()
        await self.tasks.forget_finished_before(millis(now - settings.task_retention_seconds))
        await self._store.trim_events(
            millis(now - settings.history_max_age_seconds), settings.history_max_events
        )
        await self._store.trim_notifications(
            millis(now - settings.inbox_max_age_seconds), settings.inbox_max_per_user
        )

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self.settings.maintenance_interval_seconds)
            try:
                await self.run_maintenance()
            except Exception:
                log.exception("maintenance_failed")

    # Threads

    def threadsafe(self) -> ThreadSafeNotifier:
        if self._loop is None:
            raise RuntimeError("the notifier is not started")
        return ThreadSafeNotifier(self, self._loop)


def _may_see_task(claims: Claims, task: Task) -> bool:
    return claims.can_publish or claims.can_see_project(task.project_id) or task.owner == claims.sub


class ThreadSafeNotifier:
    """Blocking calls for code running in other threads: each runs on the service's own loop.

    (Creating a fresh event loop per call, as hand-written versions do, delivers nothing: the
    sockets live on the service's loop.)
    """

    def __init__(self, notifier: Notifier, loop: asyncio.AbstractEventLoop, timeout: float = 10.0):
        self._notifier = notifier
        self._loop = loop
        self._timeout = timeout

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(self._timeout)

    def publish(self, room: str, type: str, data: dict[str, Any] | None = None) -> Envelope:
        request = PublishRequest(room=room, type=type, data=data or {})
        return self._run(self._notifier.publish(request))

    def notify(self, user_ids: list[str], title: str, body: str | None = None,
               data: dict[str, Any] | None = None) -> list[Notification]:
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
