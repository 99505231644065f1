"""PostgreSQL store (asyncpg, pooled): inboxes, tasks, idempotency keys and settings shared by
every service process.

The schema is created or migrated at start, under an advisory lock, so processes starting
together do it once. Notifications added during one loop iteration go in one INSERT (a batch).
A lost connection, a server shutting down or out of space makes calls fail with
STORE_UNAVAILABLE, marks the store failing for /readyz, and the pool reconnects by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import orjson

from ..batching import Batcher
from ..errors import ErrorCode, NotifierError, StartupError
from ..health import Health
from ..logs import get_logger
from ..records import InboxFilter, Job, Notification, Task, TaskStatus
from . import Claim
from .postgres_connections import describe, init_connection, unavailable
from .postgres_inbox import MIGRATION as INBOX_MIGRATION
from .postgres_inbox import PostgresInbox
from .postgres_jobs import MIGRATION as JOBS_MIGRATION
from .postgres_jobs import PostgresJobs, insert_jobs
from .postgres_outbox import MIGRATION as OUTBOX_MIGRATION
from .postgres_outbox import PostgresOutbox

log = get_logger("notifier.store")

T = TypeVar("T")
COMPONENT = "store"
_PROBE_SECONDS = 1.0
_CONFLICT_ATTEMPTS = 3
_SCHEMA_LOCK = 7_142_001  # pg_advisory_xact_lock key: one process migrates at a time

_MIGRATIONS = [
    """
    CREATE TABLE IF NOT EXISTS notifier_tasks (
        seq bigserial, id text PRIMARY KEY, project_id text NOT NULL, status text NOT NULL,
        finished_at bigint, version bigint NOT NULL, body jsonb NOT NULL
    );
    CREATE INDEX IF NOT EXISTS notifier_tasks_status ON notifier_tasks (status, project_id);
    CREATE TABLE IF NOT EXISTS notifier_notifications (
        seq bigserial PRIMARY KEY, id text NOT NULL UNIQUE, user_id text NOT NULL,
        created_at bigint NOT NULL, read boolean NOT NULL DEFAULT false, body jsonb NOT NULL
    );
    CREATE INDEX IF NOT EXISTS notifier_notifications_user ON notifier_notifications (user_id, seq);
    CREATE TABLE IF NOT EXISTS notifier_idempotency (
        key text PRIMARY KEY, ts bigint NOT NULL, result jsonb
    );
    CREATE TABLE IF NOT EXISTS notifier_settings (name text PRIMARY KEY, value text NOT NULL);
    """,
    """
    CREATE TABLE IF NOT EXISTS notifier_revocations (
        user_id text PRIMARY KEY, revoked_at bigint NOT NULL, until bigint NOT NULL
    );
    """,
    # Undelivered notifications (NULL: delivered, which is what older rows were).
    """
    ALTER TABLE notifier_notifications ADD COLUMN IF NOT EXISTS deliver_at bigint;
    CREATE INDEX IF NOT EXISTS notifier_notifications_undelivered
        ON notifier_notifications (deliver_at) WHERE deliver_at IS NOT NULL;
    """,
    JOBS_MIGRATION,
    INBOX_MIGRATION,
    OUTBOX_MIGRATION,
]


class PostgresStore(PostgresJobs, PostgresInbox, PostgresOutbox):
    shared = True

    def __init__(self, url: str, health: Health, *, pool_size: int = 10, schema: str | None = None) -> None:
        self._url = url
        # Tables go in this schema (the role's own: it needs no privilege on `public`, which
        # PostgreSQL 15 no longer grants); None: the role's default search path.
        self._schema = schema
        self._where = describe(url)
        self._health = health
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._probe: asyncio.Task[None] | None = None
        self._notifications: Batcher[tuple[list[Notification], int, list[Job]], None] = Batcher(
            self._insert_notifications
        )
        self._unread: Batcher[list[str], dict[str, int]] = Batcher(self._read_unread)

    # Lifecycle

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=1,
                max_size=self._pool_size,
                init=init_connection,
                command_timeout=10,
                server_settings={"search_path": self._schema} if self._schema else None,
            )
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                for migration in _MIGRATIONS:
                    await conn.execute(migration)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StartupError(f"NOTIFIER_STORE_URL: cannot use PostgreSQL at {self._where}: {exc}") from exc

    async def close(self) -> None:
        await self._notifications.close()
        await self._unread.close()
        await self.close_outbox_listener()
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pool.close(), 5)
            self._pool = None

    async def _run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """One unit of work on a pooled connection; an outage becomes STORE_UNAVAILABLE."""
        if self._pool is None:
            raise NotifierError(ErrorCode.STORE_UNAVAILABLE, "the store is not open")
        started = time.perf_counter()
        try:
            for attempt in range(_CONFLICT_ATTEMPTS):
                try:
                    async with self._pool.acquire(timeout=5) as conn:
                        result = await work(conn)
                    break
                except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                    # Two changes of one user's notifications (and counts) crossed: PostgreSQL
                    # rolled one back, whole; running it again is safe.
                    if attempt + 1 == _CONFLICT_ATTEMPTS:
                        raise
        except Exception as exc:
            if not unavailable(exc):
                raise
            self._failing(f"PostgreSQL at {self._where}: {type(exc).__name__}: {exc}")
            raise NotifierError(
                ErrorCode.STORE_UNAVAILABLE, "the store cannot be reached right now; retry"
            ) from exc
        self._health.timed(COMPONENT, "query", time.perf_counter() - started)
        if self._health.failing(COMPONENT):
            self._health.recover(COMPONENT)
        return result

    def _failing(self, detail: str) -> None:
        self._health.fail(COMPONENT, detail)
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self._probe_until_recovered())

    async def _probe_until_recovered(self) -> None:
        """Readiness comes back by itself, even while nobody writes."""
        while self._health.failing(COMPONENT):
            await asyncio.sleep(_PROBE_SECONDS)
            with contextlib.suppress(NotifierError):
                await self._run(lambda conn: conn.fetchval("SELECT 1"))

    # Tasks

    async def insert_task(self, task: Task) -> bool:
        row = await self._run(
            lambda db: db.fetchval(
                "INSERT INTO notifier_tasks (id, project_id, status, finished_at, version, body) "
                "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING RETURNING 1",
                *_task_values(task),
            )
        )
        return row is not None

    async def replace_task(self, task: Task, expected_version: int) -> bool:
        row = await self._run(
            lambda db: db.fetchval(
                "UPDATE notifier_tasks SET project_id = $2, status = $3, finished_at = $4, "
                "version = $5, body = $6 WHERE id = $1 AND version = $7 RETURNING 1",
                *_task_values(task),
                expected_version,
            )
        )
        return row is not None

    async def get_task(self, task_id: str) -> Task | None:
        body = await self._run(
            lambda db: db.fetchval("SELECT body FROM notifier_tasks WHERE id = $1", task_id)
        )
        return Task.from_dict(body) if body is not None else None

    async def list_tasks(
        self, statuses: frozenset[TaskStatus] | None, project_ids: frozenset[str] | None
    ) -> list[Task]:
        rows = await self._run(
            lambda db: db.fetch(
                "SELECT body FROM notifier_tasks WHERE ($1::text[] IS NULL OR status = ANY($1)) "
                "AND ($2::text[] IS NULL OR project_id = ANY($2)) ORDER BY seq",
                None if statuses is None else [s.value for s in statuses],
                None if project_ids is None else sorted(project_ids),
            )
        )
        return [Task.from_dict(row["body"]) for row in rows]

    async def delete_tasks_finished_before(self, ts: int) -> int:
        status = await self._run(
            lambda db: db.execute(
                "DELETE FROM notifier_tasks WHERE finished_at IS NOT NULL AND finished_at < $1", ts
            )
        )
        return _count(status)

    # Inboxes

    async def add_notifications(
        self, notifications: list[Notification], deliver_by: int, jobs: list[Job] | None = None
    ) -> None:
        await self._notifications.submit((notifications, deliver_by, jobs or []))

    async def _insert_notifications(
        self, batches: list[tuple[list[Notification], int, list[Job]]]
    ) -> list[None]:
        # In user order: each row's trigger updates its user's counts, and concurrent batches
        # that lock them in one order cannot deadlock.
        rows = sorted(
            ((n, deliver_by) for batch, deliver_by, _ in batches for n in batch), key=lambda r: r[0].user_id
        )
        jobs = [job for _, _, batch_jobs in batches for job in batch_jobs]

        async def insert(db: asyncpg.Connection) -> None:
            if not jobs:  # one statement: no transaction's round trips
                await insert_notifications(db)
                return
            async with db.transaction():  # an escalation exists exactly when its notification does
                await insert_notifications(db)
                await insert_jobs(db, jobs)

        async def insert_notifications(db: asyncpg.Connection) -> None:
            await db.execute(
                "INSERT INTO notifier_notifications (id, user_id, created_at, read, body, deliver_at, "
                "seen, archived, snoozed_until, expires_at, category, severity, group_key, tags) "
                "SELECT id, user_id, created_at, read, body, deliver_at, seen, archived, snoozed_until, "
                "expires_at, category, severity, group_key, tags::jsonb FROM unnest($1::text[], "
                "$2::text[], $3::bigint[], $4::boolean[], $5::jsonb[], $6::bigint[], $7::boolean[], "
                "$8::boolean[], $9::bigint[], $10::bigint[], $11::text[], $12::text[], $13::text[], "
                "$14::text[]) AS r(id, user_id, created_at, read, body, deliver_at, seen, archived, "
                "snoozed_until, expires_at, category, severity, group_key, tags) "
                "ON CONFLICT (id) DO NOTHING",
                [n.id for n, _ in rows],
                [n.user_id for n, _ in rows],
                [n.created_at for n, _ in rows],
                [n.read for n, _ in rows],
                [n.to_dict() for n, _ in rows],
                [deliver_by for _, deliver_by in rows],
                [n.seen for n, _ in rows],
                [n.archived for n, _ in rows],
                [n.snoozed_until for n, _ in rows],
                [n.expires_at for n, _ in rows],
                [n.category for n, _ in rows],
                [n.severity for n, _ in rows],
                [n.group_key for n, _ in rows],
                [orjson.dumps(n.tags).decode() for n, _ in rows],  # a jsonb each, not an array
            )

        await self._run(insert)
        return [None] * len(batches)

    async def mark_delivered(self, ids: list[str]) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE notifier_notifications SET deliver_at = NULL WHERE id = ANY($1) "
                "AND deliver_at IS NOT NULL",
                ids,
            )
        )

    async def claim_undelivered(self, now: int, lease_until: int, limit: int) -> list[Notification]:
        rows = await self._run(
            lambda db: db.fetch(
                "UPDATE notifier_notifications SET deliver_at = $2 WHERE seq IN ("
                " SELECT seq FROM notifier_notifications WHERE deliver_at <= $1"
                " ORDER BY deliver_at LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING body, read",
                now,
                lease_until,
                limit,
            )
        )
        return [Notification(**{**row["body"], "read": row["read"]}) for row in rows]

    async def list_notifications(
        self, user_id: str, limit: int, before: str | None, unread_only: bool
    ) -> list[Notification]:
        cursor = None
        if before is not None:
            seq = await self._run(
                lambda db: db.fetchval("SELECT seq FROM notifier_notifications WHERE id = $1", before)
            )
            cursor = int(seq) if seq is not None else -1
        match = InboxFilter(state="unread" if unread_only else "all")
        return (await self.list_page(user_id, match, limit, cursor, 0)).notifications

    async def mark_read(self, user_id: str, ids: list[str] | None) -> list[str]:
        match = InboxFilter(state="unread") if ids is None else None
        return await self.change_notifications(user_id, ids, match, {"read": True, "seen": True}, 0)

    async def unread_count(self, user_id: str) -> int:
        return (await self.unread_counts([user_id]))[user_id]

    async def unread_counts(self, user_ids: list[str]) -> dict[str, int]:
        return await self._unread.submit(user_ids)

    async def _read_unread(self, requests: list[list[str]]) -> list[dict[str, int]]:
        """The counts asked for during one loop iteration, in one query (kept exact by the
        inbox trigger: no scan)."""
        users = sorted({user for request in requests for user in request})
        rows = await self._run(
            lambda db: db.fetch(
                "SELECT user_id, n FROM notifier_inbox_counts WHERE name = 'unread' AND user_id = ANY($1)",
                users,
            )
        )
        counts = {row["user_id"]: int(row["n"]) for row in rows}
        return [{user: counts.get(user, 0) for user in request} for request in requests]

    async def trim_notifications(self, older_than_ts: int, max_per_user: int) -> int:
        async def trim(db: asyncpg.Connection) -> int:
            removed = _count(
                await db.execute("DELETE FROM notifier_notifications WHERE created_at < $1", older_than_ts)
            )
            removed += _count(
                await db.execute(
                    "DELETE FROM notifier_notifications WHERE seq IN (SELECT seq FROM ("
                    " SELECT seq, row_number() OVER (PARTITION BY user_id ORDER BY seq DESC) AS rank"
                    " FROM notifier_notifications) ranked WHERE rank > $1)",
                    max_per_user,
                )
            )
            # Receipts and finished jobs go with the notifications' age limit.
            await db.execute("DELETE FROM notifier_receipts WHERE at < $1", older_than_ts)
            await db.execute(
                "DELETE FROM notifier_jobs WHERE state <> 'pending' AND due_at < $1", older_than_ts
            )
            return removed

        return await self._run(trim)

    # Idempotency

    async def claim_idempotency_key(self, key: str, ts: int, stale_before: int) -> Claim:
        async def claim(db: asyncpg.Connection) -> Claim:
            # Insert, or take over a claim whose process died; either way it is ours.
            taken = await db.fetchval(
                "INSERT INTO notifier_idempotency (key, ts, result) VALUES ($1, $2, NULL) "
                "ON CONFLICT (key) DO UPDATE SET ts = EXCLUDED.ts "
                "WHERE notifier_idempotency.result IS NULL AND notifier_idempotency.ts < $3 "
                "RETURNING 1",
                key,
                ts,
                stale_before,
            )
            if taken is not None:
                return Claim("new")
            result = await db.fetchval("SELECT result FROM notifier_idempotency WHERE key = $1", key)
            return Claim("done", result) if result is not None else Claim("pending")

        return await self._run(claim)

    async def complete_idempotency_key(self, key: str, result: dict[str, Any], ts: int) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE notifier_idempotency SET ts = $2, result = $3 WHERE key = $1", key, ts, result
            )
        )

    async def release_idempotency_key(self, key: str) -> None:
        await self._run(
            lambda db: db.execute("DELETE FROM notifier_idempotency WHERE key = $1 AND result IS NULL", key)
        )

    async def trim_idempotency_keys(self, older_than_ts: int) -> int:
        return _count(
            await self._run(
                lambda db: db.execute("DELETE FROM notifier_idempotency WHERE ts < $1", older_than_ts)
            )
        )

    # Settings

    async def load_setting(self, name: str) -> str | None:
        value = await self._run(
            lambda db: db.fetchval("SELECT value FROM notifier_settings WHERE name = $1", name)
        )
        return None if value is None else str(value)

    async def save_setting(self, name: str, value: str) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT INTO notifier_settings (name, value) VALUES ($1, $2) "
                "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                name,
                value,
            )
        )

    # Revocations

    async def revoke_user(self, user_id: str, revoked_at: int, until: int) -> None:
        async def revoke(db: asyncpg.Connection) -> None:
            async with db.transaction():
                await db.execute("DELETE FROM notifier_revocations WHERE until <= $1", revoked_at)
                await db.execute(
                    "INSERT INTO notifier_revocations (user_id, revoked_at, until) "
                    "VALUES ($1, $2, $3) ON CONFLICT (user_id) DO UPDATE SET "
                    "revoked_at = EXCLUDED.revoked_at, until = EXCLUDED.until",
                    user_id,
                    revoked_at,
                    until,
                )

        await self._run(revoke)

    async def revocations(self, now: int) -> dict[str, int]:
        rows = await self._run(
            lambda db: db.fetch("SELECT user_id, revoked_at FROM notifier_revocations WHERE until > $1", now)
        )
        return {row["user_id"]: int(row["revoked_at"]) for row in rows}


def _task_values(task: Task) -> tuple[Any, ...]:
    return (task.id, task.project_id, task.status.value, task.finished_at, task.version, task.to_dict())


def _count(status: str) -> int:
    """The row count of a command tag such as 'DELETE 3'."""
    return int(status.rsplit(" ", 1)[-1]) if status and status[-1].isdigit() else 0
