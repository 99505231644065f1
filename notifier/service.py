"""The one service layer. Socket handlers, REST handlers and in-process callers all come here."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import orjson

from . import __version__
from .auth import Claims
from .broker import Broker, Delivery, Guard, Member, NewEvent
from .channels import open_channels
from .clock import Clock, SystemClock, millis
from .email_digest import EMAIL
from .errors import ErrorCode, NotifierError
from .escalation import ESCALATION, Escalations, escalation_id, user_of
from .health import Health
from .history import Replay, SharedReplays
from .idempotency import Idempotency
from .inbox import Inbox
from .inbox_states import EXPIRE, WAKE
from .jobs import JobRunner
from .logs import get_logger
from .maintenance import Maintenance
from .metrics import Tally
from .models import (
    ActionChosen,
    InboxChange,
    InboxDelete,
    MarkRead,
    NotificationsList,
    NotificationUpdate,
    NotifyRequest,
    Position,
    Preferences,
    PublishRequest,
    TaskCreate,
    TaskProgress,
)
from .outbox import OutboxRelay
from .presence import Presence, check_tracked
from .receipts import Receipts
from .records import (
    Envelope,
    InboxPage,
    Job,
    Notification,
    ReceiptKind,
    StreamPosition,
    Task,
    TaskStatus,
    derived_id,
    new_id,
)
from .refresh import RefreshTimer
from .revocations import SIGNAL as REVOKE_SIGNAL
from .revocations import Revocations
from .rooms import (
    ALL_PROJECTS_ROOM,
    BROADCAST_ROOM,
    RoomKind,
    parse_room,
    presence_feed,
    room_for_project,
    room_for_task,
    room_for_user,
)
from .settings import Settings
from .store import OutboxDatabase, Store
from .tasks import TaskBook
from .threadsafe import ThreadSafeNotifier
from .webhooks import WEBHOOK, Poster
from .webpush import PUSH

log = get_logger("notifier.service")
T = TypeVar("T")

_REFRESH_SETTING = "refresh_interval"


class Notifier:
    """Publish events, notify users, run tasks, keep inboxes and the refresh timer.

    Reach it in an aiohttp handler as `request.app[NOTIFIER]`; from a thread, use `.threadsafe()`.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        broker: Broker,
        health: Health,
        clock: Clock | None = None,
        poster: Poster | None = None,
    ) -> None:
        """`poster` sends webhooks (the application gives its HTTP client; without one,
        webhooks stay queued)."""
        self.settings = settings
        self.clock = clock or SystemClock()
        self.health = health
        self.store = store
        self.broker = broker
        # For the metrics: events appended to room histories by this process, by type.
        self.published = Tally()
        self.tasks = TaskBook(
            store, self._announce_task, self._publish_one, self.clock, settings.progress_max_per_second
        )
        self.inbox = Inbox(store, self._publish, self.clock)
        # The outbox: in the application's database when it is named, else in the store's.
        self._outbox_database = OutboxDatabase(settings.outbox_url) if settings.outbox_url else None
        self.outbox = OutboxRelay(self._outbox_database or store, self._publish)
        self.receipts = Receipts(store, self.clock)
        channels = open_channels(settings, store, self.clock, poster)
        self.webhooks, self.push, self.email = channels.webhooks, channels.push, channels.email
        self.escalations = Escalations(store, self.clock, channels.by_name())
        # Set by the application to "the event loop is late" (metrics): jobs then wait.
        self.loop_is_busy: Callable[[], bool] = lambda: False

        def runner(kind: str, handle: Callable[[Job], Awaitable[None]], **options: Any) -> JobRunner:
            lease = settings.job_lease_seconds
            busy = lambda: self.loop_is_busy()  # noqa: E731 - read when called: set after this
            return JobRunner(store, kind, handle, self.clock, lease_seconds=lease, busy=busy, **options)

        states = self.inbox.states
        self._jobs = [
            runner(ESCALATION, self.escalations.run, serial=user_of),
            runner(WAKE, states.wake),
            runner(EXPIRE, states.expire),
        ]
        if self.webhooks is not None:
            webhook_runner = runner(WEBHOOK, self.webhooks.send)
            self.webhooks.poke = webhook_runner.poke
            self._jobs.append(webhook_runner)
        if self.email is not None:
            self._jobs.append(runner(EMAIL, self.email.send))
        if self.push is not None:
            push_runner = runner(PUSH, self.push.send)
            self.push.poke = push_runner.poke
            self._jobs.append(push_runner)
        self.presence = Presence(
            broker.presence(
                grace_seconds=settings.presence_grace_seconds, ttl_seconds=settings.presence_ttl_seconds
            ),
            self._announce_presence,
            ttl_seconds=settings.presence_ttl_seconds,
        )
        self.revocations = Revocations(
            store, broker, self.clock, settings.revocation_seconds, settings.jwt_leeway_seconds
        )
        self._replays = SharedReplays(broker, settings.history_max_events)
        self._refresh = RefreshTimer(self.clock, settings.refresh_interval_seconds, self._send_refresh)
        self._transport: Transport = _NoTransport()
        self._maintenance = Maintenance(settings, self.tasks, broker, store, self.clock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.idempotency = Idempotency(store, self.clock)
        self._background: set[asyncio.Task[None]] = set()
        self.delivery_failures = 0
        self.started_at = time.time()

    def attach(self, transport: Transport) -> None:
        """Connect the service to the transport that holds this process's connections."""
        self._transport = transport

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.store.open()
        await self.broker.start(self)
        await self.revocations.load()
        self.presence.start()
        saved = await self.store.load_setting(_REFRESH_SETTING)
        if saved is not None:
            value = orjson.loads(saved)
            self._refresh.set(float(value["interval"]), float(value["anchor"]))
        self._refresh.start()
        self._maintenance.start()
        self.inbox.redelivery.start()
        if self._outbox_database is not None:
            await self._outbox_database.open()
            self.outbox.start()
        elif self.store.shared:  # PostgreSQL: applications may publish in their transactions
            self.outbox.start()
        for runner in self._jobs:
            runner.start()

    async def stop(self) -> None:
        await self._refresh.stop()
        await self.presence.stop()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._maintenance.stop()
        await self.inbox.redelivery.stop()
        await self.outbox.stop()
        if self._outbox_database is not None:
            await self._outbox_database.close()
        for runner in self._jobs:
            await runner.stop()
        await self.receipts.close()
        with contextlib.suppress(NotifierError):
            await self.tasks.close()
        await self.broker.stop()
        await self.store.close()

    # The broker's view of this process (broker.Node)

    def deliver(self, delivery: Delivery) -> None:
        """Every event, from whichever process published it, passes here in offset order.

        This runs inside the broker's delivery (a commit, a subscription's reader): it never
        raises into it. A failure is logged once and the next event is delivered as usual."""
        try:
            if delivery.type == "config.updated" and delivery.room == BROADCAST_ROOM:
                envelope = delivery.envelope
                interval = envelope["data"].get("refresh_interval")
                if isinstance(interval, (int, float)):
                    self._refresh.set(float(interval), envelope["ts"] / 1000)
            self._transport.deliver(delivery)
        except Exception:
            self.delivery_failures += 1
            if self.delivery_failures == 1:
                log.exception(
                    "delivery_failed", room=delivery.room, detail="further failures are counted only"
                )

    def lost(self, room: str, reason: str) -> None:
        log.warning(
            "room_history_lost",
            room=room,
            reason=reason,
            detail="its connections here reconnect and are told recovered: false",
        )
        self._transport.drop_members(room, reason)

    def describe(self) -> dict[str, Any]:
        """What this process tells the cluster about itself (node heartbeats)."""
        return {"user_connections": self._transport.user_connection_count()}

    def signal(self, kind: str, data: dict[str, Any]) -> None:
        if kind == REVOKE_SIGNAL:
            self.revocations.received(data)

    def signals_missed(self) -> None:
        task = asyncio.get_running_loop().create_task(self._reload_revocations())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reload_revocations(self) -> None:
        try:
            await self.revocations.reload()
        except NotifierError as exc:
            log.warning("revocations_reload_failed", detail=exc.message)

    async def follow(self, room: str) -> None:
        """A connection here is joining `room` (its first here): before its history is read."""
        await self.broker.follow(room)

    def unfollow(self, room: str) -> None:
        """The last connection here left `room`."""
        self.broker.unfollow(room)

    def observe(self, room: str, position: StreamPosition) -> None:
        """A connection here joined `room` at `position`: where delivery must stand."""
        self.broker.observe(room, position)

    # Publishing

    async def _publish(self, events: Sequence[NewEvent], guard: Guard | None = None) -> list[Envelope] | None:
        """Every event the service sends passes here: appended to its room's history."""
        envelopes: list[Envelope] | None = await self.broker.publish(events, guard)
        if envelopes is not None:  # None: the guard found a newer state sent already
            published = self.published
            for event in events:
                published.add(event.type)
        return envelopes

    async def _publish_one(
        self, room: str, event_type: str, data: dict[str, Any], event_id: str | None = None
    ) -> Envelope:
        # A given id is an idempotency key's: the event is appended at most once under it.
        event = NewEvent(
            room, event_type, data, event_id or new_id(), millis(self.clock.now()), once=event_id is not None
        )
        envelopes = await self._publish([event])
        assert envelopes is not None
        return envelopes[0]

    async def _announce_task(self, task: Task, event_type: str) -> None:
        """A task event, to the task's room and its project's, unless a newer one went first."""
        now, data = millis(self.clock.now()), task.to_dict()
        events = [
            NewEvent(room_for_task(task.id), event_type, data, new_id(), now),
            NewEvent(room_for_project(task.project_id), event_type, data, new_id(), now),
        ]
        await self._publish(events, Guard(f"task:{task.id}", task.version))

    @property
    def follows_users_online(self) -> bool:
        """Whether users' presence in their own rooms is kept: for `user.online` and
        `user.offline` webhooks (after the presence grace, cluster-wide)."""
        return self.webhooks is not None

    async def _announce_presence(self, event_type: str, members: Sequence[Member]) -> None:
        now = millis(self.clock.now())
        in_rooms = [(room, user) for room, user in members if room != room_for_user(user)]
        online = [user for room, user in members if room == room_for_user(user)]
        if online and self.webhooks is not None:
            change = "user.online" if event_type == "presence.joined" else "user.offline"
            for user in online:
                await self.webhooks.enqueue(f"{change}:{new_id()}", change, user, {"user_id": user})
        if not in_rooms:
            return
        await self.broker.announce(
            [
                (presence_feed(room), NewEvent(room, event_type, {"user_id": user}, new_id(), now))
                for room, user in in_rooms
            ]
        )
        for _ in in_rooms:
            self.published.add(event_type)

    async def publish(self, request: PublishRequest, key: str | None = None) -> Envelope:
        """Send `{type, data}` to a room (`user:<id>`, `project:<id>`, `task:<id>` or `*`)."""
        parse_room(request.room)
        if request.room == ALL_PROJECTS_ROOM:
            raise NotifierError(
                ErrorCode.INVALID_PAYLOAD,
                "room: project:* follows every project; publish to one project's room",
            )
        event_id = None if key is None else _derived_event_id(key)
        return await self._publish_one(request.room, request.type, dict(request.data), event_id)

    async def notify(self, request: NotifyRequest, key: str | None = None) -> list[Notification]:
        """Store a notification for each user, then push it and their unread count to them.
        With `escalate`, it goes out on other channels if nobody has seen it in time."""
        if request.escalate is not None:
            missing = [c for c in request.escalate.channels if c not in self.escalations.channels]
            if missing:
                raise NotifierError(
                    ErrorCode.INVALID_PAYLOAD,
                    f"escalate.channels: {', '.join(missing)} is not configured on this server "
                    "(docs/channels.md)",
                )
        return await self.inbox.notify(request, key)

    async def once(
        self, key: str | None, action: Callable[[], Awaitable[dict[str, Any]]], fingerprint: str = ""
    ) -> dict[str, Any]:
        """Run `action` once per idempotency key; a retry gets the first answer back (the
        same key with another request: IDEMPOTENCY_CONFLICT)."""
        return await self.idempotency.once(key, action, fingerprint)

    # Tasks

    async def create_task(self, request: TaskCreate) -> Task:
        return await self.tasks.create(request)

    async def report_progress(self, request: TaskProgress) -> Task:
        return await self.tasks.report_progress(request)

    async def complete_task(self, task_id: str, result: Any = None, message: str | None = None) -> Task:
        return await self.tasks.finish(task_id, TaskStatus.COMPLETED, result=result, message=message)

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

    async def list_notifications(self, user_id: str, request: NotificationsList) -> list[Notification]:
        return await self.inbox.list(user_id, request)

    async def mark_read(self, user_id: str, request: MarkRead, device: str = "") -> dict[str, Any]:
        """Also a `read` receipt for each notification that changed (which cancels its
        escalation), and a `notification.read` webhook for each."""
        answer = await self.inbox.mark_read(user_id, request)
        changed: list[str] = answer["marked"]
        if changed:
            await self.receipts.record(user_id, ReceiptKind.READ, changed, device)
            if self.webhooks is not None:
                for notification_id in changed:
                    await self.webhooks.enqueue(
                        f"{notification_id}:read",
                        "notification.read",
                        user_id,
                        {"notification_id": notification_id, "user_id": user_id},
                    )
        return answer

    async def record_receipts(
        self, user_id: str, kind: ReceiptKind, ids: list[str], device: str, action: str | None = None
    ) -> int:
        """Receipts of the user's own notifications; how many were new."""
        return await self.receipts.record(user_id, kind, ids, device, action)

    async def receipts_of(self, notification_id: str) -> dict[str, Any]:
        """Every receipt of a notification, and where its escalation stands."""
        receipts = await self.receipts.of(notification_id)
        jobs = await self.store.get_jobs([escalation_id(notification_id)])
        escalation = jobs[0].to_dict() if jobs else None
        if escalation is not None:
            escalation.pop("payload")
        return {
            "notification_id": notification_id,
            "receipts": [r.to_dict() for r in receipts],
            "escalation": escalation,
        }

    async def preferences(self, user_id: str) -> Preferences:
        saved = await self.store.load_preferences(user_id)
        return Preferences.model_validate(saved) if saved is not None else Preferences()

    async def set_preferences(self, user_id: str, preferences: Preferences) -> Preferences:
        await self.store.save_preferences(user_id, preferences.model_dump())
        return preferences

    async def unread_count(self, user_id: str) -> int:
        return await self.inbox.unread_count(user_id)

    async def inbox_page(self, user_id: str, request: NotificationsList) -> InboxPage:
        """A page of the user's inbox, newest first, by state, category, tag, severity or
        group; `cursor` continues it, stable while new notifications arrive."""
        return await self.inbox.states.page(user_id, request)

    async def inbox_counts(self, user_id: str) -> dict[str, Any]:
        return await self.inbox.states.counts(user_id)

    async def change_inbox(self, user_id: str, request: InboxChange, device: str = "") -> dict[str, Any]:
        """Read / seen / archived / snoozed for the user's notifications, by ids or filter:
        one statement, one event to every device."""
        answer = await self.inbox.states.change(user_id, request)
        changed: list[str] = answer["changed"]
        if changed and request.set.read:
            await self.receipts.record(user_id, ReceiptKind.READ, changed, device)
        elif changed and request.set.seen:
            await self.receipts.record(user_id, ReceiptKind.SEEN, changed, device)
        return answer

    async def delete_from_inbox(self, user_id: str, request: InboxDelete) -> dict[str, Any]:
        return await self.inbox.states.delete(user_id, request)

    async def update_notification(self, notification_id: str, request: NotificationUpdate) -> Notification:
        """A publisher changes what a sent notification says: every device shows it."""
        return await self.inbox.states.update(notification_id, request)

    async def recall_notification(self, notification_id: str) -> dict[str, Any]:
        """A publisher takes a notification back: it leaves every device and the inbox."""
        return await self.inbox.states.recall(notification_id)

    async def choose_action(self, user_id: str, request: ActionChosen, device: str = "") -> dict[str, Any]:
        """The user chose one of the notification's actions: recorded (an `actioned` receipt),
        and the publisher told (webhook `notification.actioned`, with the action's event)."""
        notification = await self.store.get_notification(request.id)
        if notification is None or notification.user_id != user_id:
            raise NotifierError(ErrorCode.NOT_FOUND, "no notification of yours has this id")
        action = next((a for a in notification.actions if a["id"] == request.action), None)
        if action is None:
            raise NotifierError(
                ErrorCode.INVALID_PAYLOAD, f"action: this notification has no action {request.action!r}"
            )
        recorded = await self.receipts.record(
            user_id, ReceiptKind.ACTIONED, [notification.id], device, request.action
        )
        if recorded and self.webhooks is not None:
            await self.webhooks.enqueue(
                f"{notification.id}:actioned:{request.action}",
                "notification.actioned",
                user_id,
                {"notification_id": notification.id, "user_id": user_id, "action": action},
            )
        return {"recorded": recorded, "action": action}

    # Refresh

    @property
    def refresh_interval(self) -> float:
        return self._refresh.interval

    async def set_refresh_interval(self, seconds: float) -> float:
        """Restart the refresh timer with a new period, on every process, and tell every client."""
        minimum = self.settings.refresh_min_interval_seconds
        if 0 < seconds < minimum:
            raise NotifierError(
                ErrorCode.INVALID_PAYLOAD,
                f"seconds: must be 0 (off) or at least {minimum:g}",
            )
        now = millis(self.clock.now())
        await self.store.save_setting(
            _REFRESH_SETTING, orjson.dumps({"interval": float(seconds), "anchor": now / 1000}).decode()
        )
        # Every process (this one included) restarts its timer when this event reaches it.
        await self._publish(
            [NewEvent(BROADCAST_ROOM, "config.updated", {"refresh_interval": float(seconds)}, new_id(), now)]
        )
        log.info("refresh_interval_changed", seconds=seconds)
        return float(seconds)

    async def _send_refresh(self, tick_id: str) -> None:
        if not await self.broker.claim(f"refresh:{tick_id}", max(self.refresh_interval, 1.0)):
            return  # another process sends this tick
        if (
            self._transport.user_connection_count() == 0
            and self.broker.cluster().get("user_connections", 0) == 0
        ):
            return
        await self._publish_one(
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

    async def authorize_presence(self, claims: Claims, room_name: str) -> None:
        """Who is in a room: whoever may join it, and publishers and admins."""
        check_tracked(room_name)
        if not claims.can_publish:
            await self.authorize_room(claims, room_name)

    async def revoke_user(self, user_id: str) -> dict[str, Any]:
        return await self.revocations.revoke(user_id)

    async def replay(self, room: str, since: Position | None, up_to: int | None = None) -> Replay:
        return await self._replays.replay(room, since, up_to)

    def status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "refresh_interval": self.refresh_interval,
            "server_time": millis(self.clock.now()),
            "cluster": self.broker.cluster(),
        }

    # Housekeeping

    async def run_maintenance(self) -> None:
        """Drop finished tasks, old events, notifications and idempotency keys past retention."""
        await self._maintenance.run()

    # Threads

    def threadsafe(self) -> ThreadSafeNotifier:
        if self._loop is None:
            raise RuntimeError("the notifier is not started")
        return ThreadSafeNotifier(self, self._loop)


class Transport(Protocol):
    """The connections of this process, as the service reaches them."""

    def deliver(self, delivery: Delivery) -> None: ...

    def drop_members(self, room: str, reason: str) -> None: ...

    def user_connection_count(self) -> int: ...


class _NoTransport:
    def deliver(self, delivery: Delivery) -> None:
        pass

    def drop_members(self, room: str, reason: str) -> None:
        pass

    def user_connection_count(self) -> int:
        return 0


def _may_see_task(claims: Claims, task: Task) -> bool:
    return claims.can_publish or claims.can_see_project(task.project_id) or task.owner == claims.sub


def _derived_event_id(key: str) -> str:
    return derived_id(key, "publish")
