"""The PostgreSQL broker: room histories and delivery shared by every service process, with
no Redis (`NOTIFIER_BROKER_URL=postgresql://...`).

Each room has a head (its last offset) and its events in tables. Appending takes the room's
next offset by updating its head row, inserts the event and sends a NOTIFY, all in the
publishing transaction (`notifier_broker_append`, one call per batch): the head row stays
locked until the commit, so a room's offsets commit in order, and PostgreSQL delivers
notifications in commit order, so every process hears a room's events in offset order.

Every process LISTENs on one channel and keeps, per followed room, the last offset it
delivered: a duplicate is dropped, a gap is filled from the table before the event that
revealed it, and after the listening connection is lost (or goes quiet: each process
notifies itself every second and must hear it within three) every followed room's head is
read again and what was missed is delivered from the table. A notification too big for
NOTIFY (8,000 bytes) carries no data and is read from the table.

One epoch for the whole database (in `notifier_broker_meta`): a new database is a new
history. A head found below what this process delivered (the database restored from an
older backup) retires the epoch: clients positioned in it are told `recovered: false`.
Every process hears every room's events (one channel) and drops those of rooms it does not
follow; this is the broker for a cluster of a few nodes, Redis for more.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg
import orjson

from ..batching import Batcher
from ..errors import ErrorCode, NotifierError, StartupError
from ..health import Health
from ..logs import get_logger
from ..records import Envelope, StreamPosition, new_id
from ..rooms import ALL_PROJECTS_ROOM, BROADCAST_ROOM
from ..store.postgres_connections import describe, unavailable
from . import UNKEPT, Delivery, Guard, NewEvent, Node, PresenceBackend
from .postgres_presence import SCHEMA as PRESENCE_SCHEMA
from .postgres_presence import PostgresPresence

log = get_logger("notifier.broker")

T = TypeVar("T")
COMPONENT = "broker"
SUBSCRIPTION = "broker subscription"
CHANNEL = "notifier_broker"
_HEARTBEAT_SECONDS = 1.0
_SILENCE_SECONDS = 3.0
_NODE_TTL_SECONDS = 5.0
_POOL_SIZE = 10
# NOTIFY takes up to 8,000 bytes; a bigger event's notification leaves its data in the table.
_NOTIFY_LIMIT = 7900
_SCHEMA_LOCK = 7_142_003
_CATCH_UP_BATCH = 1000
_MAX_QUEUED = 100_000  # notifications waiting to be handled here

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS notifier_broker_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS notifier_room_heads (room text PRIMARY KEY, head bigint NOT NULL);
CREATE TABLE IF NOT EXISTS notifier_room_events (
    room text NOT NULL, "offset" bigint NOT NULL, id text NOT NULL, type text NOT NULL,
    ts bigint NOT NULL, data text NOT NULL, PRIMARY KEY (room, "offset")
);
CREATE INDEX IF NOT EXISTS notifier_room_events_id ON notifier_room_events (room, id);
CREATE INDEX IF NOT EXISTS notifier_room_events_ts ON notifier_room_events (ts);
CREATE TABLE IF NOT EXISTS notifier_room_guards (key text PRIMARY KEY, version bigint NOT NULL);
CREATE TABLE IF NOT EXISTS notifier_broker_nodes (
    node text PRIMARY KEY, seen double precision NOT NULL, info text NOT NULL
);
CREATE TABLE IF NOT EXISTS notifier_broker_claims (name text PRIMARY KEY, until double precision NOT NULL);

-- One batch of appends: per event its offset (negative: appended before under its id, a
-- retry; the row is there) and the notification, sent at the commit.
CREATE OR REPLACE FUNCTION notifier_broker_append(
    rooms text[], ids text[], types text[], tss bigint[], datas text[], onces boolean[]
) RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    offsets bigint[] := '{{}}';
    o bigint;
    head text;
BEGIN
    FOR i IN 1 .. coalesce(array_length(rooms, 1), 0) LOOP
        o := NULL;
        IF onces[i] THEN
            SELECT -e."offset" INTO o FROM notifier_room_events e WHERE e.room = rooms[i] AND e.id = ids[i];
        END IF;
        IF o IS NULL THEN
            INSERT INTO notifier_room_heads AS h (room, head) VALUES (rooms[i], 1)
                ON CONFLICT (room) DO UPDATE SET head = h.head + 1 RETURNING h.head INTO o;
            INSERT INTO notifier_room_events (room, "offset", id, type, ts, data)
                VALUES (rooms[i], o, ids[i], types[i], tss[i], datas[i]);
            head := 'K' || rooms[i] || E'\\n' || o || E'\\n' || types[i] || E'\\n' || ids[i] || E'\\n'
                || tss[i] || E'\\n';
            IF octet_length(head) + octet_length(datas[i]) <= {_NOTIFY_LIMIT} THEN
                PERFORM pg_notify('{CHANNEL}', head || datas[i]);
            ELSE
                PERFORM pg_notify('{CHANNEL}', head);
            END IF;
        END IF;
        offsets := offsets || o;
    END LOOP;
    RETURN offsets;
END $$;
"""


