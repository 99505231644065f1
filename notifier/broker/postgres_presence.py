"""Presence for a cluster, in PostgreSQL (the PostgreSQL broker's).

Tables:
- `notifier_presence_rooms`   room, user -> connections on all nodes (0: gone, within the grace);
- `notifier_presence_mine`    node, room, user -> connections on that node;
- `notifier_presence_leaving` room, user -> when the grace ends;
- `notifier_presence_alive`   node -> until when its entries hold without a heartbeat.

Every change runs in one transaction under one advisory lock, as the Redis version's scripts
run one at a time: counts are read, changed and written back whole. Any node's sweep removes
the entries of nodes whose time ran out (killed with -9) and ends the graces that did.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import asyncpg

from . import EntriesLost, Member

_LOCK = 7_142_004
_SWEEP_LIMIT = 5000

SCHEMA = """
CREATE TABLE IF NOT EXISTS notifier_presence_rooms (
    room text NOT NULL, user_id text NOT NULL, count integer NOT NULL, PRIMARY KEY (room, user_id)
);
CREATE TABLE IF NOT EXISTS notifier_presence_mine (
    node text NOT NULL, room text NOT NULL, user_id text NOT NULL, count integer NOT NULL,
    PRIMARY KEY (node, room, user_id)
);
CREATE TABLE IF NOT EXISTS notifier_presence_leaving (
    room text NOT NULL, user_id text NOT NULL, due double precision NOT NULL, PRIMARY KEY (room, user_id)
);
CREATE INDEX IF NOT EXISTS notifier_presence_leaving_due ON notifier_presence_leaving (due);
CREATE TABLE IF NOT EXISTS notifier_presence_alive (node text PRIMARY KEY, until double precision NOT NULL);
"""


class PostgresPresence:
    def __init__(self, broker: Any, *, grace_seconds: float, ttl_seconds: float) -> None:
        """`broker`: the PostgresBroker whose pool and error handling this shares."""
        self._broker = broker
        self._node: str = broker.node_id
        self._grace = grace_seconds
        self._ttl = max(ttl_seconds, 1.0)
        self._registered = False

    async def _locked(self, work: Any) -> Any:
        async def run(db: asyncpg.Connection) -> Any:
            async with db.transaction():
                await db.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
                return await work(db)

        return await self._broker.call(run, "presence")

    async def change(self, deltas: dict[Member, int], now: float) -> list[Member]:
        async def change(db: asyncpg.Connection) -> list[Member] | None:
            if self._registered and not await self._alive(db):
                return None
            await self._register(db, now)
            return await self._apply(db, deltas.items(), now)

        joined = await self._locked(change)
        if joined is None:
            self._registered = False
            raise EntriesLost()
        self._registered = True
        return list(joined)

    async def replace_mine(self, counts: dict[Member, int], now: float) -> list[Member]:
        async def replace(db: asyncpg.Connection) -> list[Member]:
            await self._remove_node(db, self._node, now)
            await self._register(db, now)
            return await self._apply(db, counts.items(), now)

        joined: list[Member] = await self._locked(replace)
        self._registered = True
        return joined

    async def remove_mine(self, now: float) -> None:
        async def remove(db: asyncpg.Connection) -> None:
            await self._remove_node(db, self._node, now)
            await db.execute("DELETE FROM notifier_presence_alive WHERE node = $1", self._node)

        await self._locked(remove)
        self._registered = False

    async def heartbeat(self, now: float) -> bool:
        if not self._registered:
            return True  # nothing written yet, nothing to lose

        async def beat(db: asyncpg.Connection) -> bool:
            if not await self._alive(db):
                return False
            await self._register(db, now)
            return True

        kept = bool(await self._locked(beat))
        if not kept:
            self._registered = False
        return kept

    async def sweep(self, now: float) -> list[Member]:
        async def sweep(db: asyncpg.Connection) -> list[Member]:
            dead = await db.fetch("DELETE FROM notifier_presence_alive WHERE until < $1 RETURNING node", now)
            for row in dead:
                await self._remove_node(db, row["node"], now)
            due = await db.fetch(
                "DELETE FROM notifier_presence_leaving WHERE (room, user_id) IN ("
                " SELECT room, user_id FROM notifier_presence_leaving WHERE due <= $1 ORDER BY due LIMIT $2"
                ") RETURNING room, user_id",
                now,
                _SWEEP_LIMIT,
            )
            if not due:
                return []
            gone = await db.fetch(
                "DELETE FROM notifier_presence_rooms r "
                "USING unnest($1::text[], $2::text[]) AS d(room, user_id) "
                "WHERE r.room = d.room AND r.user_id = d.user_id AND r.count = 0 RETURNING r.room, r.user_id",
                [row["room"] for row in due],
                [row["user_id"] for row in due],
            )
            return [(row["room"], row["user_id"]) for row in gone]

        left: list[Member] = await self._locked(sweep)
        return left

    async def members(self, room: str) -> dict[str, int]:
        rows = await self._broker.call(
            lambda db: db.fetch("SELECT user_id, count FROM notifier_presence_rooms WHERE room = $1", room),
            "presence",
        )
        return {row["user_id"]: int(row["count"]) for row in rows}

    # Inside the lock

    async def _alive(self, db: asyncpg.Connection) -> bool:
        found = await db.fetchval("SELECT 1 FROM notifier_presence_alive WHERE node = $1", self._node)
        return found is not None

    async def _register(self, db: asyncpg.Connection, now: float) -> None:
        await db.execute(
            "INSERT INTO notifier_presence_alive (node, until) VALUES ($1, $2) "
            "ON CONFLICT (node) DO UPDATE SET until = excluded.until",
            self._node,
            now + self._ttl,
        )

    async def _apply(
        self, db: asyncpg.Connection, deltas: Iterable[tuple[Member, int]], now: float
    ) -> list[Member]:
        """This node's deltas, each kept from taking its count below zero; the members that
        were absent until now."""
        wanted = [(room, user, delta) for (room, user), delta in deltas]
        if not wanted:
            return []
        rooms, users = [w[0] for w in wanted], [w[1] for w in wanted]
        mine = {
            (row["room"], row["user_id"]): int(row["count"])
            for row in await db.fetch(
                "SELECT m.room, m.user_id, m.count FROM notifier_presence_mine m "
                "JOIN unnest($2::text[], $3::text[]) AS d(room, user_id) "
                "ON m.room = d.room AND m.user_id = d.user_id "
                "WHERE m.node = $1",
                self._node,
                rooms,
                users,
            )
        }
        changes: dict[Member, int] = {}
        for room, user, delta in wanted:
            member = (room, user)
            held = mine.get(member, 0)
            delta = max(delta, -held)
            if delta:
                mine[member] = held + delta
                changes[member] = changes.get(member, 0) + delta
        kept = [(room, user, count) for (room, user), count in mine.items() if count]
        dropped = [(room, user) for (room, user), count in mine.items() if not count]
        if kept:
            await db.executemany(
                "INSERT INTO notifier_presence_mine (node, room, user_id, count) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (node, room, user_id) DO UPDATE SET count = excluded.count",
                [(self._node, room, user, count) for room, user, count in kept],
            )
        if dropped:
            await db.executemany(
                "DELETE FROM notifier_presence_mine WHERE node = $1 AND room = $2 AND user_id = $3",
                [(self._node, room, user) for room, user in dropped],
            )
        return await _add(db, changes, now + self._grace)

    async def _remove_node(self, db: asyncpg.Connection, node: str, now: float) -> None:
        rows = await db.fetch(
            "DELETE FROM notifier_presence_mine WHERE node = $1 RETURNING room, user_id, count", node
        )
        await _add(db, {(row["room"], row["user_id"]): -int(row["count"]) for row in rows}, now + self._grace)


async def _add(db: asyncpg.Connection, changes: dict[Member, int], leaving_at: float) -> list[Member]:
    """Apply deltas to the rooms' counts; the members absent until now."""
    if not changes:
        return []
    members = list(changes)
    before = {
        (row["room"], row["user_id"]): int(row["count"])
        for row in await db.fetch(
            "SELECT r.room, r.user_id, r.count FROM notifier_presence_rooms r "
            "JOIN unnest($1::text[], $2::text[]) AS d(room, user_id) "
            "ON r.room = d.room AND r.user_id = d.user_id",
            [m[0] for m in members],
            [m[1] for m in members],
        )
    }
    joined, rows, leaving = [], [], []
    for member, delta in changes.items():
        previous = before.get(member)
        after = max((previous or 0) + delta, 0)
        rows.append((*member, after))
        if after == 0:
            leaving.append((*member, leaving_at))
        elif previous is None:
            joined.append(member)
    await db.executemany(
        "INSERT INTO notifier_presence_rooms (room, user_id, count) VALUES ($1, $2, $3) "
        "ON CONFLICT (room, user_id) DO UPDATE SET count = excluded.count",
        rows,
    )
    if leaving:
        await db.executemany(
            "INSERT INTO notifier_presence_leaving (room, user_id, due) VALUES ($1, $2, $3) "
            "ON CONFLICT (room, user_id) DO UPDATE SET due = excluded.due",
            leaving,
        )
    return joined
