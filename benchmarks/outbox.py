"""Publishing inside the application's transaction: from the commit to the subscriber.

    .venv/bin/python -m benchmarks.run outbox --messages 200

One node on the PostgreSQL store; an application commits `notifier_publish` transactions one
after another, and a subscriber times each event from the commit to its arrival (same
machine, same clock). The Redis and the PostgreSQL broker in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from notifier.client import Subscriber
from notifier.client.outbox import publish_asyncpg


async def _latencies(broker: str, count: int) -> dict[str, Any]:
    from tests.cluster import cluster
    from tests.test_cluster import token

    with tempfile.TemporaryDirectory() as directory:
        async with cluster(Path(directory), nodes=1, broker=broker) as running:
            (node,) = running.nodes
            alice = Subscriber(node.url, token("alice"))
            arrived: asyncio.Queue[float] = asyncio.Queue()
            alice.on("shipped", lambda envelope: arrived.put_nowait(time.monotonic()))
            await alice.connect()
            db = await asyncpg.connect(running.store_url)
            try:
                latencies = []
                for n in range(count):
                    async with db.transaction():
                        await publish_asyncpg(db, "user:alice", "shipped", {"n": n})
                    committed = time.monotonic()
                    latencies.append((await asyncio.wait_for(arrived.get(), 10) - committed) * 1000)
                    await asyncio.sleep(0.01)
            finally:
                await db.close()
                await alice.close()
    latencies.sort()
    return {
        "server": broker,
        "events": count,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "max_ms": latencies[-1],
    }


async def outbox_command(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = [await _latencies(broker, args.messages) for broker in ("redis", "postgresql")]
    for row in rows:
        print(json.dumps(row), flush=True)
    print(f"commit to delivery, {args.messages} transactions one after another:")
    redis = rows[0]
    for row in rows:
        ratio = "" if row is redis else f"  ({row['p50_ms'] / redis['p50_ms']:.2f}x Redis's p50)"
        print(
            f"  {row['server']:<12} p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, "
            f"max {row['max_ms']:.1f} ms{ratio}"
        )
    return rows
