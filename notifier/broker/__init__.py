"""Room streams: each event appended to its room's history with the next offset, then delivered
to the connections in that room on every node, in offset order.

The in-process broker (`local`) keeps histories in the SQLite database of the embedded store
and delivers within the process; the Redis broker (`redis`) keeps them in Redis and delivers to
every node through Redis pub/sub; the PostgreSQL broker (`postgres`) keeps them in tables and
delivers by LISTEN/NOTIFY. Chosen by `NOTIFIER_BROKER_URL` (empty: in-process).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from ..errors import StartupError
from ..health import Health
from ..records import Envelope, StreamPosition
from ..store import Store

# The offset of an event that is delivered but not kept (presence): it is never replayed.
UNKEPT = -1


class Delivery:
    """An event on its way to this process's connections: the envelope as JSON text (encoded
    once, by whoever appended it) and what delivery needs to know without decoding it."""

    __slots__ = ("_envelope", "epoch", "offset", "room", "text", "type")

    def __init__(
        self, room: str, offset: int, epoch: str, event_type: str, text: str, envelope: Envelope | None = None
    ) -> None:
        self.room = room
        self.offset = offset
        self.epoch = epoch
        self.type = event_type
        self.text = text
        self._envelope = envelope

    @classmethod
    def of(cls, envelope: Envelope) -> Delivery:
        return cls(
            envelope["room"],
            envelope["offset"],
            envelope["epoch"],
            envelope["type"],
            orjson.dumps(envelope).decode(),
            envelope,
        )

    @classmethod
    def unkept(cls, route: str, event: NewEvent) -> Delivery:
        """An event delivered to the followers of `route` (the envelope names `event.room`)."""
        envelope = {
            "id": event.id,
            "type": event.type,
            "room": event.room,
            "ts": event.ts,
            "data": event.data,
        }
        return cls(route, UNKEPT, "", event.type, orjson.dumps(envelope).decode(), envelope)

    @property
    def kept(self) -> bool:
        return self.offset != UNKEPT

    @property
    def envelope(self) -> Envelope:
        if self._envelope is None:
            self._envelope = orjson.loads(self.text)
        return self._envelope


class Node(Protocol):
    """What a broker needs from the process it runs in."""

    def deliver(self, delivery: Delivery) -> None:
        """Every event, in offset order per room."""

    def lost(self, room: str, reason: str) -> None:
        """The room's history changed or has a gap that cannot be replayed: its connections
        here must recover (they reconnect and are told `recovered: false`)."""

    def describe(self) -> dict[str, Any]:
        """What this process tells the others about itself (heartbeats)."""
        ...

    def signal(self, kind: str, data: dict[str, Any]) -> None:
        """A message to every node (this one included), such as a user's revocation."""

    def signals_missed(self) -> None:
        """Signals may have been missed (the subscription was lost): rebuild what they carry
        from the store."""


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended: everything but its offset and epoch."""

    room: str
    type: str
    data: dict[str, Any]
    id: str
    ts: int
    # Appended at most once under its id (an idempotent request's event, whose id derives from
    # the key): a second append of it answers the first one's offset, atomically with the
    # append itself, so a retry after a crash between append and completion adds nothing.
    once: bool = False


@dataclass(frozen=True, slots=True)
class Guard:
    """Append only if `version` is newer than any appended before under `key`.

    Task events carry the task's version: an older snapshot (from a slower node) arriving after
    a newer one is dropped, so progress never goes backwards in any room.
    """

    key: str
    version: int


class Broker(Protocol):
    # True when several service processes share the histories and deliveries.
    shared: bool

    async def start(self, node: Node) -> None:
        """Open the histories; from now on deliver every event to `node`, in offset order."""

    async def follow(self, room: str) -> None:
        """A connection here is joining the room: deliver its events here from now on (once
        this returns, before the joining connection reads the room's history)."""

    def unfollow(self, room: str) -> None:
        """No connection here follows the room any more."""

    def observe(self, room: str, position: StreamPosition) -> None:
        """A connection here joined the room at this position (where delivery stands)."""

    async def stop(self) -> None: ...

    def publish(
        self, events: Sequence[NewEvent], guard: Guard | None = None
    ) -> Awaitable[list[Envelope] | None]:
        """Append the events to their rooms, atomically; durable when this returns. None when
        the guard refused them."""
        ...

    async def announce(self, events: Sequence[tuple[str, NewEvent]]) -> None:
        """Deliver each event to the connections following its route, on every node, without
        keeping it: no offset, never replayed, and no room's bounded history is spent on it
        (presence changes)."""

    async def read(self, room: str, after: int, limit: int) -> list[Envelope]:
        """Retained events of `room` with an offset above `after`, oldest first."""
        ...

    async def bounds(self, room: str) -> tuple[StreamPosition, int]:
        """The room's head position, and the lowest offset still retained (head + 1 if none)."""
        ...

    async def trim(self, older_than_ts: int, max_per_room: int) -> int: ...

    async def claim(self, name: str, ttl_seconds: float) -> bool:
        """Win a cluster-wide one-off (a refresh tick): True on exactly one node."""
        ...

    def cluster(self) -> dict[str, Any]:
        """The nodes alive and their connections (this node alone for the in-process broker)."""
        ...

    async def signal(self, kind: str, data: dict[str, Any]) -> None:
        """Tell every node's `Node.signal` (not stored: what must last is in the store)."""

    def presence(self, *, grace_seconds: float, ttl_seconds: float) -> PresenceBackend:
        """Presence kept where this broker's nodes can all see it."""
        ...


# Presence: (room, user)
Member = tuple[str, str]


class PresenceBackend(Protocol):
    """Connection counts per room and user, for every node. `now` is wall-clock seconds."""

    async def change(self, deltas: dict[Member, int], now: float) -> list[Member]:
        """Add each delta to this node's count; the members that were absent until now."""
        ...

    async def sweep(self, now: float) -> list[Member]:
        """Members whose grace has run out with no connection left (on any node, dead nodes'
        entries removed first): they are absent now. Each is returned to one caller only."""
        ...

    async def members(self, room: str) -> dict[str, int]:
        """Users present in the room and their connections (0: gone, within the grace)."""
        ...

    async def heartbeat(self, now: float) -> bool:
        """Keep this node's entries alive; False if they had been dropped meanwhile."""
        ...

    async def replace_mine(self, counts: dict[Member, int], now: float) -> list[Member]:
        """Make this node's entries exactly `counts`; the members that became present."""
        ...

    async def remove_mine(self, now: float) -> None:
        """This node stops: its connections leave (their users get the grace)."""
        ...


class EntriesLost(Exception):
    """The backend dropped this node's entries (thought dead): write them all again."""


def open_broker(url: str, store: Store, health: Health, **options: Any) -> Broker:
    if not url:
        from ..store.sqlite import SqliteStore
        from .local import LocalBroker

        if not isinstance(store, SqliteStore):
            raise StartupError(
                "NOTIFIER_STORE_URL: a PostgreSQL store needs a shared broker, "
                "NOTIFIER_BROKER_URL=postgresql://... (the same database will do) or redis://..."
            )
        return LocalBroker(store.db, max_events_per_room=options["max_events_per_room"])
    if url.startswith(("redis://", "rediss://", "unix://", "redis+sentinel://")):
        if not store.shared:
            raise StartupError(
                "NOTIFIER_BROKER_URL: a Redis broker needs a shared store; set "
                "NOTIFIER_STORE_URL=postgresql://... (not sqlite or memory)"
            )
        from .redis import RedisBroker

        options.pop("postgres_schema", None)
        return RedisBroker(url, health, **options)
    if url.startswith(("postgresql://", "postgres://")):
        if not store.shared:
            raise StartupError(
                "NOTIFIER_BROKER_URL: a PostgreSQL broker needs a shared store; set "
                "NOTIFIER_STORE_URL=postgresql://... (the same database will do)"
            )
        from .postgres import PostgresBroker

        return PostgresBroker(url, health, **options)
    raise StartupError(
        f"NOTIFIER_BROKER_URL: unsupported URL {url!r}; use redis://host:port/db, rediss://, unix://, "
        "redis+sentinel://host:26379,.../<primary name>[/db] or postgresql://..."
    )
