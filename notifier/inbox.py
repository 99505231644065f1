"""Per-user inboxes: stored before they are sent (and then sent, now or by the redelivery
sweep), unread counts pushed to every device."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .broker import NewEvent
from .clock import Clock, millis
from .errors import ErrorCode, NotifierError
from .escalation import escalation_jobs
from .inbox_states import InboxStates, expire_job
from .logs import get_logger
from .models import InboxChange, InboxQuery, InboxSet, MarkRead, NotificationsList, NotifyRequest
from .records import Notification, derived_id, new_id
from .redelivery import DELIVERY_WINDOW_MS, Redelivery
from .rooms import room_for_user
from .store import Store

log = get_logger("notifier.service")

# What a failing broker answers: the notification stays stored, left to the sweep.
_BROKER_FAILURES = (ErrorCode.STORE_UNAVAILABLE, ErrorCode.UNAVAILABLE, ErrorCode.OUTCOME_UNKNOWN)


def _size(notification: Notification) -> tuple[str, ...]:
    return () if notification.group_count == 1 else (str(notification.group_count),)


Publish = Callable[[Sequence[NewEvent]], Awaitable[Any]]


class Inbox:
    def __init__(self, store: Store, publish: Publish, clock: Clock) -> None:
        self._store = store
        self._publish = publish
        self._clock = clock
        self.redelivery = Redelivery(store, self._redeliver, clock)
        self.states = InboxStates(store, publish, clock)
        # For the metrics: stored while the broker failed, left to the redelivery sweep.
        self.queued = 0

    async def notify(self, request: NotifyRequest, key: str | None = None) -> list[Notification]:
        """Store a notification per user, then push it and the user's unread count.

        Once stored, it is delivered: by this request, or, if the broker fails now, by the
        redelivery sweep (`redelivery.py`), so the answer is "stored" either way. With an
        idempotency `key`, the ids are derived from it: a retry stores nothing twice and its
        events carry the ids clients already dropped as seen.
        """
        now = millis(self._clock.now())
        recipients = list(dict.fromkeys(request.user_ids))
        notifications = [
            Notification(
                id=derived_id(key, user_id, "notification") if key else new_id(),
                user_id=user_id,
                title=request.title,
                body=request.body,
                data=dict(request.data),
                created_at=now,
                category=request.category,
                critical=request.critical,
                tags=list(request.tags),
                severity=request.severity,
                actions=[action.model_dump(exclude_none=True) for action in request.actions],
                group_key=request.group_key,
                expires_at=request.expires_at,
            )
            for user_id in recipients
        ]
        # Stored first: a recipient who is offline now finds it in the inbox later. Its
        # escalation and expiry (if any) exactly when it is.
        jobs = escalation_jobs(notifications, request.escalate, now)
        jobs += [expire_job(n) for n in notifications if n.expires_at is not None]
        if request.group_key is None:
            await self._store.add_notifications(notifications, now + DELIVERY_WINDOW_MS, jobs)
        else:
            # Each joins its user's entry of the group (one statement per user).
            notifications = [
                await self._store.add_grouped(n, now + DELIVERY_WINDOW_MS) for n in notifications
            ]
            if jobs:
                await self._store.add_jobs(jobs)
        try:
            await self._deliver(notifications, key)
        except NotifierError as exc:
            if exc.code not in _BROKER_FAILURES:
                raise
            self.queued += len(notifications)
            log.warning("notifications_queued", count=len(notifications), detail=exc.message)
            return notifications
        self.redelivery.delivered(notifications)
        return notifications

    async def _redeliver(self, notifications: list[Notification]) -> None:
        await self._deliver(notifications, None, once=True)

    async def _deliver(
        self, notifications: list[Notification], key: str | None, *, once: bool = False
    ) -> None:
        """Append each notification's event and its user's unread count to the user's room.

        The notification's event id derives from its own. It is appended at most once under
        it when the request has an idempotency key, and by the sweep (which may run twice). A
        request without a key leaves no such mark (Redis would keep one per notification for
        five minutes): if its append timed out and still ran, or its process died before
        marking it delivered, the sweep may append it again, under the same id, which clients
        drop (docs/recovery.md)."""
        now = millis(self._clock.now())
        unread = await self._store.unread_counts(list(dict.fromkeys(n.user_id for n in notifications)))
        events: list[NewEvent] = []
        for notification in notifications:
            room, user_id = room_for_user(notification.user_id), notification.user_id
            events.append(
                NewEvent(
                    room,
                    "notification",
                    notification.to_dict(),
                    # A group's entry is sent again as it grows: one event per size.
                    derived_id(notification.id, "event", *_size(notification)),
                    now,
                    once=once or key is not None,
                )
            )
            events.append(
                NewEvent(
                    room,
                    "notifications.unread",
                    {"count": unread[user_id]},
                    derived_id(key, user_id, "unread") if key else new_id(),
                    now,
                    once=key is not None,
                )
            )
        await self._publish(events)

    async def list(self, user_id: str, request: NotificationsList) -> list[Notification]:
        return (await self.states.page(user_id, request)).notifications

    async def mark_read(self, user_id: str, request: MarkRead) -> dict[str, Any]:
        """Only the user's own unread notifications change; every other id is reported back."""
        change = InboxChange(
            ids=None if request.all else request.ids,
            filter=InboxQuery(state="unread") if request.all else None,
            set=InboxSet(read=True),
        )
        answer = await self.states.change(user_id, change)
        changed: list[str] = answer["changed"]
        unchanged = sorted(set(request.ids or ()) - set(changed))
        return {"marked": changed, "unchanged": unchanged, "unread": answer["counts"]["unread"]}

    async def unread_count(self, user_id: str) -> int:
        return await self._store.unread_count(user_id)
