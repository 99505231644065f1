"""The publishers' namespace (`/workers`): its events, their payload models and handlers.

Idempotency keys are scoped to the token's subject (`idempotency.scoped`), so one worker cannot
replay another's answers, whatever the subjects and keys.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pydantic import BaseModel

from ...idempotency import fingerprint_of, scoped
from ...models import (
    AuthRefresh,
    NotificationEdit,
    NotificationRef,
    NotificationUpdate,
    NotifyRequest,
    PingRequest,
    PresenceRequest,
    PublishRequest,
    TaskCancel,
    TaskComplete,
    TaskCreate,
    TaskFail,
    TaskProgress,
    TaskRef,
)
from ...wire import SocketConnection
from ..acks import Reply, claims_of
from .context import EventTable, SocketContext
from .user_events import auth_refresh, ping, presence_get, presence_stats, task_get


def scoped_key(connection: SocketConnection, key: str | None) -> str | None:
    return None if key is None else scoped(claims_of(connection).sub, key)


def _once(
    ctx: SocketContext,
    connection: SocketConnection,
    event: str,
    request: BaseModel,
    action: Callable[[], Awaitable[Reply]],
) -> Awaitable[Reply]:
    """`action` once per idempotency key; the key's fingerprint is the event and its payload."""
    key = scoped_key(connection, getattr(request, "idempotency_key", None))
    if key is None:
        return action()
    payload = request.model_dump(mode="json", exclude={"idempotency_key"})
    return ctx.notifier.once(key, action, fingerprint_of(event, payload))


async def publish(ctx: SocketContext, connection: SocketConnection, request: PublishRequest) -> Reply:
    key = scoped_key(connection, request.idempotency_key)

    async def run() -> Reply:
        envelope = await ctx.notifier.publish(request, key)
        return {
            "id": envelope["id"],
            "room": envelope["room"],
            "offset": envelope["offset"],
            "epoch": envelope["epoch"],
        }

    if key is None:  # the hot path of a busy worker: nothing to remember
        return await run()
    return await _once(ctx, connection, "publish", request, run)


async def notify(ctx: SocketContext, connection: SocketConnection, request: NotifyRequest) -> Reply:
    key = scoped_key(connection, request.idempotency_key)

    async def run() -> Reply:
        notifications = await ctx.notifier.notify(request, key)
        return {"notifications": [{"id": n.id, "user_id": n.user_id} for n in notifications]}

    return await _once(ctx, connection, "notify", request, run)


async def notification_update(
    ctx: SocketContext, connection: SocketConnection, request: NotificationEdit
) -> Reply:
    update = NotificationUpdate.model_validate(request.model_dump(exclude={"id"}, exclude_unset=True))
    return {"notification": (await ctx.notifier.update_notification(request.id, update)).to_dict()}


async def notification_recall(
    ctx: SocketContext, connection: SocketConnection, request: NotificationRef
) -> Reply:
    return await ctx.notifier.recall_notification(request.id)


async def task_create(ctx: SocketContext, connection: SocketConnection, request: TaskCreate) -> Reply:
    async def run() -> Reply:
        return {"task": (await ctx.notifier.create_task(request)).to_dict()}

    return await _once(ctx, connection, "task.create", request, run)


async def task_progress(ctx: SocketContext, connection: SocketConnection, request: TaskProgress) -> Reply:
    # Progress needs no key: a repeated value is accepted and coalesced away.
    return {"task": (await ctx.notifier.report_progress(request)).to_dict()}


async def task_complete(ctx: SocketContext, connection: SocketConnection, request: TaskComplete) -> Reply:
    async def run() -> Reply:
        task = await ctx.notifier.complete_task(request.task_id, request.result, request.message)
        return {"task": task.to_dict()}

    return await _once(ctx, connection, "task.complete", request, run)


async def task_fail(ctx: SocketContext, connection: SocketConnection, request: TaskFail) -> Reply:
    async def run() -> Reply:
        return {"task": (await ctx.notifier.fail_task(request.task_id, request.error)).to_dict()}

    return await _once(ctx, connection, "task.fail", request, run)


async def task_cancel(ctx: SocketContext, connection: SocketConnection, request: TaskCancel) -> Reply:
    async def run() -> Reply:
        task = await ctx.notifier.cancel_task(request.task_id, request.reason)
        return {"task": task.to_dict()}

    return await _once(ctx, connection, "task.cancel", request, run)


WORKER_EVENTS: EventTable = {
    "publish": (PublishRequest, publish),
    "notify": (NotifyRequest, notify),
    "notification.update": (NotificationEdit, notification_update),
    "notification.recall": (NotificationRef, notification_recall),
    "task.create": (TaskCreate, task_create),
    "task.progress": (TaskProgress, task_progress),
    "task.complete": (TaskComplete, task_complete),
    "task.fail": (TaskFail, task_fail),
    "task.cancel": (TaskCancel, task_cancel),
    "task.get": (TaskRef, task_get),
    "ping": (PingRequest, ping),
    "auth.refresh": (AuthRefresh, auth_refresh),
    "presence.get": (PresenceRequest, presence_get),
    "presence.stats": (PresenceRequest, presence_stats),
}
