"""Receipts, jobs, preferences and push subscriptions in the PostgreSQL store (mixed into
`PostgresStore`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from ..records import Job, JobState, PushSubscription, Receipt, ReceiptKind

T = TypeVar("T")

MIGRATION = """
CREATE TABLE IF NOT EXISTS notifier_receipts (
    notification_id text NOT NULL, kind text NOT NULL, device text NOT NULL,
    user_id text NOT NULL, at bigint NOT NULL, action text,
    PRIMARY KEY (notification_id, kind, device)
);
CREATE TABLE IF NOT EXISTS notifier_jobs (
    seq bigserial PRIMARY KEY, id text NOT NULL UNIQUE, kind text NOT NULL, grp text NOT NULL,
    state text NOT NULL, due_at bigint NOT NULL, attempts integer NOT NULL DEFAULT 0,
    payload jsonb NOT NULL, last_error text
);
CREATE INDEX IF NOT EXISTS notifier_jobs_due ON notifier_jobs (kind, due_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS notifier_jobs_group ON notifier_jobs (kind, grp, seq) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS notifier_preferences (user_id text PRIMARY KEY, body jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS notifier_push_subscriptions (
    endpoint text PRIMARY KEY, user_id text NOT NULL, p256dh text NOT NULL, auth text NOT NULL,
    created_at bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS notifier_push_subscriptions_user ON notifier_push_subscriptions (user_id);
"""

_JOB_COLUMNS = "id, kind, grp, state, due_at, attempts, payload, last_error"


def _job(row: asyncpg.Record) -> Job:
    return Job(
        row["id"],
        row["kind"],
        row["grp"],
        row["due_at"],
        row["payload"],
        row["attempts"],
        JobState(row["state"]),
        row["last_error"],
    )


def _receipt(row: asyncpg.Record) -> Receipt:
    kind = ReceiptKind(row["kind"])
    return Receipt(row["notification_id"], row["user_id"], kind, row["device"], row["at"], row["action"])


async def insert_jobs(db: asyncpg.Connection, jobs: list[Job]) -> None:
    await db.execute(
        "INSERT INTO notifier_jobs (id, kind, grp, state, due_at, attempts, payload) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], "
        "$6::integer[], $7::jsonb[]) ON CONFLICT (id) DO NOTHING",
        [j.id for j in jobs],
        [j.kind for j in jobs],
        [j.group for j in jobs],
        [j.state.value for j in jobs],
        [j.due_at for j in jobs],
        [j.attempts for j in jobs],
        [j.payload for j in jobs],
    )


class PostgresJobs:
    async def _run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        raise NotImplementedError  # PostgresStore's

    # Receipts

    async def add_receipts(self, receipts: list[Receipt]) -> list[tuple[Receipt, int]]:
        rows = await self._run(
            lambda db: db.fetch(
                "INSERT INTO notifier_receipts (notification_id, kind, device, user_id, at, action) "
                "SELECT n.id, r.kind, r.device, n.user_id, r.at, r.action FROM unnest("
                "$1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[]) "
                "AS r(id, user_id, kind, device, at, action) "
                "JOIN notifier_notifications n ON n.id = r.id AND n.user_id = r.user_id "
                "ON CONFLICT DO NOTHING RETURNING notification_id, kind, device, "
                "(SELECT created_at FROM notifier_notifications WHERE id = notification_id) AS created_at",
                [r.notification_id for r in receipts],
                [r.user_id for r in receipts],
                [r.kind.value for r in receipts],
                [r.device for r in receipts],
                [r.at for r in receipts],
                [r.action for r in receipts],
            )
        )
        created = {(row["notification_id"], row["kind"], row["device"]): row["created_at"] for row in rows}
        return [
            (r, int(created[(r.notification_id, r.kind.value, r.device)]))
            for r in receipts
            if (r.notification_id, r.kind.value, r.device) in created
        ]

    async def list_receipts(self, notification_id: str) -> list[Receipt]:
        rows = await self._run(
            lambda db: db.fetch(
                "SELECT notification_id, user_id, kind, device, at, action FROM notifier_receipts "
                "WHERE notification_id = $1 ORDER BY at, kind",
                notification_id,
            )
        )
        return [_receipt(row) for row in rows]

    async def seen_notifications(self, ids: list[str]) -> set[str]:
        rows = await self._run(
            lambda db: db.fetch(
                "SELECT DISTINCT notification_id FROM notifier_receipts WHERE notification_id = ANY($1) "
                "AND kind IN ('seen', 'read', 'actioned')",
                ids,
            )
        )
        return {row["notification_id"] for row in rows}

    # Jobs

    async def add_jobs(self, jobs: list[Job]) -> None:
        await self._run(lambda db: insert_jobs(db, jobs))

    async def claim_jobs(self, kind: str, now: int, lease_until: int, limit: int) -> list[Job]:
        rows = await self._run(
            lambda db: db.fetch(
                "UPDATE notifier_jobs SET due_at = $3 WHERE seq IN (SELECT j.seq FROM notifier_jobs j "
                "WHERE j.kind = $1 AND j.state = 'pending' AND j.due_at <= $2 AND NOT EXISTS ("
                " SELECT 1 FROM notifier_jobs e WHERE e.kind = j.kind AND e.grp = j.grp"
                " AND e.state = 'pending' AND e.seq < j.seq) "
                f"ORDER BY j.due_at LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING {_JOB_COLUMNS}",
                kind,
                now,
                lease_until,
                limit,
            )
        )
        return [_job(row) for row in rows]

    async def finish_job(self, job_id: str, state: JobState, error: str | None = None) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE notifier_jobs SET state = $2, last_error = $3 WHERE id = $1",
                job_id,
                state.value,
                error,
            )
        )

    async def retry_job(self, job_id: str, due_at: int, error: str | None, attempted: bool = True) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE notifier_jobs SET due_at = $2, last_error = $3, attempts = attempts + $4 "
                "WHERE id = $1 AND state = 'pending'",
                job_id,
                due_at,
                error,
                int(attempted),
            )
        )

    async def cancel_jobs(self, job_ids: list[str]) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE notifier_jobs SET state = 'cancelled' WHERE id = ANY($1) AND state = 'pending'",
                job_ids,
            )
        )

    async def get_jobs(self, job_ids: list[str]) -> list[Job]:
        rows = await self._run(
            lambda db: db.fetch(f"SELECT {_JOB_COLUMNS} FROM notifier_jobs WHERE id = ANY($1)", job_ids)
        )
        return [_job(row) for row in rows]

    async def group_jobs(self, kind: str, group: str) -> list[Job]:
        rows = await self._run(
            lambda db: db.fetch(
                f"SELECT {_JOB_COLUMNS} FROM notifier_jobs WHERE kind = $1 AND grp = $2 "
                "AND state = 'pending' ORDER BY seq",
                kind,
                group,
            )
        )
        return [_job(row) for row in rows]

    async def finish_jobs(self, job_ids: list[str], state: JobState) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE notifier_jobs SET state = $2 WHERE id = ANY($1)", job_ids, state.value
            )
        )

    async def list_jobs(self, kind: str, state: JobState, limit: int) -> list[Job]:
        rows = await self._run(
            lambda db: db.fetch(
                f"SELECT {_JOB_COLUMNS} FROM notifier_jobs WHERE kind = $1 AND state = $2 "
                "ORDER BY seq DESC LIMIT $3",
                kind,
                state.value,
                limit,
            )
        )
        return [_job(row) for row in rows]

    async def replay_job(self, job_id: str, now: int) -> bool:
        changed = await self._run(
            lambda db: db.fetchval(
                "UPDATE notifier_jobs SET state = 'pending', due_at = $2, attempts = 0 "
                "WHERE id = $1 AND state = 'failed' RETURNING 1",
                job_id,
                now,
            )
        )
        return changed is not None

    # Preferences

    async def save_preferences(self, user_id: str, preferences: dict[str, Any]) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT INTO notifier_preferences (user_id, body) VALUES ($1, $2) "
                "ON CONFLICT (user_id) DO UPDATE SET body = excluded.body",
                user_id,
                preferences,
            )
        )

    async def load_preferences(self, user_id: str) -> dict[str, Any] | None:
        body: dict[str, Any] | None = await self._run(
            lambda db: db.fetchval("SELECT body FROM notifier_preferences WHERE user_id = $1", user_id)
        )
        return body

    # Push subscriptions (an endpoint belongs to the user who registered it last)

    async def add_push_subscription(self, subscription: PushSubscription) -> None:
        s = subscription
        await self._run(
            lambda db: db.execute(
                "INSERT INTO notifier_push_subscriptions (endpoint, user_id, p256dh, auth, created_at) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (endpoint) DO UPDATE SET "
                "user_id = excluded.user_id, p256dh = excluded.p256dh, auth = excluded.auth, "
                "created_at = excluded.created_at",
                s.endpoint,
                s.user_id,
                s.p256dh,
                s.auth,
                s.created_at,
            )
        )

    async def remove_push_subscription(self, endpoint: str, user_id: str | None = None) -> bool:
        removed = await self._run(
            lambda db: db.fetchval(
                "DELETE FROM notifier_push_subscriptions WHERE endpoint = $1 "
                "AND ($2::text IS NULL OR user_id = $2) RETURNING 1",
                endpoint,
                user_id,
            )
        )
        return removed is not None

    async def push_subscriptions(self, user_id: str) -> list[PushSubscription]:
        rows = await self._run(
            lambda db: db.fetch(
                "SELECT endpoint, user_id, p256dh, auth, created_at FROM notifier_push_subscriptions "
                "WHERE user_id = $1 ORDER BY created_at",
                user_id,
            )
        )
        return [PushSubscription(*row) for row in rows]
