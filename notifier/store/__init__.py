"""Durable data behind one small interface; the backend is chosen by URL scheme.

The store keeps what is the users' own: tasks, per-user inboxes, idempotency keys. Room
histories (bounded, replaceable) belong to the broker (`notifier.broker`). Every write method
returns only once what it wrote is durable; a failing backend raises STORE_UNAVAILABLE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ..errors import StartupError
from ..health import Health
from ..records import (
    InboxFilter,
    InboxPage,
    Job,
    JobState,
    Notification,
    PushSubscription,
    Receipt,
    Task,
    TaskStatus,
)
from .postgres_outbox import OutboxDatabase, OutboxEvent, Relay

ClaimState = Literal["new", "done", "pending"]


@dataclass(frozen=True, slots=True)
class Claim:
    """An idempotency key's state: `new` (yours to run), `done` (with the first answer), or
    `pending` (another request with the key is running)."""

    state: ClaimState
    result: dict[str, Any] | None = None


__all__ = ["Claim", "ClaimState", "OutboxDatabase", "OutboxEvent", "Relay", "Store", "open_store"]


class Store(Protocol):
    # True when several service processes share the store (so no process may trust a cache).
    shared: bool

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    # Tasks: written by compare-and-set on their version, so concurrent changes (from several
    # processes) never overwrite one another.
    async def insert_task(self, task: Task) -> bool:
        """Store a new task; False if the id is taken."""
        ...

    async def replace_task(self, task: Task, expected_version: int) -> bool:
        """Store `task` if the stored version is still `expected_version`."""
        ...

    async def get_task(self, task_id: str) -> Task | None: ...

    async def list_tasks(
        self, statuses: frozenset[TaskStatus] | None, project_ids: frozenset[str] | None
    ) -> list[Task]: ...

    async def delete_tasks_finished_before(self, ts: int) -> int: ...

    # Inboxes
    async def add_notifications(
        self, notifications: list[Notification], deliver_by: int, jobs: list[Job] | None = None
    ) -> None:
        """Store them; one whose id is already stored is left as it is (a retried request).

        Each is undelivered until `mark_delivered`: from `deliver_by` (ms) on, the redelivery
        sweep may claim it (the request that stored it had that long to deliver it). `jobs`
        (their escalations) are stored in the same transaction."""
        ...

    async def mark_delivered(self, ids: list[str]) -> None:
        """Their live events are in the broker's history: no sweep claims them again."""

    async def claim_undelivered(self, now: int, lease_until: int, limit: int) -> list[Notification]:
        """Up to `limit` undelivered notifications due by `now`, each claimed until
        `lease_until` (ms): another process claims it only once that passed, so the claimer
        that died is replaced and a live one is not raced."""
        ...

    async def list_notifications(
        self, user_id: str, limit: int, before: str | None, unread_only: bool
    ) -> list[Notification]: ...

    async def mark_read(self, user_id: str, ids: list[str] | None) -> list[str]:
        """Mark the user's own notifications read (all when ids is None); return the ids changed."""
        ...

    async def unread_count(self, user_id: str) -> int: ...

    async def unread_counts(self, user_ids: list[str]) -> dict[str, int]: ...

    # The inbox's states (read, seen, archived, snoozed), kept with exact counts.
    async def list_page(
        self, user_id: str, match: InboxFilter, limit: int, cursor: int | None, now: int
    ) -> InboxPage:
        """Newest first, after `cursor`; expired ones (`expires_at` <= now) left out."""
        ...

    async def change_notifications(
        self,
        user_id: str,
        ids: list[str] | None,
        match: InboxFilter | None,
        changes: dict[str, Any],
        now: int,
    ) -> list[str]:
        """Set read / seen / archived / snoozed_until on the user's notifications named by
        ids or matched by the filter; the ids that changed."""
        ...

    async def delete_notifications(
        self, user_id: str | None, ids: list[str] | None, match: InboxFilter | None, now: int
    ) -> list[tuple[str, str]]:
        """Delete them (by id alone when `user_id` is None); (id, user_id) of each deleted."""
        ...

    async def get_notification(self, notification_id: str) -> Notification | None: ...

    async def update_notification(self, notification_id: str, fields: dict[str, Any]) -> Notification | None:
        """Change its content (title, body, data, actions); None if there is no such one."""
        ...

    async def add_grouped(self, notification: Notification, deliver_by: int) -> Notification:
        """Store one with a `group_key`: joins the user's active entry of that group (count,
        latest items, unread again, first in the list) or starts it; the entry."""
        ...

    async def inbox_counts(self, user_id: str) -> dict[str, Any]:
        """{unread, unseen, categories: {name: unread}, severities: {name: unread}}, read from
        the counts the store keeps in every change's transaction."""
        ...

    async def recount(self, user_id: str) -> dict[str, Any]:
        """The same counts by a scan: what the kept ones must always equal (for tests)."""
        ...

    async def trim_notifications(self, older_than_ts: int, max_per_user: int) -> int: ...

    # Receipts: what happened to a notification on each device.
    async def add_receipts(self, receipts: list[Receipt]) -> list[tuple[Receipt, int]]:
        """Store those of the user's own notifications not stored already; each stored one
        with its notification's `created_at`."""
        ...

    async def list_receipts(self, notification_id: str) -> list[Receipt]: ...

    async def seen_notifications(self, ids: list[str]) -> set[str]:
        """Those of `ids` seen, read or actioned on some device."""
        ...

    # Jobs: work done once however many processes try (claimed with a lease, by kind); jobs of
    # one group are claimed one at a time, oldest first.
    async def add_jobs(self, jobs: list[Job]) -> None:
        """Store them; one whose id is stored already is left as it is."""

    async def claim_jobs(self, kind: str, now: int, lease_until: int, limit: int) -> list[Job]:
        """Pending jobs due by `now`, the oldest of each group, claimed until `lease_until`."""
        ...

    async def finish_job(self, job_id: str, state: JobState, error: str | None = None) -> None: ...

    async def retry_job(self, job_id: str, due_at: int, error: str | None, attempted: bool = True) -> None:
        """Due again at `due_at`; `attempted` counts one more attempt (a postponement does not)."""

    async def cancel_jobs(self, job_ids: list[str]) -> None:
        """Those still pending will not run."""

    async def get_jobs(self, job_ids: list[str]) -> list[Job]: ...

    async def list_jobs(self, kind: str, state: JobState, limit: int) -> list[Job]:
        """The newest first."""
        ...

    async def group_jobs(self, kind: str, group: str) -> list[Job]:
        """The pending jobs of a group, oldest first (the items of an e-mail digest)."""
        ...

    async def finish_jobs(self, job_ids: list[str], state: JobState) -> None: ...

    async def replay_job(self, job_id: str, now: int) -> bool:
        """A failed job runs again from its first attempt; False if there is no such failed job."""
        ...

    # Per-user preferences (channels per category, quiet hours).
    async def save_preferences(self, user_id: str, preferences: dict[str, Any]) -> None: ...

    async def load_preferences(self, user_id: str) -> dict[str, Any] | None: ...

    # Web Push subscriptions of a user's browsers (one per endpoint).
    async def add_push_subscription(self, subscription: PushSubscription) -> None:
        """Kept; an endpoint registered again (by whichever user) is replaced."""

    async def remove_push_subscription(self, endpoint: str, user_id: str | None = None) -> bool:
        """Forget it (only if it is `user_id`'s, when given); whether there was one."""
        ...

    async def push_subscriptions(self, user_id: str) -> list[PushSubscription]: ...

    # The transactional outbox (PostgreSQL): events applications published in their own
    # transactions.
    async def relay_outbox(self, relay: Relay, limit: int) -> int:
        """Hand the oldest committed outbox events to `relay` and remove the ones it returns,
        in one transaction, one process at a time; how many (0: none, or none here)."""
        ...

    async def wait_for_outbox(self, timeout: float) -> None:
        """Until something may have been published into the outbox, or `timeout`."""

    # Idempotency: a request retried after a lost answer is applied once.
    async def claim_idempotency_key(self, key: str, ts: int, stale_before: int) -> Claim:
        """Claim the key for a request about to run. A `pending` claim older than
        `stale_before` belongs to a process that died: it is taken over."""
        ...

    async def complete_idempotency_key(self, key: str, result: dict[str, Any], ts: int) -> None: ...

    async def release_idempotency_key(self, key: str) -> None:
        """The request failed: a retry may run it again."""

    async def trim_idempotency_keys(self, older_than_ts: int) -> int: ...

    # Settings changed at run time (the refresh interval), kept across restarts.
    async def load_setting(self, name: str) -> str | None: ...

    async def save_setting(self, name: str, value: str) -> None: ...

    # Revocations: tokens of the user issued up to `revoked_at` are refused until `until`.
    async def revoke_user(self, user_id: str, revoked_at: int, until: int) -> None:
        """Keep the revocation (times in ms); those that ended are forgotten."""

    async def revocations(self, now: int) -> dict[str, int]:
        """The revocations still in force: user id -> revoked_at (ms)."""
        ...


def open_store(
    url: str,
    health: Health,
    *,
    sqlite_synchronous: str = "NORMAL",
    variable: str = "NOTIFIER_STORE_URL",
    postgres_schema: str | None = None,
) -> Store:
    """`sqlite:///path/to/file.db`, `memory://` (tests; lost on restart) or `postgresql://...`.
    `variable`: the setting start-up errors name (the data directory's, for the default URL)."""
    if url == "memory://" or url.startswith("sqlite:///"):
        from .sqlite import SqliteStore
        from .sqlite_db import SqliteDatabase

        path = ":memory:" if url == "memory://" else url.removeprefix("sqlite:///")
        return SqliteStore(SqliteDatabase(path, health, synchronous=sqlite_synchronous, variable=variable))
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(url, health, schema=postgres_schema)
    raise StartupError(
        f"NOTIFIER_STORE_URL: unsupported URL {url!r}; use sqlite:///path, memory:// or "
        "postgresql://user@host/db"
    )