class PostgresBroker:
    shared = True

    def __init__(
        self,
        url: str,
        health: Health,
        *,
        max_events_per_room: int,
        max_age_seconds: float,
        postgres_schema: str | None = None,
    ) -> None:
        self._url = url
        # The tables go where the store's do (NOTIFIER_POSTGRES_SCHEMA): on PostgreSQL 15 and
        # later a role may have no CREATE on `public`.
        self._schema = postgres_schema
        self._health = health
        self._max_events = max_events_per_room
        self._max_age = max_age_seconds
        self.node_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.epoch = ""
        self._pool: asyncpg.Pool | None = None
        self._node: Node | None = None
        self._appends: Batcher[tuple[Sequence[NewEvent], Guard | None], list[Envelope] | None] = Batcher(
            self._append_batch, max_in_flight=2
        )
        self._followed: set[str] = {BROADCAST_ROOM}
        self._last: dict[str, int] = {}  # per followed room, the offset delivered last here
        self._last_ids: dict[str, tuple[int, str]] = {}  # and that event's id
        self._inbox: asyncio.Queue[str | None] = asyncio.Queue()  # None: catch up first
        self._listening: asyncpg.Connection | None = None
        self._broken = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._heard_own = 0.0
        self._cluster: dict[str, Any] = {"broker": "postgresql", "node": self.node_id, "nodes": []}

    # Lifecycle

    async def start(self, node: Node) -> None:
        self._node = node
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=1,
                max_size=_POOL_SIZE,
                command_timeout=10,
                server_settings={"search_path": self._schema} if self._schema else None,
            )
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                await conn.execute(_SCHEMA)
                await conn.execute(PRESENCE_SCHEMA)
                await conn.execute(
                    "INSERT INTO notifier_broker_meta (key, value) VALUES ('epoch', $1) "
                    "ON CONFLICT DO NOTHING",
                    new_id()[:16],
                )
            await self._load_epoch()
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if self._pool is not None:
                await self._pool.close()
            raise StartupError(
                f"NOTIFIER_BROKER_URL: cannot use PostgreSQL at {describe(self._url)}: {exc}"
            ) from exc
        self._heard_own = time.monotonic()
        self._tasks = [
            asyncio.ensure_future(self._listen()),
            asyncio.ensure_future(self._consume()),
            asyncio.ensure_future(self._beat()),
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), 10)

    async def stop(self) -> None:
        await self._appends.close()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await self.call(
                    lambda db: db.execute("DELETE FROM notifier_broker_nodes WHERE node = $1", self.node_id)
                )
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pool.close(), 5)
            self._pool = None

    async def call(self, work: Callable[[asyncpg.Connection], Awaitable[T]], operation: str = "call") -> T:
        """Work on a pooled connection; an outage becomes STORE_UNAVAILABLE."""
        if self._pool is None:
            raise NotifierError(ErrorCode.STORE_UNAVAILABLE, "the broker is not started")
        started = time.perf_counter()
        try:
            async with self._pool.acquire(timeout=5) as conn:
                result = await work(conn)
        except Exception as exc:
            if not unavailable(exc):
                raise
            self._health.fail(COMPONENT, f"PostgreSQL at {describe(self._url)}: {type(exc).__name__}: {exc}")
            raise NotifierError(
                ErrorCode.STORE_UNAVAILABLE, "the broker cannot be reached right now; retry"
            ) from exc
        self._health.recover(COMPONENT)
        self._health.timed(COMPONENT, operation, time.perf_counter() - started)
        return result

    async def _load_epoch(self) -> None:
        assert self._pool is not None
        async with self._pool.acquire() as db:
            await self._reload_epoch(db)

    # Appending

    def publish(
        self, events: Sequence[NewEvent], guard: Guard | None = None
    ) -> Awaitable[list[Envelope] | None]:
        return self._appends.submit((events, guard))

    async def _append_batch(
        self, groups: list[tuple[Sequence[NewEvent], Guard | None]]
    ) -> list[list[Envelope] | None]:
        committing = False

        async def append(db: asyncpg.Connection) -> tuple[list[bool], list[int], dict[tuple[str, int], Any]]:
            nonlocal committing
            transaction = db.transaction()
            await transaction.start()
            try:
                passed = []
                for _, guard in groups:
                    passed.append(
                        guard is None
                        or await db.fetchval(
                            "INSERT INTO notifier_room_guards AS g (key, version) VALUES ($1, $2) "
                            "ON CONFLICT (key) DO UPDATE SET version = excluded.version "
                            "WHERE g.version < excluded.version RETURNING true",
                            guard.key,
                            guard.version,
                        )
                        is not None
                    )
                events = [e for ok, (group, _) in zip(passed, groups, strict=True) if ok for e in group]
                offsets: list[int] = []
                if events:
                    offsets = await db.fetchval(
                        "SELECT notifier_broker_append($1, $2, $3, $4, $5, $6)",
                        [e.room for e in events],
                        [e.id for e in events],
                        [e.type for e in events],
                        [e.ts for e in events],
                        [orjson.dumps(e.data).decode() for e in events],
                        [e.once for e in events],
                    )
                # Repeats answer the first append's envelope.
                repeats = [(e.room, -o) for e, o in zip(events, offsets, strict=True) if o < 0]
                earlier: dict[tuple[str, int], Any] = {}
                for room, offset in repeats:
                    earlier[(room, offset)] = await db.fetchrow(
                        'SELECT ts, data FROM notifier_room_events WHERE room = $1 AND "offset" = $2',
                        room,
                        offset,
                    )
            except BaseException:
                with contextlib.suppress(Exception):
                    await transaction.rollback()
                raise
            committing = True
            await transaction.commit()
            return passed, offsets, earlier

        try:
            passed, offsets, earlier = await self.call(append, "append")
        except NotifierError as exc:
            if committing and exc.code == ErrorCode.STORE_UNAVAILABLE:
                # The connection broke during the commit: it may have happened. Only a retry
                # under the same idempotency key is safe (its event is appended at most once).
                raise NotifierError(
                    ErrorCode.OUTCOME_UNKNOWN,
                    "the broker's connection broke while committing: this may or may not have been "
                    "stored; retry with the same idempotency key",
                ) from exc
            raise
        results: list[list[Envelope] | None] = []
        at = 0
        epoch = self.epoch
        for ok, (events, _) in zip(passed, groups, strict=True):
            if not ok:
                results.append(None)
                continue
            envelopes = []
            for event in events:
                offset = offsets[at]
                at += 1
                ts, data = event.ts, event.data
                if offset < 0:
                    offset = -offset
                    row = earlier.get((event.room, offset))
                    if row is not None:
                        ts, data = row["ts"], orjson.loads(row["data"])
                envelopes.append(
                    {
                        "id": event.id,
                        "type": event.type,
                        "room": event.room,
                        "ts": ts,
                        "data": data,
                        "offset": offset,
                        "epoch": epoch,
                    }
                )
            results.append(envelopes)
        return results

    # Reading

    async def read(self, room: str, after: int, limit: int) -> list[Envelope]:
        rows = await self.call(
            lambda db: db.fetch(
                'SELECT "offset", id, type, ts, data FROM notifier_room_events '
                'WHERE room = $1 AND "offset" > $2 ORDER BY "offset" LIMIT $3',
                room,
                after,
                limit,
            )
        )
        epoch = self.epoch
        return [
            {
                "id": row["id"],
                "type": row["type"],
                "room": room,
                "ts": row["ts"],
                "data": orjson.loads(row["data"]),
                "offset": row["offset"],
                "epoch": epoch,
            }
            for row in rows
        ]

    async def bounds(self, room: str) -> tuple[StreamPosition, int]:
        # What was delivered here before the query was sent: the query's snapshot holds at
        # least that much (an event delivered while it runs may be newer than its snapshot).
        delivered = self._last.get(room)
        row = await self.call(
            lambda db: db.fetchrow(
                "SELECT (SELECT head FROM notifier_room_heads WHERE room = $1) AS head, "
                '(SELECT min("offset") FROM notifier_room_events WHERE room = $1) AS first',
                room,
            )
        )
        head = int(row["head"] or 0)
        first = int(row["first"]) if row["first"] is not None else head + 1
        if delivered is not None and head < delivered:
            await self._retire_epoch(f"room {room!r} has head {head}, below {delivered} delivered here")
        return StreamPosition(self.epoch, head), first

    async def trim(self, older_than_ts: int, max_per_room: int) -> int:
        async def trim(db: asyncpg.Connection) -> int:
            by_age = await db.execute("DELETE FROM notifier_room_events WHERE ts < $1", older_than_ts)
            by_count = await db.execute(
                "DELETE FROM notifier_room_events e USING notifier_room_heads h WHERE h.room = e.room "
                'AND e."offset" <= h.head - $1',
                max_per_room,
            )
            return int(by_age.split()[-1]) + int(by_count.split()[-1])

        return await self.call(trim, "trim")

    async def _retire_epoch(self, evidence: str) -> None:
        """The database holds less than was delivered here: its history starts a new epoch,
        so no client takes the reused offsets for the ones it saw."""
        old = self.epoch
        await self.call(
            lambda db: db.execute(
                "UPDATE notifier_broker_meta SET value = $1 WHERE key = 'epoch' AND value = $2",
                new_id()[:16],
                old,
            )
        )
        await self.call(lambda db: self._reload_epoch(db))
        log.warning(
            "broker_history_rewound",
            evidence=evidence,
            detail="PostgreSQL holds less than was delivered (restored from an older backup): a new epoch; "
            "clients positioned in the old one are told recovered: false",
        )
        assert self._node is not None
        for room in list(self._last):
            self._node.lost(room, "epoch_changed")
        self._last.clear()
        self._last_ids.clear()

    async def _reload_epoch(self, db: asyncpg.Connection) -> None:
        self.epoch = str(await db.fetchval("SELECT value FROM notifier_broker_meta WHERE key = 'epoch'"))

    # Delivery

    async def follow(self, room: str) -> None:
        if not self._subscribed.is_set():
            raise NotifierError(ErrorCode.STORE_UNAVAILABLE, "the broker is reconnecting; retry")
        self._followed.add(room)  # every room's events reach this process already

    def unfollow(self, room: str) -> None:
        if room != BROADCAST_ROOM:
            self._followed.discard(room)
            self._last.pop(room, None)
            self._last_ids.pop(room, None)

    def observe(self, room: str, position: StreamPosition) -> None:
        if position.epoch == self.epoch:
            self._last.setdefault(room, position.offset)

    async def _listen(self) -> None:
        """Hold the LISTEN connection; after it breaks (or goes quiet), listen again and catch
        up from the tables."""
        backoff = 0.1
        while True:
            connection: asyncpg.Connection | None = None
            try:
                connection = await asyncpg.connect(self._url, timeout=5)
                self._broken.clear()
                connection.add_termination_listener(lambda _: self._broken.set())
                await connection.add_listener(CHANNEL, self._heard)
                self._listening = connection
                self._heard_own = time.monotonic()
                self._inbox.put_nowait(None)  # catch up before what is heard from now on
                backoff = 0.1
                await self._broken.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever it is, delivery must come back: listen again
                self._health.fail(SUBSCRIPTION, f"PostgreSQL LISTEN at {describe(self._url)}: {exc!r}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                self._listening = None
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(connection.close(), 2)

    def _heard(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        if self._inbox.qsize() >= _MAX_QUEUED:
            # Far behind: drop what waits and catch up from the tables instead, as after a
            # lost connection (memory stays bounded whatever the cluster's rate).
            while not self._inbox.empty():
                self._inbox.get_nowait()
            self._inbox.put_nowait(None)
            return
        self._inbox.put_nowait(payload)

    async def _consume(self) -> None:
        """Notifications in the order PostgreSQL sent them, one at a time (a gap is filled
        before the next is looked at)."""
        node = self._node
        assert node is not None
        while True:
            payload = await self._inbox.get()
            try:
                if payload is None:
                    await self._catch_up()
                    if self._subscribed.is_set():
                        node.signals_missed()
                    self._subscribed.set()
                    self._health.recover(SUBSCRIPTION)
                else:
                    await self._on_notification(payload)
            except NotifierError as exc:
                # The tables could not be read: listen again, which catches up once they can.
                self._health.fail(SUBSCRIPTION, f"catching up from PostgreSQL: {exc.message}")
                self._broken.set()
            except Exception as exc:  # a notification not of ours (the channel is public)
                log.warning("broker_notification_refused", detail=f"{type(exc).__name__}: {exc}")

    async def _on_notification(self, payload: str) -> None:
        node = self._node
        assert node is not None
        kind, body = payload[:1], payload[1:]
        if kind == "!":
            if body == self.node_id:
                self._heard_own = time.monotonic()
            return
        if kind == "S":
            message = orjson.loads(body)
            node.signal(message["signal"], message["data"])
            return
        if kind == "U":
            route, _, text = body.partition("\n")
            event_type, _, text = text.partition("\n")
            if route in self._followed:
                node.deliver(Delivery(route, UNKEPT, "", event_type, text))
            return
        room, offset_text, event_type, event_id, ts, data = body.split("\n", 5)
        offset = int(offset_text)
        if room not in self._followed:
            if ALL_PROJECTS_ROOM in self._followed and room.startswith("project:"):
                delivery = await self._delivery(room, offset, event_type, event_id, ts, data)
                if delivery is not None:
                    node.deliver(delivery)
            return
        last = self._last.get(room)
        if last is not None:
            if offset <= last:
                known = self._last_ids.get(room)
                if known is not None and known[0] == offset and known[1] != event_id:
                    # Another event under an offset delivered already: the database went back
                    # (restored from an older backup) and hands offsets out again.
                    await self._retire_epoch(f"room {room!r} reused offset {offset}")
                return  # delivered already (a catch-up got there first)
            if offset > last + 1 and not await self._fill(room, last, offset - 1):
                node.lost(room, "history_truncated")
        delivery = await self._delivery(room, offset, event_type, event_id, ts, data)
        self._last[room] = offset
        self._last_ids[room] = (offset, event_id)
        if delivery is not None:
            node.deliver(delivery)

    async def _delivery(
        self, room: str, offset: int, event_type: str, event_id: str, ts: str, data: str
    ) -> Delivery | None:
        if not data:  # too big for NOTIFY: in the table
            events = await self.read(room, offset - 1, 1)
            return Delivery.of(events[0]) if events and events[0]["offset"] == offset else None
        text = (
            f'{{"id":{orjson.dumps(event_id).decode()},"type":{orjson.dumps(event_type).decode()},'
            f'"room":{orjson.dumps(room).decode()},"ts":{ts},"data":{data},"offset":{offset},'
            f'"epoch":"{self.epoch}"}}'
        )
        return Delivery(room, offset, self.epoch, event_type, text)

    async def _fill(self, room: str, last: int, until: int) -> bool:
        """Deliver the events after `last` up to `until` from the table; False if some are no
        longer kept."""
        node = self._node
        assert node is not None
        expected = last + 1
        while expected <= until:
            missing = await self.read(room, expected - 1, min(until - expected + 1, 500))
            if not missing:
                break
            for envelope in missing:
                if envelope["offset"] != expected:
                    return False
                node.deliver(Delivery.of(envelope))
                expected += 1
        self._last[room] = max(self._last.get(room, 0), expected - 1)
        return expected == until + 1

    async def _catch_up(self) -> None:
        """After (re)listening: what the followed rooms got while nothing was heard."""
        node = self._node
        assert node is not None
        old_epoch = self.epoch
        await self.call(lambda db: self._reload_epoch(db))
        if self.epoch != old_epoch:
            for room in list(self._last):
                node.lost(room, "epoch_changed")
            self._last.clear()
            self._last_ids.clear()
            return
        rooms = [room for room in self._last if room in self._followed]
        for start in range(0, len(rooms), _CATCH_UP_BATCH):
            batch = rooms[start : start + _CATCH_UP_BATCH]
            rows = await self.call(
                lambda db, batch=batch: db.fetch(  # type: ignore[misc]
                    "SELECT room, head FROM notifier_room_heads WHERE room = ANY($1)", batch
                )
            )
            heads = {row["room"]: int(row["head"]) for row in rows}
            self._heard_own = time.monotonic()
            for room in batch:
                last = self._last.get(room)
                if last is None:
                    continue
                head = heads.get(room, 0)
                if head < last:
                    await self._retire_epoch(f"room {room!r} has head {head}, below {last} delivered here")
                    return
                if head > last and not await self._fill(room, last, head):
                    node.lost(room, "history_truncated")
                    self._last[room] = head

    # Heartbeats, the node registry, and one-offs

    async def _beat(self) -> None:
        assert self._node is not None
        while True:
            await asyncio.sleep(_HEARTBEAT_SECONDS)
            info = orjson.dumps(self._node.describe()).decode()

            async def beat(db: asyncpg.Connection, info: str = info) -> list[Any]:
                async with db.transaction():
                    await db.execute("SELECT pg_notify($1, $2)", CHANNEL, "!" + self.node_id)
                    await db.execute(
                        "INSERT INTO notifier_broker_nodes (node, seen, info) "
                        "VALUES ($1, extract(epoch from clock_timestamp()), $2) "
                        "ON CONFLICT (node) DO UPDATE SET seen = excluded.seen, info = excluded.info",
                        self.node_id,
                        info,
                    )
                    await db.execute(
                        "DELETE FROM notifier_broker_nodes "
                        "WHERE seen < extract(epoch from clock_timestamp()) - $1",
                        _NODE_TTL_SECONDS,
                    )
                    return list(await db.fetch("SELECT node, info FROM notifier_broker_nodes ORDER BY node"))

            try:
                rows = await asyncio.wait_for(self.call(beat, "heartbeat"), _HEARTBEAT_SECONDS * 2)
                nodes = [{"id": row["node"], **orjson.loads(row["info"])} for row in rows]
                self._cluster = {
                    "broker": "postgresql",
                    "node": self.node_id,
                    "nodes": nodes,
                    "user_connections": sum(int(n.get("user_connections", 0)) for n in nodes),
                }
            except Exception as exc:  # the silence check below must go on whatever failed
                self._health.fail(COMPONENT, f"PostgreSQL at {describe(self._url)}: {exc!r}")
            if time.monotonic() - self._heard_own > _SILENCE_SECONDS:
                # Our own notifications no longer come back: listen again and catch up.
                self._health.fail(SUBSCRIPTION, "the PostgreSQL LISTEN went silent; listening again")
                self._heard_own = time.monotonic()
                self._broken.set()

    async def claim(self, name: str, ttl_seconds: float) -> bool:
        won = await self.call(
            lambda db: db.fetchval(
                "INSERT INTO notifier_broker_claims AS c (name, until) "
                "VALUES ($1, extract(epoch from clock_timestamp()) + $2) "
                "ON CONFLICT (name) DO UPDATE SET until = excluded.until "
                "WHERE c.until < extract(epoch from clock_timestamp()) RETURNING true",
                name,
                ttl_seconds,
            )
        )
        return bool(won)

    def cluster(self) -> dict[str, Any]:
        return self._cluster

    async def announce(self, events: Sequence[tuple[str, NewEvent]]) -> None:
        payloads = []
        for route, event in events:
            delivery = Delivery.unkept(route, event)
            payload = f"U{route}\n{event.type}\n{delivery.text}"
            if len(payload.encode()) > _NOTIFY_LIMIT:
                log.warning("announcement_too_big", route=route, type=event.type, limit=_NOTIFY_LIMIT)
                continue
            payloads.append(payload)

        async def send(db: asyncpg.Connection) -> None:
            await db.execute("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", CHANNEL, payloads)

        await self.call(send, "announce")

    async def signal(self, kind: str, data: dict[str, Any]) -> None:
        message = "S" + orjson.dumps({"signal": kind, "data": data}).decode()
        if len(message.encode()) > _NOTIFY_LIMIT:
            raise NotifierError(ErrorCode.INVALID_PAYLOAD, f"a signal takes at most {_NOTIFY_LIMIT} bytes")
        await self.call(lambda db: db.execute("SELECT pg_notify($1, $2)", CHANNEL, message), "signal")

    def presence(self, *, grace_seconds: float, ttl_seconds: float) -> PresenceBackend:
        return PostgresPresence(self, grace_seconds=grace_seconds, ttl_seconds=ttl_seconds)
