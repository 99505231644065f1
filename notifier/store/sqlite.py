"""SQLite store: the embedded default (a file in the data directory) and, as `:memory:`, the
test one. One process owns it, so unfinished tasks are kept in memory as well: a progress
update changes the cached task at once, and the task's row is written once per loop
iteration however many updates it had (the commit every writer then waits for)."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import orjson

from ..records import FINISHED_STATUSES, InboxFilter, Job, Notification, Task, TaskStatus
from . import Claim
from .postgres_outbox import Relay
from .sqlite_db import SqliteDatabase
from .sqlite_inbox import STATE_COLUMNS, SqliteInbox, row_values
from .sqlite_inbox import migrate as migrate_inbox
from .sqlite_jobs import INSERT_JOB, SqliteJobs, job_rows
from .sqlite_jobs import SCHEMA as _JOBS_SCHEMA

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, project_id TEXT NOT NULL, status TEXT NOT NULL,
    finished_at INTEGER, body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status, project_id);
CREATE TABLE IF NOT EXISTS notifications (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, user_id TEXT NOT NULL,
    created_at INTEGER NOT NULL, read INTEGER NOT NULL DEFAULT 0, body BLOB NOT NULL,
    deliver_at INTEGER
);
CREATE INDEX IF NOT EXISTS notifications_user ON notifications (user_id, seq);
CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, ts INTEGER NOT NULL, result BLOB);
CREATE TABLE IF NOT EXISTS revocations (
    user_id TEXT PRIMARY KEY, revoked_at INTEGER NOT NULL, until INTEGER NOT NULL
);
"""


_UPSERT_TASK = (
    "INSERT INTO tasks (id, project_id, status, finished_at, body) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET status = excluded.status, "
    "finished_at = excluded.finished_at, body = excluded.body"
)


def _task_row(task: Task) -> tuple[Any, ...]:
    return (task.id, task.project_id, task.status.value, task.finished_at, orjson.dumps(task.to_dict()))


