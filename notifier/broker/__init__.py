"""Room streams: each event appended to its room's history with the next offset, then delivered
to the connections in that room on every node, in offset order.

The in-process broker (`local`) keeps histories in the SQLite database of the embedded store
and delivers within the process; the Redis broker (`redis`) keeps them in Redis and delivers to
every node through Redis pub/sub. Chosen by `NOTIFIER_BROKER_URL` (empty: in-process).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import StartupError
from ..health import Health
from ..records import Envelope, StreamPosition
from ..store import Store

Deliver = Callable[[Envelope], None]
Describe = Callable[[], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended: everything but its offset and epoch."""

    room: str
    type: str
    data: dict[str, Any]
    id: str
    ts: int


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

    async def start(self, deliver: Deliver, describe: Describe) -> None:
        """Open the histories; from now on call `deliver` for every event, in offset order.
        `describe()` is what this process tells the others about itself."""

    async def stop(self) -> None: ...

    async def publish(
        self, events: Sequence[NewEvent], guard: Guard | None = None
    ) -> list[Envelope] | None:
        """Append the events to their rooms, atomically; durable when this returns. None when
        the guard refused them."""
        ...

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


def open_broker(url: str, store: Store, health: Health, **options: Any) -> Broker:
    if not url:
        from ..store.sqlite import SqliteStore
        from .local import LocalBroker

        if not isinstance(store, SqliteStore):
            raise StartupError(
                "NOTIFIER_STORE_URL: a PostgreSQL store needs NOTIFIER_BROKER_URL=redis://... "
                "(room histories live in Redis when the store is shared)"
            )
        return LocalBroker(store.db, max_events_per_room=options["max_events_per_room"])
    if url.startswith(("redis://", "rediss://", "unix://")):
        if not store.shared:
            raise StartupError(
                "NOTIFIER_BROKER_URL: a Redis broker needs a shared store; set "
                "NOTIFIER_STORE_URL=postgresql://... (not sqlite or memory)"
            )
        from .redis import RedisBroker

        return RedisBroker(url, health, **options)
    raise StartupError(
        f"NOTIFIER_BROKER_URL: unsupported URL {url!r}; use redis://host:port/db, rediss:// or unix://"
    )
