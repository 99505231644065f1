"""Receipts, jobs, preferences and push subscriptions in the SQLite store (mixed into
`SqliteStore`)."""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from ..records import Job, JobState, PushSubscription, Receipt, ReceiptKind
from .sqlite_db import SqliteDatabase

SCHEMA = """
CREATE TABLE IF NOT EXISTS receipts (
    notification_id TEXT NOT NULL, kind TEXT NOT NULL, device TEXT NOT NULL,
    user_id TEXT NOT NULL, at INTEGER NOT NULL, action TEXT,
    PRIMARY KEY (notification_id, kind, device)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
    grp TEXT NOT NULL, state TEXT NOT NULL, due_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, payload BLOB NOT NULL, last_error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (kind, due_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS jobs_group ON jobs (kind, grp, seq) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS preferences (user_id TEXT PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS push_subscriptions (
    endpoint TEXT PRIMARY KEY, user_id TEXT NOT NULL, p256dh TEXT NOT NULL, auth TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS push_subscriptions_user ON push_subscriptions (user_id);
"""

INSERT_JOB = (
    "INSERT OR IGNORE INTO jobs (id, kind, grp, state, due_at, attempts, payload) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def job_rows(jobs: list[Job]) -> list[tuple[Any, ...]]:
    return [
        (job.id, job.kind, job.group, job.state.value, job.due_at, job.attempts, orjson.dumps(job.payload))
        for job in jobs
    ]


def _job(row: sqlite3.Row | tuple[Any, ...]) -> Job:
    id_, kind, group, state, due_at, attempts, payload, last_error = row
    return Job(id_, kind, group, due_at, orjson.loads(payload), attempts, JobState(state), last_error)


_JOB_COLUMNS = "id, kind, grp, state, due_at, attempts, payload, last_error"


class SqliteJobs:
    db: SqliteDatabase

    # Receipts

    async def add_receipts(self, receipts: list[Receipt]) -> list[tuple[Receipt, int]]:
        def add(db: sqlite3.Connection) -> list[tuple[Receipt, int]]:
            added = []
            for r in receipts:
                row = db.execute(
                    "INSERT OR IGNORE INTO receipts (notification_id, kind, device, user_id, at, action) "
                    "SELECT id, ?, ?, user_id, ?, ? FROM notifications WHERE id = ? AND user_id = ? "
                    "RETURNING (SELECT created_at FROM notifications WHERE id = ?)",
                    (r.kind.value, r.device, r.at, r.action, r.notification_id, r.user_id, r.notification_id),
                ).fetchone()
                if row is not None:
                    added.append((r, int(row[0])))
            return added

        return await self.db.write(add)

    async def list_receipts(self, notification_id: str) -> list[Receipt]:
        rows = self.db.read(
            lambda db: db.execute(
                "SELECT notification_id, user_id, kind, device, at, action FROM receipts "
                "WHERE notification_id = ? ORDER BY at, kind",
                (notification_id,),
            ).fetchall()
        )
        return [Receipt(n, u, ReceiptKind(k), d, a, action) for n, u, k, d, a, action in rows]

    async def seen_notifications(self, ids: list[str]) -> set[str]:
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        rows = self.db.read(
            lambda db: db.execute(
                f"SELECT DISTINCT notification_id FROM receipts WHERE notification_id IN ({marks}) "
                "AND kind IN ('seen', 'read', 'actioned')",
                ids,
            ).fetchall()
        )
        return {row[0] for row in rows}

    # Jobs

    async def add_jobs(self, jobs: list[Job]) -> None:
        await self.db.write(lambda db: db.executemany(INSERT_JOB, job_rows(jobs)))

    async def claim_jobs(self, kind: str, now: int, lease_until: int, limit: int) -> list[Job]:
        def claim(db: sqlite3.Connection) -> list[Job]:
            rows = db.execute(
                f"UPDATE jobs SET due_at = ? WHERE seq IN (SELECT j.seq FROM jobs j WHERE j.kind = ? "
                "AND j.state = 'pending' AND j.due_at <= ? AND NOT EXISTS (SELECT 1 FROM jobs e "
                "WHERE e.kind = j.kind AND e.grp = j.grp AND e.state = 'pending' AND e.seq < j.seq) "
                f"ORDER BY j.due_at LIMIT ?) RETURNING {_JOB_COLUMNS}",
                (lease_until, kind, now, limit),
            ).fetchall()
            return [_job(row) for row in rows]

        return await self.db.write(claim)

    async def finish_job(self, job_id: str, state: JobState, error: str | None = None) -> None:
        await self.db.write(
            lambda db: db.execute(
                "UPDATE jobs SET state = ?, last_error = ? WHERE id = ?", (state.value, error, job_id)
            )
        )

    async def retry_job(self, job_id: str, due_at: int, error: str | None, attempted: bool = True) -> None:
        await self.db.write(
            lambda db: db.execute(
                "UPDATE jobs SET due_at = ?, last_error = ?, attempts = attempts + ? "
                "WHERE id = ? AND state = 'pending'",
                (due_at, error, int(attempted), job_id),
            )
        )

    async def cancel_jobs(self, job_ids: list[str]) -> None:
        await self.db.write(
            lambda db: db.executemany(
                "UPDATE jobs SET state = 'cancelled' WHERE id = ? AND state = 'pending'",
                [(job_id,) for job_id in job_ids],
            )
        )

    async def get_jobs(self, job_ids: list[str]) -> list[Job]:
        marks = ",".join("?" * len(job_ids))
        rows = self.db.read(
            lambda db: db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id IN ({marks})", job_ids
            ).fetchall()
        )
        return [_job(row) for row in rows]

    async def group_jobs(self, kind: str, group: str) -> list[Job]:
        rows = self.db.read(
            lambda db: db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE kind = ? AND grp = ? AND state = 'pending' "
                "ORDER BY seq",
                (kind, group),
            ).fetchall()
        )
        return [_job(row) for row in rows]

    async def finish_jobs(self, job_ids: list[str], state: JobState) -> None:
        await self.db.write(
            lambda db: db.executemany(
                "UPDATE jobs SET state = ? WHERE id = ?", [(state.value, job_id) for job_id in job_ids]
            )
        )

    async def list_jobs(self, kind: str, state: JobState, limit: int) -> list[Job]:
        rows = self.db.read(
            lambda db: db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE kind = ? AND state = ? ORDER BY seq DESC LIMIT ?",
                (kind, state.value, limit),
            ).fetchall()
        )
        return [_job(row) for row in rows]

    async def replay_job(self, job_id: str, now: int) -> bool:
        changed = await self.db.write(
            lambda db: (
                db.execute(
                    "UPDATE jobs SET state = 'pending', due_at = ?, attempts = 0 "
                    "WHERE id = ? AND state = 'failed'",
                    (now, job_id),
                ).rowcount
            )
        )
        return bool(changed)

    # Preferences

    async def save_preferences(self, user_id: str, preferences: dict[str, Any]) -> None:
        body = orjson.dumps(preferences)
        await self.db.write(
            lambda db: db.execute(
                "INSERT INTO preferences (user_id, body) VALUES (?, ?) "
                "ON CONFLICT (user_id) DO UPDATE SET body = excluded.body",
                (user_id, body),
            )
        )

    async def load_preferences(self, user_id: str) -> dict[str, Any] | None:
        row = self.db.read(
            lambda db: db.execute("SELECT body FROM preferences WHERE user_id = ?", (user_id,)).fetchone()
        )
        return orjson.loads(row[0]) if row else None

    # Push subscriptions (an endpoint belongs to the user who registered it last)

    async def add_push_subscription(self, subscription: PushSubscription) -> None:
        s = subscription
        await self.db.write(
            lambda db: db.execute(
                "INSERT INTO push_subscriptions (endpoint, user_id, p256dh, auth, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (endpoint) DO UPDATE SET user_id = excluded.user_id, "
                "p256dh = excluded.p256dh, auth = excluded.auth, created_at = excluded.created_at",
                (s.endpoint, s.user_id, s.p256dh, s.auth, s.created_at),
            )
        )

    async def remove_push_subscription(self, endpoint: str, user_id: str | None = None) -> bool:
        removed = await self.db.write(
            lambda db: (
                db.execute(
                    "DELETE FROM push_subscriptions WHERE endpoint = ? AND (? IS NULL OR user_id = ?)",
                    (endpoint, user_id, user_id),
                ).rowcount
            )
        )
        return bool(removed)

    async def push_subscriptions(self, user_id: str) -> list[PushSubscription]:
        rows = self.db.read(
            lambda db: db.execute(
                "SELECT endpoint, user_id, p256dh, auth, created_at FROM push_subscriptions "
                "WHERE user_id = ? ORDER BY created_at",
                (user_id,),
            ).fetchall()
        )
        return [PushSubscription(*row) for row in rows]
