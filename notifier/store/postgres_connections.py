"""What every notifier connection to PostgreSQL shares (the store's, the outbox's, the
PostgreSQL broker's): jsonb as Python values, which failures are outages, and how a server
is named in messages."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import asyncpg
import orjson

# SQLSTATE classes that mean "the database cannot serve right now", not "your query is wrong":
# connection exceptions, insufficient resources (disk full), operator intervention
# (shutdown), system errors.
_UNAVAILABLE_CLASSES = ("08", "53", "57", "58")


def unavailable(exc: BaseException) -> bool:
    # InternalClientError: what asyncpg raises on a connection whose server session was
    # terminated under it (pg_terminate_backend, a restart): an outage, not our bug.
    if isinstance(exc, (OSError, asyncio.TimeoutError, asyncpg.InterfaceError, asyncpg.InternalClientError)):
        return True
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, asyncpg.PostgresError) and sqlstate[:2] in _UNAVAILABLE_CLASSES


async def init_connection(conn: asyncpg.Connection) -> None:
    """A pool's `init`: jsonb in and out as Python values."""
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: orjson.dumps(value).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


def describe(url: str) -> str:
    """host:port/database, without the password, for messages and logs."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"
