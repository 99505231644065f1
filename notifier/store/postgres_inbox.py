"""The inbox's states, counts and listing in the PostgreSQL store (mixed into
`PostgresStore`); the same design as `sqlite_inbox.py`: state columns beside the body, and
counts kept by a trigger in the transaction of every change."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from ..records import InboxFilter, InboxPage, Notification
from .sqlite_inbox import counts_of

T = TypeVar("T")

MIGRATION = """
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                 AND table_name = 'notifier_notifications' AND column_name = 'seen') THEN
    ALTER TABLE notifier_notifications
      ADD COLUMN seen boolean NOT NULL DEFAULT false,
      ADD COLUMN archived boolean NOT NULL DEFAULT false,
      ADD COLUMN snoozed_until bigint,
      ADD COLUMN expires_at bigint,
      ADD COLUMN category text NOT NULL DEFAULT 'general',
      ADD COLUMN severity text NOT NULL DEFAULT 'info',
      ADD COLUMN group_key text,
      ADD COLUMN tags jsonb NOT NULL DEFAULT '[]';
    UPDATE notifier_notifications SET seen = read;  -- read implies seen
  END IF;
END $$;
CREATE UNIQUE INDEX IF NOT EXISTS notifier_notifications_group
    ON notifier_notifications (user_id, group_key) WHERE group_key IS NOT NULL AND NOT archived;
-- Unread ones in list order (the older index on user_id alone made listing sort them all).
DROP INDEX IF EXISTS notifier_notifications_unread;
CREATE INDEX IF NOT EXISTS notifier_notifications_unread_seq
    ON notifier_notifications (user_id, seq) WHERE NOT read AND NOT archived;
CREATE INDEX IF NOT EXISTS notifier_notifications_expiring
    ON notifier_notifications (expires_at) WHERE expires_at IS NOT NULL;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema()
                 AND table_name = 'notifier_inbox_counts') THEN
    CREATE TABLE notifier_inbox_counts (
        user_id text NOT NULL, name text NOT NULL, n bigint NOT NULL, PRIMARY KEY (user_id, name)
    );
    INSERT INTO notifier_inbox_counts (user_id, name, n)
    SELECT user_id, name, sum(n) FROM notifier_notifications,
        LATERAL (VALUES ('unread', (NOT read)::int), ('unseen', (NOT seen)::int),
                        ('category:' || category, (NOT read)::int),
                        ('severity:' || severity, (NOT read)::int)) AS share(name, n)
    WHERE NOT archived AND snoozed_until IS NULL GROUP BY user_id, name;
  END IF;
END $$;
CREATE OR REPLACE FUNCTION notifier_count_inbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- 'unread' first in every change: concurrent changes of one user's counts queue there.
  IF TG_OP IN ('UPDATE', 'DELETE') AND NOT OLD.archived AND OLD.snoozed_until IS NULL THEN
    INSERT INTO notifier_inbox_counts AS c (user_id, name, n) VALUES
      (OLD.user_id, 'unread', -(NOT OLD.read)::int), (OLD.user_id, 'unseen', -(NOT OLD.seen)::int),
      (OLD.user_id, 'category:' || OLD.category, -(NOT OLD.read)::int),
      (OLD.user_id, 'severity:' || OLD.severity, -(NOT OLD.read)::int)
    ON CONFLICT (user_id, name) DO UPDATE SET n = c.n + excluded.n;
  END IF;
  IF TG_OP IN ('UPDATE', 'INSERT') AND NOT NEW.archived AND NEW.snoozed_until IS NULL THEN
    INSERT INTO notifier_inbox_counts AS c (user_id, name, n) VALUES
      (NEW.user_id, 'unread', (NOT NEW.read)::int), (NEW.user_id, 'unseen', (NOT NEW.seen)::int),
      (NEW.user_id, 'category:' || NEW.category, (NOT NEW.read)::int),
      (NEW.user_id, 'severity:' || NEW.severity, (NOT NEW.read)::int)
    ON CONFLICT (user_id, name) DO UPDATE SET n = c.n + excluded.n;
  END IF;
  RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS notifier_count_inbox ON notifier_notifications;
CREATE TRIGGER notifier_count_inbox AFTER INSERT OR DELETE OR UPDATE OF
    read, seen, archived, snoozed_until, category, severity ON notifier_notifications
    FOR EACH ROW EXECUTE FUNCTION notifier_count_inbox();
