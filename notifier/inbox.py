"""Per-user inboxes: stored before they are sent, unread counts pushed to every device."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .broker import NewEvent
from .clock import Clock, millis
from .errors import ErrorCode, NotifierError
from .models import MarkRead, NotificationsList, NotifyRequest
from .records import Notification, derived_id, new_id
from .rooms import room_for_user
from .store import Store

Publish = Callable[[Sequence[NewEvent]], Awaitable[Any]]


class Inbox:
    def __init__(self, store: Store, publish: Publish, clock: Clock) -> None:
        self._store = store
        self._publish = publish
        self._clock = clock

    async def notify(self, request: NotifyRequest, key: str | None = None) -> list[Notification]:
        """Store a notification per user, then push it and the user's unread count.

        With an idempotency `key`, the ids are derived from it: a retry stores nothing twice
        and its events carry the ids clients already dropped as seen.
        """
        now = millis(self._clock.now())
        recipients = list(dict.fromkeys(request.user_ids))

        def id_for(user_id: str, kind: str) -> str:
            return derived_id(key, user_id, kind) if key else new_id()

        notifications = [
            Notification(
                id=id_for(user_id, "notification"),
                user_id=user_id,
                title=request.title,
                body=request.body,
                data=dict(request.data),
                created_at=now,
            )
            for user_id in recipients
        ]
        # Stored first: a recipient who is offline now finds it in the inbox later.
        await self._store.add_notifications(notifications)
        unread = await self._store.unread_counts(recipients)
        events: list[NewEvent] = []
        for notification in notifications:
            room, user_id = room_for_user(notification.user_id), notification.user_id
            once = key is not None  # derived ids: a retry appends neither event again
            events.append(
                NewEvent(room, "notification", notification.to_dict(), id_for(user_id, "event"), now, once)
            )
            events.append(
                NewEvent(
                    room,
                    "notifications.unread",
                    {"count": unread[user_id]},
                    id_for(user_id, "unread"),
                    now,
                    once,
                )
            )
        try:
            await self._publish(events)
        except NotifierError as exc:
            if exc.code is not ErrorCode.STORE_UNAVAILABLE:
                raise
            # Stored (in the inbox) but not delivered: "nothing was stored" would be untrue. A
            # retry with the same key stores nothing twice and delivers it.
            raise NotifierError(
                ErrorCode.OUTCOME_UNKNOWN,
                "stored in the inbox, but its live delivery failed: retry with the same idempotency "
                "key to deliver it (nothing is stored twice)",
            ) from exc
        return notifications

    async def list(self, user_id: str, request: NotificationsList) -> list[Notification]:
        return await self._store.list_notifications(
            user_id, request.limit, request.before, request.unread_only
        )

    async def mark_read(self, user_id: str, request: MarkRead) -> dict[str, Any]:
        """Only the user's own unread notifications change; every other id is reported back."""
        changed = await self._store.mark_read(user_id, None if request.all else request.ids)
        unchanged = sorted(set(request.ids or ()) - set(changed))
        unread = await self.unread_count(user_id)
        if changed:
            now = millis(self._clock.now())
            await self._publish(
                [NewEvent(room_for_user(user_id), "notifications.unread", {"count": unread}, new_id(), now)]
            )
        return {"marked": changed, "unchanged": unchanged, "unread": unread}

    async def unread_count(self, user_id: str) -> int:
        return await self._store.unread_count(user_id)
