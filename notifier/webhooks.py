"""Webhooks to the application, signed as the Standard Webhooks specification says.

Each delivery is a durable job (its id is the `webhook-id` header, so the receiver can drop
repeats), sent in order per user: a user's next one waits while one is being retried, with
exponential backoff and jitter. After the last attempt it is listed as failed and can be
replayed. The URL must be http(s); private, loopback and link-local addresses are refused
unless NOTIFIER_WEBHOOK_ALLOW_PRIVATE is set (checked at start, and again before sending,
each host's answer kept a minute, since DNS may change).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from standardwebhooks.webhooks import Webhook

from .clock import Clock, millis
from .destinations import Destinations, UnsafeURL
from .jobs import Retries
from .logs import get_logger
from .records import Job, JobState, Notification
from .store import Store

log = get_logger("notifier.service")

WEBHOOK = "webhook"


class Poster(Protocol):
    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """POST `body`; the status. Raises OSError or TimeoutError when it cannot be sent."""
        ...


class Webhooks:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        poster: Poster,
        *,
        url: str,
        secret: str,
        allow_private: bool,
        max_attempts: int,
        retry_base_seconds: float,
        retry_max_seconds: float,
    ) -> None:
        self._store = store
        self._clock = clock
        self._poster = poster
        self._url = url
        self._signer = Webhook(secret)
        self._destinations = Destinations(allow_private, ("http", "https"))
        self._retries = Retries(max_attempts, retry_base_seconds, retry_max_seconds)
        # Set by the service once its runner exists: look for due jobs at once.
        self.poke: Any = lambda: None
        # For the metrics.
        self.sent = 0
        self.retried = 0
        self.failed = 0

    async def enqueue(self, job_id: str, event_type: str, user_id: str, data: dict[str, Any]) -> None:
        """Queue one event for the application, in order with the user's others."""
        now = millis(self._clock.now())
        payload = {"type": event_type, "timestamp": now, "data": data}
        await self._store.add_jobs([Job(job_id, WEBHOOK, user_id, now, payload)])
        self.poke()

    async def escalate(self, notification: Notification, escalation: Job) -> None:
        await self.enqueue(
            f"{escalation.id}:webhook",
            "notification.unseen",
            notification.user_id,
            {"notification": notification.to_dict()},
        )

    async def send(self, job: Job) -> None:
        error = await self._deliver(job)
        if error is None:
            await self._store.finish_job(job.id, JobState.DONE)
            self.sent += 1
            return
        if await self._retries.after_failure(self._store, self._clock, job, error):
            self.failed += 1
            log.warning("webhook_failed", job=job.id, attempts=job.attempts + 1, error=error)
        else:
            self.retried += 1

    async def failures(self, limit: int) -> list[Job]:
        return await self._store.list_jobs(WEBHOOK, JobState.FAILED, limit)

    async def replay(self, job_id: str) -> bool:
        replayed = await self._store.replay_job(job_id, millis(self._clock.now()))
        if replayed:
            self.poke()
        return replayed

    async def _deliver(self, job: Job) -> str | None:
        """None once the receiver took it; else why not."""
        try:
            await self._destinations.check(self._url)
        except UnsafeURL as exc:
            return f"refused: {exc}; set NOTIFIER_WEBHOOK_ALLOW_PRIVATE=true to allow it"
        payload = job.payload
        sent_at = datetime.now(UTC)
        body = orjson.dumps(
            {
                "type": payload["type"],
                "timestamp": datetime.fromtimestamp(payload["timestamp"] / 1000, UTC).isoformat(),
                "data": payload["data"],
            }
        )
        headers = {
            "content-type": "application/json",
            "webhook-id": job.id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": self._signer.sign(job.id, sent_at, body.decode()),
        }
        try:
            status = await self._poster.post(self._url, body, headers)
        except (OSError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}"[:300]
        return None if 200 <= status < 300 else f"HTTP {status}"
