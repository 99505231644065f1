"""`benchmarks.run inbox`: listing a large inbox over REST, SQLite and PostgreSQL.

    .venv/bin/python -m benchmarks.run inbox --notifications 100000

One user with `--notifications` notifications (10 categories, 10 tags, three severities, a
third read), written through the store before the server starts; then the server answers
`GET /api/v1/notifications` pages: the first page, pages deep in the list (by cursor), and
pages filtered by state, category, tag and severity. Reported: p50 and p99 per kind, over
200 requests each, one at a time; the target is p99 under 20 ms.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.run import SECRET, _percentile, run_server
from notifier.auth import Role, issue_token
from notifier.health import Health
from notifier.records import Notification
from notifier.store import open_store

_REQUESTS = 200
_QUERIES = {
    "first page": "limit=20",
    "unread": "limit=20&state=unread",
    "category": "limit=20&category=c3",
    "tag": "limit=20&tag=t7",
    "severity": "limit=20&severity=critical",
}


async def _fill(store_url: str, count: int) -> None:
    store = open_store(store_url, Health())
    await store.open()
    try:
        for start in range(0, count, 2000):
            batch = [
                Notification(
                    id=f"n{n}",
                    user_id="reader",
                    title=f"notification {n}",
                    body="some text",
                    created_at=n + 1,
                    category=f"c{n % 10}",
                    tags=[f"t{n % 10}", f"t{(n * 7) % 10}"],
                    severity=("info", "warning", "critical")[n % 3],
                )
                for n in range(start, min(count, start + 2000))
            ]
            await store.add_notifications(batch, 0)
            await store.mark_delivered([n.id for n in batch])  # as if sent long ago
            await store.mark_read("reader", [n.id for n in batch if int(n.id[1:]) % 3 == 0])
    finally:
        await store.close()


async def _latencies(http: aiohttp.ClientSession, url: str, query: str, token: str) -> list[float]:
    headers = {"Authorization": f"Bearer {token}"}
    found: list[float] = []
    for _ in range(_REQUESTS):
        started = time.perf_counter()
        async with http.get(f"{url}/api/v1/notifications?{query}", headers=headers) as answer:
            body = await answer.json()
        found.append((time.perf_counter() - started) * 1000)
        assert answer.status == 200 and body["notifications"], body
    return sorted(found)


async def _analyze(store_url: str) -> None:
    """What autovacuum does to a table that grew: the planner's statistics."""
    if store_url.startswith("postgresql"):
        import asyncpg

        db = await asyncpg.connect(store_url)
        try:
            await db.execute("ANALYZE")
        finally:
            await db.close()


async def _measure(name: str, store_url: str, env: dict[str, str], count: int) -> dict[str, Any]:
    began = time.monotonic()
    await _fill(store_url, count)
    await _analyze(store_url)
    filled = time.monotonic() - began
    token = issue_token(SECRET, "HS256", "reader", role=Role.USER)
    row: dict[str, Any] = {"store": name, "notifications": count, "fill_seconds": round(filled, 1)}
    server_name = "notifier-redis" if env else "notifier"
    async with (
        run_server(
            server_name,
            NOTIFIER_STORE_URL=store_url,
            # One reader asking page after page: not the abuse the per-token limit is for.
            NOTIFIER_USER_RATE_PER_SECOND="100000",
            NOTIFIER_USER_RATE_BURST="100000",
            NOTIFIER_INBOX_MAX_PER_USER=str(count * 2),  # retention would trim the inbox
            **env,
        ) as server,
        aiohttp.ClientSession() as http,
    ):
        for kind, query in _QUERIES.items():
            found = await _latencies(http, server.url, query, token)
            row[f"{kind} p50 ms"] = _percentile(found, 50)
            row[f"{kind} p99 ms"] = _percentile(found, 99)
        # Deep pages: a cursor half-way down the list.
        async with http.get(
            f"{server.url}/api/v1/notifications?limit=100", headers={"Authorization": f"Bearer {token}"}
        ) as answer:
            cursor = (await answer.json())["next_cursor"]
        deep = await _latencies(http, server.url, f"limit=20&cursor={int(cursor) - count // 2}", token)
        row["deep page p50 ms"], row["deep page p99 ms"] = _percentile(deep, 50), _percentile(deep, 99)
    return row


async def inbox_command(args: argparse.Namespace) -> list[dict[str, Any]]:
    from benchmarks.run import shared_backends

    count = args.notifications
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        rows.append(await _measure("sqlite", f"sqlite:///{Path(directory) / 'inbox.db'}", {}, count))
    async with shared_backends() as env:
        store_url = env.pop("NOTIFIER_STORE_URL")
        rows.append(await _measure("postgresql", store_url, env, count))  # with its Redis broker
    for row in rows:
        worst = max(value for key, value in row.items() if key.endswith("p99 ms"))
        p99s = ", ".join(
            f"{key[:-7]} {row[key[:-6] + 'p50 ms']:.1f} / {value:.1f}"
            for key, value in row.items()
            if key.endswith("p99 ms")
        )
        print(f"{row['store']}: {count:,} notifications for one user; p50 / p99 per page (ms): {p99s}")
        print(f"  worst p99 {worst:.1f} ms (target < 20); written in {row['fill_seconds']} s")
    return rows