class SqliteStore(SqliteJobs, SqliteInbox):
    shared = False

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.add_schema(_SCHEMA)
        db.add_schema(_migrate_idempotency)
        db.add_schema(_migrate_redelivery)
        db.add_schema(_JOBS_SCHEMA)
        db.add_schema(migrate_inbox)
        db.on_before_commit(self._write_tasks)
        db.on_after_commit(self._tasks_committed)
        db.on_after_rollback(self._tasks_rolled_back)
        db.on_reopen(self._load_tasks)
        # Unfinished tasks, the newest state of each; finished ones are read from the table.
        self._live: dict[str, Task] = {}
        # Tasks changed in the open transaction, and what each was before it (to roll back).
        self._dirty: dict[str, Task] = {}
        self._before: dict[str, Task | None] = {}

    async def open(self) -> None:
        self.db.open()
        self._load_tasks()

    async def close(self) -> None:
        self.db.close()

    # Tasks

    def _load_tasks(self) -> None:
        unfinished = [s.value for s in TaskStatus if s not in FINISHED_STATUSES]
        rows = self.db.read(
            lambda db: db.execute(
                f"SELECT body FROM tasks WHERE status IN ({','.join('?' * len(unfinished))})", unfinished
            ).fetchall()
        )
        self._live = {task.id: task for task in (_task(body) for (body,) in rows)}

    def _stage(self, task: Task, previous: Task | None) -> None:
        self._before.setdefault(task.id, previous)
        self._dirty[task.id] = task
        if task.status.is_finished:
            self._live.pop(task.id, None)
        else:
            self._live[task.id] = task

    def _write_tasks(self, db: sqlite3.Connection) -> None:
        if self._dirty:
            db.executemany(_UPSERT_TASK, [_task_row(task) for task in self._dirty.values()])

    def _tasks_committed(self) -> None:
        self._dirty.clear()
        self._before.clear()

    def _tasks_rolled_back(self) -> None:
        for task_id, previous in self._before.items():
            if previous is None or previous.status.is_finished:
                self._live.pop(task_id, None)
            else:
                self._live[task_id] = previous
        self._tasks_committed()

    async def insert_task(self, task: Task) -> bool:
        if await self.get_task(task.id) is not None:
            return False
        self.db.transaction()
        self._stage(task, None)
        await self.db.committed()
        return True

    async def replace_task(self, task: Task, expected_version: int) -> bool:
        current = self._live.get(task.id) or await self.get_task(task.id)
        if current is None or current.version != expected_version:
            return False
        self.db.transaction()
        self._stage(task, current)
        await self.db.committed()
        return True

    async def get_task(self, task_id: str) -> Task | None:
        task = self._live.get(task_id) or self._dirty.get(task_id)
        if task is not None:
            return task
        row = self.db.read(
            lambda db: db.execute("SELECT body FROM tasks WHERE id = ?", (task_id,)).fetchone()
        )
        return _task(row[0]) if row else None

    async def list_tasks(
        self, statuses: frozenset[TaskStatus] | None, project_ids: frozenset[str] | None
    ) -> list[Task]:
        clauses: list[str] = []
        params: list[Any] = []
        if statuses is not None:
            clauses.append(f"status IN ({','.join('?' * len(statuses))})")
            params.extend(s.value for s in sorted(statuses))
        if project_ids is not None:
            clauses.append(f"project_id IN ({','.join('?' * len(project_ids))})")
            params.extend(sorted(project_ids))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.db.read(
            lambda db: db.execute(f"SELECT body FROM tasks {where} ORDER BY rowid", params).fetchall()
        )
        # The cached state of an unfinished task is at least as new as its row.
        return [self._live.get(task.id, task) for task in (_task(body) for (body,) in rows)]

    async def delete_tasks_finished_before(self, ts: int) -> int:
        return await self.db.write(
            lambda db: int(
                db.execute(
                    "DELETE FROM tasks WHERE finished_at IS NOT NULL AND finished_at < ?", (ts,)
                ).rowcount
            )
        )

    # Inboxes

    async def add_notifications(
        self, notifications: list[Notification], deliver_by: int, jobs: list[Job] | None = None
    ) -> None:
        rows = [
            (
                n.id,
                n.user_id,
                n.created_at,
                int(n.read),
                orjson.dumps(n.to_dict()),
                deliver_by,
                *row_values(n),
            )
            for n in notifications
        ]

        def add(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT OR IGNORE INTO notifications (id, user_id, created_at, read, body, deliver_at, "
                f"{STATE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            if jobs:
                db.executemany(INSERT_JOB, job_rows(jobs))

        await self.db.write(add)

    async def relay_outbox(self, relay: Relay, limit: int) -> int:
        """No outbox: applications publish into their own transactions with PostgreSQL."""
        return 0

    async def wait_for_outbox(self, timeout: float) -> None:
        await asyncio.sleep(timeout)

    async def mark_delivered(self, ids: list[str]) -> None:
        await self.db.write(
            lambda db: db.executemany(
                "UPDATE notifications SET deliver_at = NULL WHERE id = ?", [(id_,) for id_ in ids]
            )
        )

    async def claim_undelivered(self, now: int, lease_until: int, limit: int) -> list[Notification]:
        def claim(db: sqlite3.Connection) -> list[Notification]:
            rows = db.execute(
                "UPDATE notifications SET deliver_at = ? WHERE seq IN (SELECT seq FROM notifications "
                "WHERE deliver_at <= ? ORDER BY deliver_at LIMIT ?) RETURNING body, read",
                (lease_until, now, limit),
            ).fetchall()
            return [Notification(**{**orjson.loads(body), "read": bool(read)}) for body, read in rows]

        return await self.db.write(claim)

    async def list_notifications(
        self, user_id: str, limit: int, before: str | None, unread_only: bool
    ) -> list[Notification]:
        cursor = None
        if before is not None:
            row = self.db.read(
                lambda db: db.execute("SELECT seq FROM notifications WHERE id = ?", (before,)).fetchone()
            )
            cursor = int(row[0]) if row else -1
        match = InboxFilter(state="unread" if unread_only else "all")
        return (await self.list_page(user_id, match, limit, cursor, 0)).notifications

    async def mark_read(self, user_id: str, ids: list[str] | None) -> list[str]:
        match = InboxFilter(state="unread") if ids is None else None
        return await self.change_notifications(user_id, ids, match, {"read": True, "seen": True}, 0)

    async def trim_notifications(self, older_than_ts: int, max_per_user: int) -> int:
        def trim(db: sqlite3.Connection) -> int:
            removed = db.execute("DELETE FROM notifications WHERE created_at < ?", (older_than_ts,)).rowcount
            removed += db.execute(
                "DELETE FROM notifications WHERE seq IN (SELECT seq FROM ("
                " SELECT seq, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY seq DESC) AS rank"
                " FROM notifications) WHERE rank > ?)",
                (max_per_user,),
            ).rowcount
            # Receipts and finished jobs go with the notifications' age limit.
            db.execute("DELETE FROM receipts WHERE at < ?", (older_than_ts,))
            db.execute("DELETE FROM jobs WHERE state <> 'pending' AND due_at < ?", (older_than_ts,))
            return int(removed)

        return await self.db.write(trim)

    # Idempotency

    async def claim_idempotency_key(self, key: str, ts: int, stale_before: int) -> Claim:
        def claim(db: sqlite3.Connection) -> Claim:
            row = db.execute("SELECT ts, result FROM idempotency WHERE key = ?", (key,)).fetchone()
            if row is not None and row[1] is not None:
                return Claim("done", orjson.loads(row[1]))
            if row is not None and row[0] >= stale_before:
                return Claim("pending")
            db.execute(
                "INSERT INTO idempotency (key, ts, result) VALUES (?, ?, NULL) "
                "ON CONFLICT (key) DO UPDATE SET ts = excluded.ts",
                (key, ts),
            )
            return Claim("new")

        return await self.db.write(claim)

    async def complete_idempotency_key(self, key: str, result: dict[str, Any], ts: int) -> None:
        payload = orjson.dumps(result)
        await self.db.write(
            lambda db: db.execute(
                "UPDATE idempotency SET ts = ?, result = ? WHERE key = ?", (ts, payload, key)
            )
        )

    async def release_idempotency_key(self, key: str) -> None:
        await self.db.write(
            lambda db: db.execute("DELETE FROM idempotency WHERE key = ? AND result IS NULL", (key,))
        )

    async def trim_idempotency_keys(self, older_than_ts: int) -> int:
        return await self.db.write(
            lambda db: int(db.execute("DELETE FROM idempotency WHERE ts < ?", (older_than_ts,)).rowcount)
        )

    # Settings

    async def load_setting(self, name: str) -> str | None:
        row = self.db.read(
            lambda db: db.execute("SELECT value FROM meta WHERE key = ?", (f"setting:{name}",)).fetchone()
        )
        return str(row[0]) if row else None

    async def save_setting(self, name: str, value: str) -> None:
        await self.db.write(
            lambda db: db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (f"setting:{name}", value),
            )
        )

    # Revocations

    async def revoke_user(self, user_id: str, revoked_at: int, until: int) -> None:
        def revoke(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM revocations WHERE until <= ?", (revoked_at,))
            db.execute(
                "INSERT INTO revocations (user_id, revoked_at, until) VALUES (?, ?, ?) "
                "ON CONFLICT (user_id) DO UPDATE SET revoked_at = excluded.revoked_at, "
                "until = excluded.until",
                (user_id, revoked_at, until),
            )

        await self.db.write(revoke)

    async def revocations(self, now: int) -> dict[str, int]:
        rows = self.db.read(
            lambda db: db.execute(
                "SELECT user_id, revoked_at FROM revocations WHERE until > ?", (now,)
            ).fetchall()
        )
        return {str(user): int(at) for user, at in rows}


def _migrate_idempotency(db: sqlite3.Connection) -> None:
    """Files from before pending claims stored every key with its result (NOT NULL): those
    keys are short-lived, so the table is simply made again."""
    columns = db.execute("PRAGMA table_info(idempotency)").fetchall()
    if any(name == "result" and notnull for _, name, _, notnull, *_ in columns):
        db.executescript(
            "DROP TABLE idempotency;"
            "CREATE TABLE idempotency (key TEXT PRIMARY KEY, ts INTEGER NOT NULL, result BLOB);"
        )


def _migrate_redelivery(db: sqlite3.Connection) -> None:
    """Files from before redelivery have no `deliver_at`: their notifications count as
    delivered (NULL)."""
    columns = {name for _, name, *_ in db.execute("PRAGMA table_info(notifications)").fetchall()}
    if "deliver_at" not in columns:
        db.execute("ALTER TABLE notifications ADD COLUMN deliver_at INTEGER")
    db.execute(
        "CREATE INDEX IF NOT EXISTS notifications_undelivered ON notifications (deliver_at) "
        "WHERE deliver_at IS NOT NULL"
    )


def _task(body: bytes) -> Task:
    return Task.from_dict(orjson.loads(body))