"""

_COUNTED = "NOT archived AND snoozed_until IS NULL"
_SELECT = "SELECT seq, body, read, seen, archived, snoozed_until FROM notifier_notifications"
_STATES = {
    "unread": f"NOT read AND {_COUNTED}",
    "unseen": f"NOT seen AND {_COUNTED}",
    "read": "read AND NOT archived",
    "active": _COUNTED,
    "snoozed": "snoozed_until IS NOT NULL AND NOT archived",
    "archived": "archived",
    "all": "true",
}


def _notification(row: asyncpg.Record) -> Notification:
    return Notification(
        **{
            **row["body"],
            "read": row["read"],
            "seen": row["seen"],
            "archived": row["archived"],
            "snoozed_until": row["snoozed_until"],
        }
    )


class _Where:
    """A WHERE clause with numbered parameters."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.params: list[Any] = []

    def add(self, clause: str, *values: Any) -> None:
        for value in values:
            self.params.append(value)
            clause = clause.replace("?", f"${len(self.params)}", 1)
        self.clauses.append(clause)

    def sql(self) -> str:
        return " AND ".join(self.clauses)


def where(user_id: str, ids: list[str] | None, match: InboxFilter | None, now: int) -> _Where:
    w = _Where()
    w.add("user_id = ?", user_id)
    w.add("(expires_at IS NULL OR expires_at > ?)", now)
    if ids is not None:
        w.add("id = ANY(?)", ids)
    if match is not None:
        w.add(_STATES[match.state])
        for column, value in (
            ("category", match.category),
            ("severity", match.severity),
            ("group_key", match.group),
        ):
            if value is not None:
                w.add(f"{column} = ?", value)
        if match.tag is not None:
            w.add("tags @> jsonb_build_array(?::text)", match.tag)
        if match.created_before is not None:
            w.add("created_at < ?", match.created_before)
        if match.snoozed_until is not None:
            w.add("snoozed_until = ?", match.snoozed_until)
    return w


_USER_TURN = "SELECT pg_advisory_xact_lock(hashtext('notifier-inbox:' || $1))"


async def _one_user_at_a_time(
    db: asyncpg.Connection, user_id: str, sql: str, params: list[Any]
) -> list[asyncpg.Record]:
    """A change of many of one user's notifications, after any other change of theirs: two
    that took their rows (and counts) in different orders would deadlock."""
    async with db.transaction():
        await db.execute(_USER_TURN, user_id)
        return list(await db.fetch(sql, *params))


