"""Escalation: a notification that no device of its user has seen in time goes out on other
channels, at most once.

Each escalation is a durable job, stored in the same transaction as its notification and due
`after_seconds` later. When it runs, a notification seen (or read, or acted on) anywhere is
cancelled; the user's preferences choose the channels for its category; during their quiet
hours it waits for their end, unless it is critical. Each channel's own delivery is a job with
an id derived from the escalation's, so a rerun after a crash queues nothing twice.
"""

from __future__ import annotations

from typing import Protocol

from .clock import Clock, millis
from .logs import get_logger
from .models import Escalate, Preferences
from .preferences import channels_for, quiet_until
from .records import Job, JobState, Notification
from .store import Store

log = get_logger("notifier.service")

ESCALATION = "escalation"


def escalation_id(notification_id: str) -> str:
    return f"{notification_id}:escalation"


def user_of(job: Job) -> str:
    """A user's escalations claimed together run one after another, in due order, so that
    what they queue (webhooks, in order per user) is queued in that order."""
    return str(job.payload["notification"]["user_id"])


def escalation_jobs(notifications: list[Notification], escalate: Escalate | None, now: int) -> list[Job]:
    if escalate is None:
        return []
    due = now + int(escalate.after_seconds * 1000)
    return [
        Job(
            escalation_id(n.id),
            ESCALATION,
            escalation_id(n.id),  # its own group: one held in quiet hours holds up no other
            due,
            {"notification": n.to_dict(), "channels": list(escalate.channels)},
        )
        for n in notifications
    ]


class Channel(Protocol):
    async def escalate(self, notification: Notification, escalation: Job) -> None:
        """Queue the notification's delivery on this channel (once per escalation id)."""


class Escalations:
    def __init__(self, store: Store, clock: Clock, channels: dict[str, Channel]) -> None:
        self._store = store
        self._clock = clock
        self.channels = channels
        # For the metrics, by outcome.
        self.sent = 0
        self.cancelled = 0
        self.held = 0

    async def run(self, job: Job) -> None:
        notification = Notification(**job.payload["notification"])
        if notification.id in await self._store.seen_notifications([notification.id]):
            await self._store.finish_job(job.id, JobState.CANCELLED, "seen before it was due")
            self.cancelled += 1
            return
        saved = await self._store.load_preferences(notification.user_id)
        preferences = Preferences.model_validate(saved) if saved is not None else None
        if not notification.critical:
            until = quiet_until(preferences, self._clock.now())
            if until is not None:
                await self._store.retry_job(job.id, millis(until), "quiet hours", attempted=False)
                self.held += 1
                return
        asked = channels_for(preferences, notification.category, job.payload["channels"])
        for name in asked:
            channel = self.channels.get(name)
            if channel is not None:  # one configured when it was sent, and no longer
                await channel.escalate(notification, job)
        await self._store.finish_job(job.id, JobState.DONE)
        self.sent += 1
        log.info("notification_escalated", notification=notification.id, channels=",".join(asked))
