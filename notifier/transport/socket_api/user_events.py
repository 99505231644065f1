"""The end users' namespace (`/`): its events, their payload models and handlers."""

from __future__ import annotations

from ...clock import millis
from ...errors import ErrorCode, NotifierError
from ...models import (
    ActionChosen,
    ActionReport,
    AuthRefresh,
    InboxChange,
    InboxDelete,
    MarkRead,
    NoPayload,
    NotificationsList,
    PingRequest,
    Preferences,
    PresenceRequest,
    ReceiptReport,
    RefreshIntervalRequest,
    SubscribeRequest,
    TaskRef,
    UnsubscribeRequest,
)
from ...records import ReceiptKind
from ...wire import SocketConnection
from ..acks import Reply, claims_of
from .context import EventTable, SocketContext


async def subscribe(ctx: SocketContext, connection: SocketConnection, request: SubscribeRequest) -> Reply:
    return await ctx.rooms.subscribe(connection, request)


async def unsubscribe(ctx: SocketContext, connection: SocketConnection, request: UnsubscribeRequest) -> Reply:
    return await ctx.rooms.unsubscribe(connection, request)


async def ping(ctx: SocketContext, connection: SocketConnection, request: PingRequest) -> Reply:
    return {"server_time": millis(ctx.notifier.clock.now()), "echo": request.model_dump()}


async def task_get(ctx: SocketContext, connection: SocketConnection, request: TaskRef) -> Reply:
    task = await ctx.notifier.get_task(request.task_id, claims_of(connection))
    return {"task": task.to_dict()}


async def notifications_list(
    ctx: SocketContext, connection: SocketConnection, request: NotificationsList
) -> Reply:
    user_id = claims_of(connection).sub
    page = await ctx.notifier.inbox_page(user_id, request)
    counts = await ctx.notifier.inbox_counts(user_id)
    return {
        "notifications": [n.to_dict() for n in page.notifications],
        "next_cursor": None if page.cursor is None else str(page.cursor),
        "unread": counts["unread"],
        "counts": counts,
    }


async def notifications_counts(ctx: SocketContext, connection: SocketConnection, request: NoPayload) -> Reply:
    return {"counts": await ctx.notifier.inbox_counts(claims_of(connection).sub)}


async def notifications_change(
    ctx: SocketContext, connection: SocketConnection, request: InboxChange
) -> Reply:
    return await ctx.notifier.change_inbox(claims_of(connection).sub, request, connection.sid)


async def notifications_delete(
    ctx: SocketContext, connection: SocketConnection, request: InboxDelete
) -> Reply:
    return await ctx.notifier.delete_from_inbox(claims_of(connection).sub, request)


async def notifications_action(
    ctx: SocketContext, connection: SocketConnection, request: ActionChosen
) -> Reply:
    return await ctx.notifier.choose_action(claims_of(connection).sub, request, connection.sid)


async def notifications_mark_read(
    ctx: SocketContext, connection: SocketConnection, request: MarkRead
) -> Reply:
    return await ctx.notifier.mark_read(claims_of(connection).sub, request, connection.sid)


async def _receipts(
    ctx: SocketContext,
    connection: SocketConnection,
    kind: ReceiptKind,
    ids: list[str],
    action: str | None = None,
) -> Reply:
    """The device is the connection: one receipt per connection that reports it."""
    user_id = claims_of(connection).sub
    return {"recorded": await ctx.notifier.record_receipts(user_id, kind, ids, connection.sid, action)}


async def notifications_delivered(
    ctx: SocketContext, connection: SocketConnection, request: ReceiptReport
) -> Reply:
    return await _receipts(ctx, connection, ReceiptKind.DELIVERED, request.ids)


async def notifications_seen(
    ctx: SocketContext, connection: SocketConnection, request: ReceiptReport
) -> Reply:
    return await _receipts(ctx, connection, ReceiptKind.SEEN, request.ids)


async def notifications_actioned(
    ctx: SocketContext, connection: SocketConnection, request: ActionReport
) -> Reply:
    return await _receipts(ctx, connection, ReceiptKind.ACTIONED, [request.id], request.action)


async def preferences_get(ctx: SocketContext, connection: SocketConnection, request: NoPayload) -> Reply:
    return {"preferences": (await ctx.notifier.preferences(claims_of(connection).sub)).model_dump()}


async def preferences_set(ctx: SocketContext, connection: SocketConnection, request: Preferences) -> Reply:
    saved = await ctx.notifier.set_preferences(claims_of(connection).sub, request)
    return {"preferences": saved.model_dump()}


async def set_refresh_interval(
    ctx: SocketContext, connection: SocketConnection, request: RefreshIntervalRequest
) -> Reply:
    if not claims_of(connection).is_admin:
        raise NotifierError(ErrorCode.FORBIDDEN, "only admins may change the refresh interval")
    seconds = await ctx.notifier.set_refresh_interval(request.seconds)
    return {"refresh_interval": seconds}


# Both namespaces


async def auth_refresh(ctx: SocketContext, connection: SocketConnection, request: AuthRefresh) -> Reply:
    async with ctx.rooms.join_lock(connection):  # no subscribe halfway through a renewal
        return await ctx.credentials.refresh(connection, request.token)


async def presence_get(ctx: SocketContext, connection: SocketConnection, request: PresenceRequest) -> Reply:
    await ctx.notifier.authorize_presence(claims_of(connection), request.room)
    return {"room": request.room, "users": await ctx.notifier.presence.members(request.room)}


async def presence_stats(ctx: SocketContext, connection: SocketConnection, request: PresenceRequest) -> Reply:
    await ctx.notifier.authorize_presence(claims_of(connection), request.room)
    return {"room": request.room, **await ctx.notifier.presence.stats(request.room)}


USER_EVENTS: EventTable = {
    "subscribe": (SubscribeRequest, subscribe),
    "unsubscribe": (UnsubscribeRequest, unsubscribe),
    "ping": (PingRequest, ping),
    "task.get": (TaskRef, task_get),
    "notifications.list": (NotificationsList, notifications_list),
    "notifications.mark_read": (MarkRead, notifications_mark_read),
    "notifications.counts": (NoPayload, notifications_counts),
    "notifications.change": (InboxChange, notifications_change),
    "notifications.delete": (InboxDelete, notifications_delete),
    "notifications.action": (ActionChosen, notifications_action),
    "notifications.delivered": (ReceiptReport, notifications_delivered),
    "notifications.seen": (ReceiptReport, notifications_seen),
    "notifications.actioned": (ActionReport, notifications_actioned),
    "preferences.get": (NoPayload, preferences_get),
    "preferences.set": (Preferences, preferences_set),
    "config.set_refresh_interval": (RefreshIntervalRequest, set_refresh_interval),
    "auth.refresh": (AuthRefresh, auth_refresh),
    "presence.get": (PresenceRequest, presence_get),
    "presence.stats": (PresenceRequest, presence_stats),
}