class PostgresInbox:
    async def _run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        raise NotImplementedError  # PostgresStore's

    async def list_page(
        self, user_id: str, match: InboxFilter, limit: int, cursor: int | None, now: int
    ) -> InboxPage:
        w = where(user_id, None, match, now)
        if cursor is not None:
            w.add("seq < ?", cursor)
        w.params.append(limit + 1)
        sql = f"{_SELECT} WHERE {w.sql()} ORDER BY seq DESC LIMIT ${len(w.params)}"
        rows = await self._run(lambda db: db.fetch(sql, *w.params))
        more = len(rows) > limit
        rows = rows[:limit]
        return InboxPage([_notification(row) for row in rows], rows[-1]["seq"] if more and rows else None)

    async def change_notifications(
        self,
        user_id: str,
        ids: list[str] | None,
        match: InboxFilter | None,
        changes: dict[str, Any],
        now: int,
    ) -> list[str]:
        w = where(user_id, ids, match, now)
        if changes.get("archived") is False:
            # A group has one entry: an archived one of a group that started another stays.
            w.add(
                "NOT (group_key IS NOT NULL AND EXISTS (SELECT 1 FROM notifier_notifications o "
                "WHERE o.user_id = notifier_notifications.user_id AND o.group_key = "
                "notifier_notifications.group_key AND NOT o.archived AND o.id <> notifier_notifications.id))"
            )
        sets, differs = [], []
        for column, value in changes.items():
            w.params.append(value)
            sets.append(f"{column} = ${len(w.params)}")
            differs.append(f"{column} IS DISTINCT FROM ${len(w.params)}")
        sql = (
            f"UPDATE notifier_notifications SET {', '.join(sets)} WHERE {w.sql()} "
            f"AND ({' OR '.join(differs)}) RETURNING id"
        )
        rows = await self._run(lambda db: _one_user_at_a_time(db, user_id, sql, w.params))
        return [row["id"] for row in rows]

    async def delete_notifications(
        self, user_id: str | None, ids: list[str] | None, match: InboxFilter | None, now: int
    ) -> list[tuple[str, str]]:
        if user_id is None:
            w = _Where()
            w.add("id = ANY(?)", ids)
        else:
            w = where(user_id, ids, match, now)
        sql = f"DELETE FROM notifier_notifications WHERE {w.sql()} RETURNING id, user_id"
        if user_id is None:
            rows = await self._run(lambda db: db.fetch(sql, *w.params))
        else:
            rows = await self._run(lambda db: _one_user_at_a_time(db, user_id, sql, w.params))
        return [(row["id"], row["user_id"]) for row in rows]

    async def get_notification(self, notification_id: str) -> Notification | None:
        row = await self._run(lambda db: db.fetchrow(f"{_SELECT} WHERE id = $1", notification_id))
        return _notification(row) if row is not None else None

    async def update_notification(self, notification_id: str, fields: dict[str, Any]) -> Notification | None:
        async def update(db: asyncpg.Connection) -> Notification | None:
            async with db.transaction():
                row = await db.fetchrow(f"{_SELECT} WHERE id = $1 FOR UPDATE", notification_id)
                if row is None:
                    return None
                changed = _notification(row)
                for name, value in fields.items():
                    setattr(changed, name, value)
                await db.execute(
                    "UPDATE notifier_notifications SET body = $2 WHERE id = $1",
                    notification_id,
                    changed.to_dict(),
                )
                return changed

        return await self._run(update)

    async def add_grouped(self, notification: Notification, deliver_by: int) -> Notification:
        n = notification

        async def add(db: asyncpg.Connection) -> Notification:
            async with db.transaction():
                # One at a time with every other change of the user's inbox (an unarchive
                # could otherwise give the group a second entry between look and insert).
                await db.execute(_USER_TURN, n.user_id)
                row = await db.fetchrow(
                    f"{_SELECT} WHERE user_id = $1 AND group_key = $2 AND NOT archived FOR UPDATE",
                    n.user_id,
                    n.group_key,
                )
                if row is None:
                    await db.execute(
                        "INSERT INTO notifier_notifications (id, user_id, created_at, read, body, "
                        "deliver_at, seen, archived, snoozed_until, expires_at, category, severity, "
                        "group_key, tags) "
                        "VALUES ($1, $2, $3, false, $4, $5, false, false, NULL, $6, $7, $8, $9, $10)",
                        n.id,
                        n.user_id,
                        n.created_at,
                        n.to_dict(),
                        deliver_by,
                        n.expires_at,
                        n.category,
                        n.severity,
                        n.group_key,
                        n.tags,
                    )
                    return n
                entry = _notification(row)
                entry.merge(n)
                await db.execute(
                    "UPDATE notifier_notifications SET seq = nextval(pg_get_serial_sequence("
                    "'notifier_notifications', 'seq')), body = $2, read = false, seen = false, "
                    "snoozed_until = NULL, deliver_at = $3 WHERE id = $1",
                    entry.id,
                    entry.to_dict(),
                    deliver_by,
                )
                return entry

        return await self._run(add)

    async def inbox_counts(self, user_id: str) -> dict[str, Any]:
        rows = await self._run(
            lambda db: db.fetch("SELECT name, n FROM notifier_inbox_counts WHERE user_id = $1", user_id)
        )
        return counts_of([(row["name"], row["n"]) for row in rows])

    async def recount(self, user_id: str) -> dict[str, Any]:
        rows = await self._run(
            lambda db: db.fetch(
                "SELECT name, sum(n) AS n FROM notifier_notifications, LATERAL (VALUES "
                "('unread', (NOT read)::int), ('unseen', (NOT seen)::int), "
                "('category:' || category, (NOT read)::int), ('severity:' || severity, (NOT read)::int)"
                f") AS share(name, n) WHERE user_id = $1 AND {_COUNTED} GROUP BY name",
                user_id,
            )
        )
        return counts_of([(row["name"], row["n"]) for row in rows])
