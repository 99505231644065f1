"""The inbox's states, counts and listing in the SQLite store (mixed into `SqliteStore`).

A notification's states are columns (`read`, `seen`, `archived`, `snoozed_until`) beside its
body; its counts (`unread`, `unseen`, unread per category and per severity) live in
`inbox_counts` and are kept by triggers, in the transaction of every insert, change and
delete: exact, and never recounted on a request. A notification counts while it is neither
archived nor snoozed.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from ..records import InboxFilter, InboxPage, Notification
from .sqlite_db import SqliteDatabase

_COUNTED = "{row}.archived = 0 AND {row}.snoozed_until IS NULL"


def _counts(row: str, sign: str) -> str:
    """The upsert adding (`+`) or removing (`-`) a row's share of its user's counts."""
    return (
        "INSERT INTO inbox_counts (user_id, name, n) VALUES "
        f"({row}.user_id, 'unread', {sign}(1 - {row}.read)), "
        f"({row}.user_id, 'unseen', {sign}(1 - {row}.seen)), "
        f"({row}.user_id, 'category:' || {row}.category, {sign}(1 - {row}.read)), "
        f"({row}.user_id, 'severity:' || {row}.severity, {sign}(1 - {row}.read)) "
        "ON CONFLICT (user_id, name) DO UPDATE SET n = n + excluded.n;"
    )


def migrate(db: sqlite3.Connection) -> None:
    """Files from before these states: the columns are added (everything active, unseen
    where unread), and the counts made once from the rows; then the triggers keep them."""
    columns = {name for _, name, *_ in db.execute("PRAGMA table_info(notifications)").fetchall()}
    added = {
        "seen": "INTEGER NOT NULL DEFAULT 0",
        "archived": "INTEGER NOT NULL DEFAULT 0",
        "snoozed_until": "INTEGER",
        "expires_at": "INTEGER",
        "category": "TEXT NOT NULL DEFAULT 'general'",
        "severity": "TEXT NOT NULL DEFAULT 'info'",
        "group_key": "TEXT",
        "tags": "TEXT NOT NULL DEFAULT '[]'",
    }
    for name, kind in added.items():
        if name not in columns:
            db.execute(f"ALTER TABLE notifications ADD COLUMN {name} {kind}")
    if "seen" not in columns:
        db.execute("UPDATE notifications SET seen = read")  # read implies seen
    fresh = not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'inbox_counts'").fetchone()
    db.executescript(
        "CREATE TABLE IF NOT EXISTS inbox_counts (user_id TEXT NOT NULL, name TEXT NOT NULL, "
        "n INTEGER NOT NULL, PRIMARY KEY (user_id, name)) WITHOUT ROWID;"
        "CREATE UNIQUE INDEX IF NOT EXISTS notifications_group ON notifications (user_id, group_key) "
        "WHERE group_key IS NOT NULL AND archived = 0;"
        "CREATE INDEX IF NOT EXISTS notifications_expiring ON notifications (expires_at) "
        "WHERE expires_at IS NOT NULL;"
    )
    if fresh:
        counted = _COUNTED.format(row="notifications")
        for name, value in (
            ("'unread'", "1 - read"),
            ("'unseen'", "1 - seen"),
            ("'category:' || category", "1 - read"),
            ("'severity:' || severity", "1 - read"),
        ):
            db.execute(
                f"INSERT INTO inbox_counts (user_id, name, n) SELECT user_id, {name}, SUM({value}) "
                f"FROM notifications WHERE {counted} GROUP BY user_id, {name} "
                "ON CONFLICT (user_id, name) DO UPDATE SET n = n + excluded.n"
            )
    states = "read, seen, archived, snoozed_until, category, severity"
    new, old = _COUNTED.format(row="NEW"), _COUNTED.format(row="OLD")
    db.executescript(
        f"CREATE TRIGGER IF NOT EXISTS inbox_counts_insert AFTER INSERT ON notifications "
        f"WHEN {new} BEGIN {_counts('NEW', '+')} END;"
        f"CREATE TRIGGER IF NOT EXISTS inbox_counts_delete AFTER DELETE ON notifications "
        f"WHEN {old} BEGIN {_counts('OLD', '-')} END;"
        f"CREATE TRIGGER IF NOT EXISTS inbox_counts_update_old AFTER UPDATE OF {states} ON notifications "
        f"WHEN {old} BEGIN {_counts('OLD', '-')} END;"
        f"CREATE TRIGGER IF NOT EXISTS inbox_counts_update_new AFTER UPDATE OF {states} ON notifications "
        f"WHEN {new} BEGIN {_counts('NEW', '+')} END;"
    )


def row_values(n: Notification) -> tuple[Any, ...]:
    """The state columns of a new row, after (id, user_id, created_at, read, body, deliver_at)."""
    return (
        int(n.seen),
        int(n.archived),
        n.snoozed_until,
        n.expires_at,
        n.category,
        n.severity,
        n.group_key,
        orjson.dumps(n.tags).decode(),
    )


# A group has one entry in the inbox: an archived one of a group that started another stays
# in the archive.
_GROUP_HAS_AN_ENTRY = (
    "(group_key IS NOT NULL AND EXISTS (SELECT 1 FROM notifications other WHERE "
    "other.user_id = notifications.user_id AND other.group_key = notifications.group_key "
    "AND other.archived = 0 AND other.id <> notifications.id))"
)
STATE_COLUMNS = "seen, archived, snoozed_until, expires_at, category, severity, group_key, tags"
_SELECT = "SELECT seq, body, read, seen, archived, snoozed_until FROM notifications"


def _notification(row: tuple[Any, ...]) -> Notification:
    _, body, read, seen, archived, snoozed_until = row
    return Notification(
        **{
            **orjson.loads(body),
            "read": bool(read),
            "seen": bool(seen),
            "archived": bool(archived),
            "snoozed_until": snoozed_until,
        }
    )


def where(user_id: str, ids: list[str] | None, match: InboxFilter | None, now: int) -> tuple[str, list[Any]]:
    """The WHERE clause for a user's notifications: these ids, or those the filter matches."""
    clauses, params = ["user_id = ?", "(expires_at IS NULL OR expires_at > ?)"], [user_id, now]
    if ids is not None:
        clauses.append(f"id IN ({','.join('?' * len(ids))})")
        params.extend(ids)
    if match is not None:
        state = {
            "unread": "read = 0 AND archived = 0 AND snoozed_until IS NULL",
            "unseen": "seen = 0 AND archived = 0 AND snoozed_until IS NULL",
            "read": "read = 1 AND archived = 0",
            "active": "archived = 0 AND snoozed_until IS NULL",
            "snoozed": "snoozed_until IS NOT NULL AND archived = 0",
            "archived": "archived = 1",
            "all": "1 = 1",
        }[match.state]
        clauses.append(state)
        for column, value in (
            ("category", match.category),
            ("severity", match.severity),
            ("group_key", match.group),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if match.tag is not None:
            clauses.append("EXISTS (SELECT 1 FROM json_each(notifications.tags) WHERE value = ?)")
            params.append(match.tag)
        if match.created_before is not None:
            clauses.append("created_at < ?")
            params.append(match.created_before)
        if match.snoozed_until is not None:
            clauses.append("snoozed_until = ?")
            params.append(match.snoozed_until)
    return " AND ".join(clauses), params


class SqliteInbox:
    db: SqliteDatabase

    async def list_page(
        self, user_id: str, match: InboxFilter, limit: int, cursor: int | None, now: int
    ) -> InboxPage:
        clause, params = where(user_id, None, match, now)
        if cursor is not None:
            clause += " AND seq < ?"
            params.append(cursor)
        rows = self.db.read(
            lambda db: db.execute(
                f"{_SELECT} WHERE {clause} ORDER BY seq DESC LIMIT ?", (*params, limit + 1)
            ).fetchall()
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return InboxPage([_notification(row) for row in rows], rows[-1][0] if more and rows else None)

    async def change_notifications(
        self,
        user_id: str,
        ids: list[str] | None,
        match: InboxFilter | None,
        changes: dict[str, Any],
        now: int,
    ) -> list[str]:
        """Set `changes` (read, seen, archived, snoozed_until) on the user's notifications
        these ids or the filter name; the ids that changed."""
        clause, params = where(user_id, ids, match, now)
        if changes.get("archived") is False:
            clause += f" AND NOT {_GROUP_HAS_AN_ENTRY}"
        sets = ", ".join(f"{column} = ?" for column in changes)
        differs = " OR ".join(f"{column} IS NOT ?" for column in changes)
        values = [int(v) if isinstance(v, bool) else v for v in changes.values()]
        sql = f"UPDATE notifications SET {sets} WHERE {clause} AND ({differs}) RETURNING id"
        rows = await self.db.write(lambda db: db.execute(sql, (*values, *params, *values)).fetchall())
        return [row[0] for row in rows]

    async def delete_notifications(
        self, user_id: str | None, ids: list[str] | None, match: InboxFilter | None, now: int
    ) -> list[tuple[str, str]]:
        """Delete the user's notifications these ids or the filter name (any user's, by id,
        when `user_id` is None); (id, user_id) of each."""
        if user_id is None:
            assert ids is not None
            clause, params = f"id IN ({','.join('?' * len(ids))})", list(ids)
        else:
            clause, params = where(user_id, ids, match, now)
        rows = await self.db.write(
            lambda db: db.execute(
                f"DELETE FROM notifications WHERE {clause} RETURNING id, user_id", params
            ).fetchall()
        )
        return [(row[0], row[1]) for row in rows]

    async def get_notification(self, notification_id: str) -> Notification | None:
        row = self.db.read(lambda db: db.execute(f"{_SELECT} WHERE id = ?", (notification_id,)).fetchone())
        return _notification(row) if row is not None else None

    async def update_notification(self, notification_id: str, fields: dict[str, Any]) -> Notification | None:
        """A publisher's change of title, body, data or actions; the notification after it."""

        def update(db: sqlite3.Connection) -> Notification | None:
            row = db.execute(f"{_SELECT} WHERE id = ?", (notification_id,)).fetchone()
            if row is None:
                return None
            changed = _notification(row)
            for name, value in fields.items():
                setattr(changed, name, value)
            db.execute(
                "UPDATE notifications SET body = ? WHERE id = ?",
                (orjson.dumps(changed.to_dict()), notification_id),
            )
            return changed

        return await self.db.write(update)

    async def add_grouped(self, notification: Notification, deliver_by: int) -> Notification:
        """Store a notification with a `group_key`: it joins the user's active one of that key
        (one entry: a count, the latest items, unread and unseen again, first in the list),
        or starts it. The entry as stored."""

        def add(db: sqlite3.Connection) -> Notification:
            n = notification
            row = db.execute(
                f"{_SELECT} WHERE user_id = ? AND group_key = ? AND archived = 0", (n.user_id, n.group_key)
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO notifications (id, user_id, created_at, read, body, deliver_at, "
                    f"{STATE_COLUMNS}) VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (n.id, n.user_id, n.created_at, orjson.dumps(n.to_dict()), deliver_by, *row_values(n)),
                )
                return n
            entry = _notification(row)
            entry.merge(n)
            next_seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM notifications").fetchone()[0]
            db.execute(
                "UPDATE notifications SET seq = ?, body = ?, read = 0, seen = 0, snoozed_until = NULL, "
                "deliver_at = ? WHERE id = ?",
                (next_seq, orjson.dumps(entry.to_dict()), deliver_by, entry.id),
            )
            return entry

        return await self.db.write(add)

    async def inbox_counts(self, user_id: str) -> dict[str, Any]:
        rows = self.db.read(
            lambda db: db.execute("SELECT name, n FROM inbox_counts WHERE user_id = ?", (user_id,)).fetchall()
        )
        return counts_of(rows)

    async def unread_counts(self, user_ids: list[str]) -> dict[str, int]:
        marks = ",".join("?" * len(user_ids))
        rows = self.db.read(
            lambda db: db.execute(
                f"SELECT user_id, n FROM inbox_counts WHERE name = 'unread' AND user_id IN ({marks})",
                user_ids,
            ).fetchall()
        )
        counts = dict.fromkeys(user_ids, 0)
        counts.update({user: int(n) for user, n in rows})
        return counts

    async def unread_count(self, user_id: str) -> int:
        return (await self.unread_counts([user_id]))[user_id]

    async def recount(self, user_id: str) -> dict[str, Any]:
        """The counts by a full scan (what the triggers must always agree with): for tests
        and operators, never for a request."""
        counted = _COUNTED.format(row="notifications")
        mine = f"FROM notifications WHERE user_id = ? AND {counted}"
        sql = (
            f"SELECT 'unread', SUM(1 - read) {mine} UNION ALL SELECT 'unseen', SUM(1 - seen) {mine} "
            f"UNION ALL SELECT 'category:' || category, SUM(1 - read) {mine} GROUP BY category "
            f"UNION ALL SELECT 'severity:' || severity, SUM(1 - read) {mine} GROUP BY severity"
        )
        rows = self.db.read(lambda db: db.execute(sql, (user_id,) * 4).fetchall())
        return counts_of([(name, n or 0) for name, n in rows])


def counts_of(rows: list[tuple[str, int]] | list[Any]) -> dict[str, Any]:
    """{unread, unseen, categories: {name: unread}, severities: {name: unread}}; zeros left out
    of the maps."""
    result: dict[str, Any] = {"unread": 0, "unseen": 0, "categories": {}, "severities": {}}
    for name, n in rows:
        n = int(n)
        if name in ("unread", "unseen"):
            result[name] = n
        elif n:
            kind, _, key = str(name).partition(":")
            result["categories" if kind == "category" else "severities"][key] = n
    return result
