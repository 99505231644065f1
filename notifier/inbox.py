"""Per-user inboxes: stored before they are sent, unread counts pushed to every device."""

from __future__ import annotations

from typing import Any

from .clock import Clock, millis
from .models import MarkRead, NotificationsList, NotifyRequest
from .publisher import Publisher
from .records import Notification, new_id
from .rooms import room_for_user
from .store import Store


class Inbox:
    def __init__(self, store: Store, publisher: Publisher, clock: Clock) -> None:
        self._store = store
        self._publisher = publisher
        self._clock = clock

    async def notify(self, request: NotifyRequest) -> list[Notification]:
        now = millis(self._clock.now())
        recipients = list(dict.fromkeys(request.user_ids))
        notifications = [
            Notification(
                id=new_id(), user_id=user_id, title=request.title, body=request.body,
                data=dict(request.data), created_at=now,
            )
            for user_id in recipients
        ]
        # Stored first: a recipient who is offline now finds it in the inbox later.
        await self._store.add_notifications(notifications)
        for notification in notifications:
            room = room_for_user(notification.user_id)
            await self._publisher.publish(room, "notification", notification.to_dict())
            await self._push_unread(notification.user_id)
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
            await self._publisher.publish(
                room_for_user(user_id), "notifications.unread", {"count": unread}
            )
        return {"marked": changed, "unchanged": unchanged, "unread": unread}

    async def unread_count(self, user_id: str) -> int:
        return await self._store.unread_count(user_id)

    async def _push_unread(self, user_id: str) -> None:
        count = await self._store.unread_count(user_id)
        await self._publisher.publish(room_for_user(user_id), "notifications.unread", {"count": count})
