"""The in-process broker: room histories in the embedded SQLite database, delivery within the
process. Events are delivered when the transaction that stores them commits, in the order
they were appended; a transaction that fails delivers nothing."""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import orjson

from ..records import Envelope, StreamPosition, new_id
from ..store.sqlite_db import SqliteDatabase
from . import Delivery, Guard, NewEvent, Node, PresenceBackend
from .local_presence import LocalPresence

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS room_heads (room TEXT PRIMARY KEY, head INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    room TEXT NOT NULL, offset INTEGER NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL,
    ts INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (room, offset)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
"""

# Trimming by count runs every this many appends to a room rather than on each one.
_TRIM_EVERY = 64
# Guards remembered (one per task with recent events); one process is the only writer, so a
# forgotten guard only ever lets through what it would have let through anyway.
_MAX_GUARDS = 100_000
# Rooms whose committed bounds (head, first retained offset) are kept in memory: every
# connection asks for those of its own rooms, and this process is the only writer.
_MAX_BOUNDS = 100_000


class LocalBroker:
    shared = False

    def __init__(self, db: SqliteDatabase, *, max_events_per_room: int) -> None:
        self.db = db
        self._max_events_per_room = max_events_per_room
        self.epoch = ""
        self._node: Node | None = None
        # The open transaction's appends: rows to insert, room heads, trims, envelopes to
        # deliver once it commits.
        self._rows: list[tuple[str, int, str, str, int, bytes]] = []
        self._heads: dict[str, int] = {}
        self._trims: list[tuple[str, int]] = []
        self._appended: list[Envelope] = []
        self._guards: OrderedDict[str, int] = OrderedDict()
        self._bounds: OrderedDict[str, tuple[int, int]] = OrderedDict()
        db.add_schema(_SCHEMA)
        db.on_before_commit(self._write)
        db.on_after_commit(self._committed)
        db.on_after_rollback(self._forget)
        db.on_reopen(self._load_epoch)

    async def start(self, node: Node) -> None:
        self._node = node
        self.db.open()
        self._load_epoch()

    async def stop(self) -> None:
        self.db.close()

    def _load_epoch(self) -> None:
        def epoch(db: sqlite3.Connection) -> str:
            row = db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
            if row is not None:
                return str(row[0])
            # A new history gets a new epoch: clients positioned in another must reload.
            value = new_id()[:16]
            db.execute("INSERT INTO meta (key, value) VALUES ('epoch', ?)", (value,))
            return value

        self._forget()
        self._bounds.clear()
        self.epoch = self.db.read(epoch)

    # Appending

    async def publish(self, events: Sequence[NewEvent], guard: Guard | None = None) -> list[Envelope] | None:
        def append(db: sqlite3.Connection) -> list[Envelope] | None:
            if guard is not None:
                if self._guards.get(guard.key, -1) >= guard.version:
                    return None
                self._guards[guard.key] = guard.version
                self._guards.move_to_end(guard.key)
                if len(self._guards) > _MAX_GUARDS:
                    self._guards.popitem(last=False)
            encoded: dict[int, bytes] = {}  # the same data, to several rooms, encoded once
            return [self._append(db, event, encoded) for event in events]

        return await self.db.write(append)

    def _append(self, db: sqlite3.Connection, event: NewEvent, encoded: dict[int, bytes]) -> Envelope:
        room = event.room
        if event.once:
            before = self._appended_before(db, event)
            if before is not None:
                return before
        head = self._heads.get(room)
        if head is None:
            known = self._bounds.get(room)
            if known is not None:
                head = known[0]
            else:
                row = db.execute("SELECT head FROM room_heads WHERE room = ?", (room,)).fetchone()
                head = int(row[0]) if row else 0
        offset = head + 1
        self._heads[room] = offset
        data = encoded.get(id(event.data))
        if data is None:
            data = encoded[id(event.data)] = orjson.dumps(event.data)
        self._rows.append((room, offset, event.id, event.type, event.ts, data))
        if offset % _TRIM_EVERY == 0:
            self._trims.append((room, offset - self._max_events_per_room))
        envelope = {
            "id": event.id,
            "type": event.type,
            "room": room,
            "ts": event.ts,
            "data": event.data,
            "offset": offset,
            "epoch": self.epoch,
        }
        self._appended.append(envelope)
        return envelope

    def _appended_before(self, db: sqlite3.Connection, event: NewEvent) -> Envelope | None:
        """The envelope of this event if it is in the history already (committed, or in this
        transaction): a retry of an idempotent request appends nothing again."""
        for envelope in self._appended:
            if envelope["id"] == event.id and envelope["room"] == event.room:
                return envelope
        row = db.execute(
            "SELECT offset, ts, data FROM events WHERE room = ? AND id = ?", (event.room, event.id)
        ).fetchone()
        if row is None:
            return None
        offset, ts, data = row
        return {
            "id": event.id,
            "type": event.type,
            "room": event.room,
            "ts": ts,
            "data": orjson.loads(data),
            "offset": offset,
            "epoch": self.epoch,
        }

    def _write(self, db: sqlite3.Connection) -> None:
        """Before the commit: the appended events, one statement for all (executemany)."""
        if not self._rows:
            return
        db.executemany(
            "INSERT INTO events (room, offset, id, type, ts, data) VALUES (?, ?, ?, ?, ?, ?)",
            self._rows,
        )
        db.executemany(
            "INSERT INTO room_heads (room, head) VALUES (?, ?) "
            "ON CONFLICT (room) DO UPDATE SET head = excluded.head",
            list(self._heads.items()),
        )
        if self._trims:
            db.executemany("DELETE FROM events WHERE room = ? AND offset <= ?", self._trims)

    def _committed(self) -> None:
        appended = self._appended
        bounds = self._bounds
        for room, head in self._heads.items():
            known = bounds.get(room)
            if known is not None:  # (an empty room's first offset is its head + 1 already)
                bounds[room] = (head, known[1])
        for room, cutoff in self._trims:
            known = bounds.get(room)
            if known is not None:
                bounds[room] = (known[0], max(known[1], cutoff + 1))
        self._rows, self._heads, self._trims, self._appended = [], {}, [], []
        node = self._node
        if node is not None:
            for envelope in appended:
                node.deliver(Delivery.of(envelope))

    def _forget(self) -> None:
        """The transaction rolled back: its offsets were never taken, nothing is delivered."""
        self._rows, self._heads, self._trims, self._appended = [], {}, [], []
        self._guards.clear()

    # Reading

    async def read(self, room: str, after: int, limit: int) -> list[Envelope]:
        rows = self.db.read(
            lambda db: db.execute(
                "SELECT offset, id, type, ts, data FROM events WHERE room = ? AND offset > ? "
                "ORDER BY offset LIMIT ?",
                (room, after, limit),
            ).fetchall()
        )
        epoch = self.epoch
        return [
            {
                "id": event_id,
                "type": event_type,
                "room": room,
                "ts": ts,
                "data": orjson.loads(data),
                "offset": offset,
                "epoch": epoch,
            }
            for offset, event_id, event_type, ts, data in rows
        ]

    async def bounds(self, room: str) -> tuple[StreamPosition, int]:
        """The committed bounds (appends not yet committed are delivered live later)."""
        known = self._bounds.get(room)
        if known is None:
            known = self.db.read(lambda db: _bounds(db, room))
            self._bounds[room] = known
            if len(self._bounds) > _MAX_BOUNDS:
                self._bounds.popitem(last=False)
        else:
            self._bounds.move_to_end(room)
        return StreamPosition(self.epoch, known[0]), known[1]

    async def trim(self, older_than_ts: int, max_per_room: int) -> int:
        def trim(db: sqlite3.Connection) -> int:
            removed = db.execute("DELETE FROM events WHERE ts < ?", (older_than_ts,)).rowcount
            removed += db.execute(
                "DELETE FROM events WHERE (room, offset) IN ("
                " SELECT e.room, e.offset FROM events e JOIN room_heads h ON h.room = e.room"
                " WHERE e.offset <= h.head - ?)",
                (max_per_room,),
            ).rowcount
            return int(removed)

        removed = await self.db.write(trim)
        self._bounds.clear()  # first offsets moved, in any room
        return removed

    # One node

    async def follow(self, room: str) -> None:
        pass  # every event of the process reaches the process

    def unfollow(self, room: str) -> None:
        pass

    def observe(self, room: str, position: StreamPosition) -> None:
        pass  # delivery here is synchronous with the commit: nothing to catch up with

    async def claim(self, name: str, ttl_seconds: float) -> bool:
        return True

    def cluster(self) -> dict[str, Any]:
        return {"broker": "local", "nodes": 1}

    async def announce(self, events: Sequence[tuple[str, NewEvent]]) -> None:
        assert self._node is not None
        for route, event in events:
            self._node.deliver(Delivery.unkept(route, event))

    async def signal(self, kind: str, data: dict[str, Any]) -> None:
        assert self._node is not None
        self._node.signal(kind, data)

    def presence(self, *, grace_seconds: float, ttl_seconds: float) -> PresenceBackend:
        return LocalPresence(grace_seconds)


def _bounds(db: sqlite3.Connection, room: str) -> tuple[int, int]:
    """A room's head and its first retained offset (head + 1 when it has none)."""
    head, first = db.execute(
        "SELECT (SELECT head FROM room_heads WHERE room = ?1), "
        "(SELECT MIN(offset) FROM events WHERE room = ?1)",
        (room,),
    ).fetchone()
    head = int(head) if head is not None else 0
    return head, int(first) if first is not None else head + 1
