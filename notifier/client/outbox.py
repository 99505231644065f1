"""Publishing inside your own PostgreSQL transaction (the transactional outbox): the event
is delivered once the transaction commits, exactly once, in commit order per room; nothing
is delivered if it rolls back. The database must be notifier's store (or hold its schema:
`notifier_publish` and `notifier_outbox`).

    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE orders SET shipped = true WHERE id = $1", order_id)
        await publish_asyncpg(conn, f"user:{customer}", "order.shipped", {"order": order_id})

    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute("UPDATE orders SET shipped = true WHERE id = %s", (order_id,))
        publish_psycopg(conn, f"user:{customer}", "order.shipped", {"order": order_id})
"""

from __future__ import annotations

import json
from typing import Any

SQL_ASYNCPG = "SELECT notifier_publish($1, $2, $3::jsonb)"
SQL_PSYCOPG = "SELECT notifier_publish(%s, %s, %s::jsonb)"


async def publish_asyncpg(conn: Any, room: str, event_type: str, data: dict[str, Any] | None = None) -> str:
    """In the open transaction of an asyncpg connection; the event's id."""
    return str(await conn.fetchval(SQL_ASYNCPG, room, event_type, json.dumps(data or {})))


def publish_psycopg(conn: Any, room: str, event_type: str, data: dict[str, Any] | None = None) -> str:
    """In the open transaction of a psycopg (3) connection or cursor; the event's id."""
    row = conn.execute(SQL_PSYCOPG, (room, event_type, json.dumps(data or {}))).fetchone()
    return str(row[0])
