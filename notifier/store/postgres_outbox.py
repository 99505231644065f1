"""Publishing inside the application's own transaction (PostgreSQL): the transactional outbox.

An application calls `SELECT notifier_publish(room, type, data)` in its transaction; the
event is a row of `notifier_outbox`, there exactly when the transaction commits. The function
takes a lock per room until the commit, so a room's rows are numbered in commit order, and
sends a NOTIFY that wakes the relays (which LISTEN). Each node relays the outbox, one node at
a time (an advisory lock for the relaying transaction):
it reads the oldest rows, appends them to the rooms' histories under their ids (at most once
each), and deletes them in the same transaction. A node that dies mid-way leaves them to the
next; the broker drops a second append of an id.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from ..errors import ErrorCode, NotifierError, StartupError
from .postgres_connections import init_connection

T = TypeVar("T")

MIGRATION = """
CREATE TABLE IF NOT EXISTS notifier_outbox (
    seq bigserial PRIMARY KEY, room text NOT NULL, type text NOT NULL,
    data jsonb NOT NULL DEFAULT '{}',
    id text NOT NULL DEFAULT md5(random()::text || clock_timestamp()::text),
    created_at bigint NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint
);
CREATE OR REPLACE FUNCTION notifier_publish(room text, type text, data jsonb DEFAULT '{}')
RETURNS text LANGUAGE plpgsql AS $$
DECLARE event_id text;
BEGIN
  -- A room's transactions take turns from here to their commit: its rows are numbered in
  -- commit order.
  PERFORM pg_advisory_xact_lock(hashtext('notifier-outbox:' || room));
  INSERT INTO notifier_outbox (room, type, data) VALUES (room, type, COALESCE(data, '{}'))
  RETURNING id INTO event_id;
  PERFORM pg_notify('notifier_outbox', '');
  RETURN event_id;
END $$;
"""

_RELAY_LOCK = 7_142_002
_MIGRATION_LOCK = 7_142_005


@dataclass(frozen=True)
class OutboxEvent:
    seq: int
    room: str
    type: str
    data: dict[str, Any]
    id: str
    created_at: int


Relay = Callable[[list[OutboxEvent]], Awaitable[list[OutboxEvent]]]


class PostgresOutbox:
    _url: str
    # A connection LISTENing for `notifier_publish`'s NOTIFY, and what it sets: the relay
    # wakes on a commit rather than on its next poll.
    _outbox_listener: asyncpg.Connection | None = None
    _outbox_published: asyncio.Event | None = None

    async def _run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        raise NotImplementedError  # PostgresStore's

    async def wait_for_outbox(self, timeout: float) -> None:
        """Until an application's transaction published something, or `timeout` (also the
        pace while the LISTEN connection cannot be had). A commit between this returning and
        the next look is not missed: its row is there before its notification."""
        published = await self._outbox_wakeups()
        if published is None:
            await asyncio.sleep(timeout)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(published.wait(), timeout)
        published.clear()

    async def _outbox_wakeups(self) -> asyncio.Event | None:
        listener = self._outbox_listener
        if listener is not None and not listener.is_closed():
            return self._outbox_published
        try:
            listener = await asyncpg.connect(self._url, timeout=5)
            published = asyncio.Event()
            await listener.add_listener("notifier_outbox", lambda *_: published.set())
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return None
        self._outbox_listener, self._outbox_published = listener, published
        published.set()  # look at once: what committed while nobody listened
        return published

    async def close_outbox_listener(self) -> None:
        if self._outbox_listener is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._outbox_listener.close(), 2)
            self._outbox_listener = None

    async def relay_outbox(self, relay: Relay, limit: int) -> int:
        """Hand the oldest committed outbox rows to `relay` (which appends them), and delete
        them in the same transaction; how many. 0 when another node is relaying."""

        async def take(db: asyncpg.Connection) -> int:
            async with db.transaction():
                if not await db.fetchval("SELECT pg_try_advisory_xact_lock($1)", _RELAY_LOCK):
                    return 0
                rows = await db.fetch(
                    "SELECT seq, room, type, data, id, created_at FROM notifier_outbox ORDER BY seq LIMIT $1",
                    limit,
                )
                if not rows:
                    return 0
                events = [
                    OutboxEvent(r["seq"], r["room"], r["type"], r["data"], r["id"], r["created_at"])
                    for r in rows
                ]
                done = await relay(events)  # an exception rolls the whole batch back
                await db.execute("DELETE FROM notifier_outbox WHERE seq = ANY($1)", [e.seq for e in done])
                return len(done)

        return await self._run(take)


class OutboxDatabase(PostgresOutbox):
    """The outbox in a database other than the store's (`NOTIFIER_OUTBOX_URL`): the
    application's own, so that its transactions need no access to notifier's. The function
    and table are created there at start; the relay appends to the broker as before."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._url, min_size=1, max_size=2, command_timeout=10, init=init_connection
            )
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                await conn.execute(MIGRATION)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if self._pool is not None:
                await self._pool.close()
            raise StartupError(f"NOTIFIER_OUTBOX_URL: cannot use PostgreSQL there: {exc}") from exc

    async def close(self) -> None:
        await self.close_outbox_listener()
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pool.close(), 5)
            self._pool = None

    async def _run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """An outage of the application's database defers relaying (logged by the relay); it
        does not make notifier unready, whose clients it does not concern."""
        if self._pool is None:
            raise NotifierError(ErrorCode.STORE_UNAVAILABLE, "the outbox's database is not open")
        try:
            async with self._pool.acquire(timeout=5) as conn:
                return await work(conn)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise NotifierError(
                ErrorCode.STORE_UNAVAILABLE,
                f"the outbox's database cannot be used right now: {type(exc).__name__}",
            ) from exc
