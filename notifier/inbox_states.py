"""The inbox after sending: states changed by users (read, seen, archived, snoozed), content
changed by publishers (update, recall), and what time does (a snooze ends, a notification
expires). Each change is one store statement and one event per user (into their room, so
every device sees it live and a reconnecting one gets it in its replay), followed by the
user's counts.

Events: `notifications.changed {ids, set}` (or `{filter, set}` for a change by filter),
`notifications.deleted {ids}`, `notification.updated {notification}`,
`notification.recalled {id}`, and `notifications.counts {unread, unseen, categories,
severities}` with `notifications.unread {count}` after each.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from typing import Any

from .broker import NewEvent
from .clock import Clock, millis
from .errors import ErrorCode, NotifierError
from .escalation import escalation_id
from .models import InboxChange, InboxDelete, InboxQuery, NotificationsList, NotificationUpdate
from .records import InboxFilter, InboxPage, Job, JobState, Notification, new_id
from .rooms import room_for_user
from .store import Store

Publish = Callable[[Sequence[NewEvent]], Awaitable[Any]]

WAKE = "inbox.wake"  # a snooze ends: back as unread
EXPIRE = "inbox.expire"  # expires_at: gone
# Ids listed in a change's event; a change of more says only its filter.
_IDS_IN_EVENTS = 1000


def filter_of(query: InboxQuery | None) -> InboxFilter | None:
    if query is None:
        return None
    return InboxFilter(**query.model_dump(include=set(InboxQuery.model_fields)))


def wake_job(notification_id: str, user_id: str, until: int) -> Job:
    payload = {"notification_id": notification_id, "user_id": user_id, "until": until}
    return Job(f"{notification_id}:wake:{until}", WAKE, f"{notification_id}:wake:{until}", until, payload)


def expire_job(notification: Notification) -> Job:
    assert notification.expires_at is not None
    payload = {"notification_id": notification.id, "user_id": notification.user_id}
    job_id = f"{notification.id}:expire"
    return Job(job_id, EXPIRE, job_id, notification.expires_at, payload)


class InboxStates:
    def __init__(self, store: Store, publish: Publish, clock: Clock) -> None:
        self._store = store
        self._publish = publish
        self._clock = clock

    def _now(self) -> int:
        return millis(self._clock.now())

    async def page(self, user_id: str, request: NotificationsList) -> InboxPage:
        match = filter_of(request)
        assert match is not None
        if request.unread_only:
            match = InboxFilter(**{**asdict(match), "state": "unread"})
        cursor = int(request.cursor) if request.cursor is not None else None
        if cursor is None and request.before is not None:
            return InboxPage(
                await self._store.list_notifications(
                    user_id, request.limit, request.before, request.unread_only
                ),
                None,
            )
        return await self._store.list_page(user_id, match, request.limit, cursor, self._now())

    async def counts(self, user_id: str) -> dict[str, Any]:
        return await self._store.inbox_counts(user_id)

    async def change(self, user_id: str, request: InboxChange) -> dict[str, Any]:
        changes = request.set.model_dump(exclude_unset=True)
        if changes.get("read"):
            changes.setdefault("seen", True)  # read implies seen
        until = changes.get("snoozed_until")
        if until is not None and until <= self._now():
            raise NotifierError(ErrorCode.INVALID_PAYLOAD, "set.snoozed_until: must be in the future")
        match = filter_of(request.filter)
        changed = await self._store.change_notifications(user_id, request.ids, match, changes, self._now())
        if changed and until is not None:
            await self._store.add_jobs([wake_job(n, user_id, until) for n in changed])
        if changed and (changes.get("seen") or changes.get("read")):
            await self._store.cancel_jobs([escalation_id(n) for n in changed])
        counts = await self._announce_change(user_id, changed, request.filter, changes)
        return {"changed": changed[:_IDS_IN_EVENTS], "count": len(changed), "counts": counts}

    async def delete(self, user_id: str, request: InboxDelete) -> dict[str, Any]:
        match = None
        if request.ids is None:  # by filter; by default, empty the archive
            match = filter_of(request.filter) or InboxFilter(state="archived")
        deleted = [
            n for n, _ in await self._store.delete_notifications(user_id, request.ids, match, self._now())
        ]
        counts = await self._announce(
            user_id, "notifications.deleted", deleted, {"ids": deleted[:_IDS_IN_EVENTS]}
        )
        return {"deleted": deleted[:_IDS_IN_EVENTS], "count": len(deleted), "counts": counts}

    async def update(self, notification_id: str, request: NotificationUpdate) -> Notification:
        fields = request.model_dump(exclude_unset=True)
        fields["updated_at"] = self._now()
        updated = await self._store.update_notification(notification_id, fields)
        if updated is None:
            raise NotifierError(ErrorCode.NOT_FOUND, "no notification has this id")
        await self._publish(
            [
                NewEvent(
                    room_for_user(updated.user_id),
                    "notification.updated",
                    {"notification": updated.to_dict()},
                    new_id(),
                    self._now(),
                )
            ]
        )
        return updated

    async def recall(self, notification_id: str) -> dict[str, Any]:
        deleted = await self._store.delete_notifications(None, [notification_id], None, self._now())
        if not deleted:
            raise NotifierError(ErrorCode.NOT_FOUND, "no notification has this id")
        ((_, user_id),) = deleted
        await self._store.cancel_jobs([escalation_id(notification_id)])
        await self._announce(user_id, "notification.recalled", [notification_id], {"id": notification_id})
        return {"recalled": notification_id, "user_id": user_id}

    # What time does (durable jobs: once, on whichever node claims them)

    async def wake(self, job: Job) -> None:
        payload = job.payload
        user_id, notification_id = payload["user_id"], payload["notification_id"]
        match = InboxFilter(state="snoozed", snoozed_until=payload["until"])  # unless snoozed again
        changes = {"snoozed_until": None, "read": False}
        changed = await self._store.change_notifications(
            user_id, [notification_id], match, changes, self._now()
        )
        if changed:
            await self._announce_change(user_id, changed, None, changes)
        await self._store.finish_job(job.id, JobState.DONE)

    async def expire(self, job: Job) -> None:
        payload = job.payload
        # Listing leaves expired ones out already; this removes the row and tells devices.
        deleted = await self._store.delete_notifications(None, [payload["notification_id"]], None, 0)
        if deleted:
            ids = [n for n, _ in deleted]
            await self._announce(payload["user_id"], "notifications.deleted", ids, {"ids": ids})
        await self._store.finish_job(job.id, JobState.DONE)

    # Events

    async def _announce_change(
        self, user_id: str, changed: list[str], query: InboxQuery | None, changes: dict[str, Any]
    ) -> dict[str, Any]:
        data: dict[str, Any] = {"set": changes}
        if query is not None and len(changed) > _IDS_IN_EVENTS:
            data["filter"] = query.model_dump(exclude_none=True)
        else:
            data["ids"] = changed
        return await self._announce(user_id, "notifications.changed", changed, data)

    async def _announce(
        self, user_id: str, event_type: str, changed: list[str], data: dict[str, Any]
    ) -> dict[str, Any]:
        """The change's event and the user's counts after it, in one append (nothing when
        nothing changed)."""
        counts = await self._store.inbox_counts(user_id)
        if not changed:
            return counts
        room, now = room_for_user(user_id), self._now()
        await self._publish(
            [
                NewEvent(room, event_type, data, new_id(), now),
                NewEvent(room, "notifications.counts", counts, new_id(), now),
                NewEvent(room, "notifications.unread", {"count": counts["unread"]}, new_id(), now),
            ]
        )
        return counts
