"""Publishing inside the application's own transaction (PostgreSQL): delivered once after
the commit, nothing on rollback, in commit order per room whichever node relays, and no loss
or duplicate when the relaying node is killed."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from notifier.client import Subscriber
from notifier.client.outbox import publish_asyncpg
from tests.backends import postgres_database
from tests.cluster import cluster
from tests.conftest import SECRET, eventually, until
from tests.service_process import ServiceProcess
from tests.test_cluster import token


async def outbox_is_empty(db: asyncpg.Connection) -> bool:
    return bool(await db.fetchval("SELECT count(*) = 0 FROM notifier_outbox"))


def recorder(subscriber: Subscriber) -> list[dict]:
    seen: list[dict] = []
    subscriber.on("*", lambda env: seen.append(env) if env.get("type") == "shipped" else None)
    return seen


@pytest.mark.parametrize("broker", ["redis", "postgresql"])
async def test_a_commit_delivers_once_and_a_rollback_nothing(tmp_path: Path, broker: str) -> None:
    async with cluster(tmp_path, nodes=1, broker=broker) as running:
        (node,) = running.nodes
        alice = Subscriber(node.url, token("alice"))
        seen = recorder(alice)
        await alice.connect()
        db = await asyncpg.connect(running.store_url)
        try:
            async with db.transaction():
                event_id = await publish_asyncpg(db, "user:alice", "shipped", {"order": 1})
            try:
                async with db.transaction():
                    await publish_asyncpg(db, "user:alice", "shipped", {"order": 2})
                    raise RuntimeError("the application changes its mind")
            except RuntimeError:
                pass
            async with db.transaction():
                await publish_asyncpg(db, "user:alice", "shipped", {"order": 3})
                await publish_asyncpg(db, "user:nobody", "shipped", {"order": 4})
            await until(lambda: len(seen) >= 2, timeout=10)
            assert [e["data"]["order"] for e in seen] == [1, 3]
            assert seen[0]["id"] == event_id
            # Removed in the relaying transaction, which commits once the events are appended.
            await eventually(lambda: outbox_is_empty(db), timeout=10)
            async with db.transaction():
                await publish_asyncpg(db, "no room", "shipped", {})  # refused by the relay, logged
                await publish_asyncpg(db, "user:alice", "session", {})  # the service's own type
                await publish_asyncpg(db, "user:alice", "shipped", {"order": 5})
            await until(lambda: len(seen) >= 3, timeout=10)
            assert [e["data"]["order"] for e in seen] == [1, 3, 5]
            assert node.process is not None and node.process.returncode is None
            # The relay is woken by the commits' NOTIFY (polling is only its fallback).
            listening = await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND query LIKE 'LISTEN %notifier_outbox%'"
            )
            assert listening == 1
        finally:
            await db.close()
            await alice.close()


@pytest.mark.parametrize("broker", ["redis", "postgresql"])
async def test_concurrent_transactions_arrive_exactly_once_in_commit_order_per_room(
    tmp_path: Path, broker: str
) -> None:
    """1,000 application transactions over five rooms, a third rolled back, from a pool of
    20 connections; two nodes relay. Each room's committed events arrive once, in the order
    their transactions committed (the application numbers them under the room's turn)."""
    rooms = [f"project:r{n}" for n in range(5)]
    async with cluster(tmp_path, nodes=2, broker=broker) as running:
        watcher = Subscriber(running.nodes[1].url, token("watch", ["*"]))
        seen = recorder(watcher)
        await watcher.connect()
        await watcher.subscribe(rooms)
        pool = await asyncpg.create_pool(running.store_url, min_size=20, max_size=20)
        assert pool is not None
        try:
            await pool.execute("CREATE TABLE app_events (room text, n int, PRIMARY KEY (room, n))")
            rng = random.Random(3)
            plans = [(rng.choice(rooms), rng.random() < 1 / 3) for _ in range(1000)]

            async def transaction(room: str, rolled_back: bool) -> None:
                async with pool.acquire() as conn:
                    try:
                        async with conn.transaction():
                            # The room's turn (what notifier_publish takes, taken first here so
                            # that the number below is the commit order).
                            await conn.execute(
                                "SELECT pg_advisory_xact_lock(hashtext('notifier-outbox:' || $1))", room
                            )
                            n = await conn.fetchval(
                                "SELECT COALESCE(max(n), 0) + 1 FROM app_events WHERE room = $1", room
                            )
                            await conn.execute("INSERT INTO app_events VALUES ($1, $2)", room, n)
                            await publish_asyncpg(conn, room, "shipped", {"room": room, "n": n})
                            if rolled_back:
                                raise RuntimeError("rolled back")
                    except RuntimeError:
                        pass

            await asyncio.gather(*(transaction(room, back) for room, back in plans))
            committed = {
                room: await pool.fetchval("SELECT count(*) FROM app_events WHERE room = $1", room)
                for room in rooms
            }
            total = sum(committed.values())
            assert total == sum(1 for _, back in plans if not back)
            await until(lambda: len(seen) >= total, timeout=30)
            for room in rooms:
                numbers = [e["data"]["n"] for e in seen if e["room"] == room]
                assert numbers == list(range(1, committed[room] + 1)), (room, "lost, doubled or out of order")
        finally:
            await pool.close()
            await watcher.close()


@pytest.mark.parametrize("broker", ["redis", "postgresql"])
async def test_a_relaying_node_killed_loses_and_doubles_nothing(tmp_path: Path, broker: str) -> None:
    async with cluster(tmp_path, nodes=2, broker=broker) as running:
        a, b = running.nodes
        alice = Subscriber(b.url, token("alice"), reconnection_delay=0.1)
        seen = recorder(alice)
        await alice.connect()
        db = await asyncpg.connect(running.store_url)
        try:
            for start in range(0, 600, 100):
                async with db.transaction():
                    for n in range(start, start + 100):
                        await publish_asyncpg(db, "user:alice", "shipped", {"n": n})
                if start == 200:
                    assert a.process is not None
                    a.process.kill()  # kill -9, whether it was relaying or not
                    await a.process.wait()
            await until(lambda: len(seen) >= 600, timeout=30)
            assert sorted(e["data"]["n"] for e in seen) == list(range(600)), "lost or doubled"
            assert [e["data"]["n"] for e in seen] == list(range(600)), "out of order"
        finally:
            await db.close()
            await alice.close()


@contextlib.asynccontextmanager
async def node_with_outbox_in(
    tmp_path: Path, application_url: str, store: str
) -> AsyncIterator[tuple[str, str | None]]:
    """A node whose outbox is `application_url`; its URL and its store's (None: embedded)."""
    if store == "embedded":
        node = ServiceProcess(tmp_path / "data", SECRET, NOTIFIER_OUTBOX_URL=application_url)
        await node.start()
        try:
            yield node.url, None
        finally:
            await node.kill()
        return
    outbox = {"NOTIFIER_OUTBOX_URL": application_url}
    async with cluster(tmp_path, nodes=1, broker="postgresql", **outbox) as running:
        yield running.nodes[0].url, running.store_url


@pytest.mark.parametrize("store", ["postgresql", "embedded"])
async def test_the_outbox_may_live_in_the_applications_own_database(tmp_path: Path, store: str) -> None:
    """NOTIFIER_OUTBOX_URL: the application's database, not the store's; its transactions
    need nothing of notifier's database."""
    async with (
        postgres_database() as application_url,
        node_with_outbox_in(tmp_path, application_url, store) as (url, store_url),
    ):
        alice = Subscriber(url, token("alice"))
        seen = recorder(alice)
        await alice.connect()
        app = await asyncpg.connect(application_url)
        try:
            async with app.transaction():
                await app.execute("CREATE TABLE orders (id int PRIMARY KEY, shipped bool)")
                await app.execute("INSERT INTO orders VALUES (1, true)")
                await publish_asyncpg(app, "user:alice", "shipped", {"order": 1})
            with contextlib.suppress(RuntimeError):
                async with app.transaction():
                    await publish_asyncpg(app, "user:alice", "shipped", {"order": 2})
                    raise RuntimeError("rolled back")
            async with app.transaction():
                await publish_asyncpg(app, "user:alice", "shipped", {"order": 3})
            await until(lambda: len(seen) >= 2, timeout=10)
            assert [e["data"]["order"] for e in seen] == [1, 3]
            await eventually(lambda: outbox_is_empty(app), timeout=10)
            if store_url is not None:  # the store's database never had these rows
                notifier_db = await asyncpg.connect(store_url)
                try:
                    assert await notifier_db.fetchval("SELECT count(*) FROM notifier_outbox") == 0
                finally:
                    await notifier_db.close()
        finally:
            await app.close()
            await alice.close()
