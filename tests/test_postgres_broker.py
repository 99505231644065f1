"""A cluster on PostgreSQL alone (NOTIFIER_BROKER_URL=postgresql://...): real nodes, and the
ways the LISTEN connection and the database fail."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import asyncpg

from tests.backends import postgres_database
from tests.cluster import Cluster, PostgresServer, cluster
from tests.conftest import until
from tests.service_process import run_notifier
from tests.test_cluster import PUBLISHER, Recorder, publish_many


def in_order_without_gaps(recorder: Recorder) -> None:
    """Within each epoch, consecutive offsets from where the client stood."""
    for epoch in {epoch for epoch, _ in recorder.raw}:
        offsets = [offset for e, offset in recorder.raw if e == epoch]
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), recorder.name


async def test_events_published_on_one_node_reach_the_other_in_order(tmp_path: Path) -> None:
    async with cluster(tmp_path, nodes=2, broker="postgresql") as running:
        a, b = running.nodes
        watcher = Recorder(b.url, "alice", "project:p1")
        await watcher.start()
        try:
            acked = await publish_many(a.url, 200)
            assert len(acked) == 200
            await until(lambda: len(watcher.ticks) == 200, timeout=15)
            assert watcher.offsets() == list(range(1, 201))
            async with aiohttp.ClientSession() as http:
                async with http.get(
                    f"{b.url}/api/v1/status", headers={"Authorization": f"Bearer {PUBLISHER}"}
                ) as response:
                    assert response.status == 403  # (the status is for admins; readiness is not)
                async with http.get(f"{b.url}/readyz") as response:
                    assert response.status == 200
        finally:
            await watcher.subscriber.close()


async def test_a_terminated_listen_connection_is_noticed_and_the_gap_filled(tmp_path: Path) -> None:
    async with cluster(tmp_path, nodes=2, broker="postgresql") as running:
        a, b = running.nodes
        watcher = Recorder(b.url, "alice", "project:p1")
        await watcher.start()
        try:
            publishing = asyncio.create_task(publish_many(a.url, 300))
            await until(lambda: len(watcher.ticks) >= 50, timeout=15)
            admin = await asyncpg.connect(running.store_url)
            try:
                killed = await admin.fetch(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE 'LISTEN %notifier_broker%'"
                )
            finally:
                await admin.close()
            assert len(killed) == 2  # each node's
            acked = await publishing
            assert len(acked) == 300
            await until(lambda: len(watcher.ticks) == 300, timeout=20)
            assert watcher.offsets() == list(range(1, 301))
            assert not watcher.resets
        finally:
            await watcher.subscriber.close()


async def test_a_postgresql_restart_loses_no_acknowledged_event(tmp_path: Path) -> None:
    postgres = PostgresServer()
    await postgres.init()
    await postgres.start()
    running = Cluster(tmp_path, None, postgres.url)
    try:
        a = await running.add_node()
        b = await running.add_node()
        watchers = [Recorder(node.url, f"user{i}", "project:p1") for i, node in enumerate((a, b))]
        for watcher in watchers:
            await watcher.start()
        before = await publish_many(a.url, 50)
        await postgres.stop()
        during = await publish_many(a.url, 5, start=1000)  # refused with codes, none acknowledged
        await postgres.start()
        async with aiohttp.ClientSession() as http:
            for node in (a, b):
                for _ in range(100):
                    async with http.get(f"{node.url}/readyz") as response:
                        if response.status == 200:
                            break
                    await asyncio.sleep(0.1)
        after = await publish_many(b.url, 50, start=2000)
        assert len(before) == 50 and during == [] and len(after) == 50
        for watcher in watchers:
            await until(
                lambda w=watcher: {t["data"]["n"] for t in w.ticks} >= set(before) | set(after), timeout=30
            )
            ns = [t["data"]["n"] for t in watcher.ticks]
            assert ns == sorted(set(ns)), f"{watcher.name}: out of order or twice"
            in_order_without_gaps(watcher)
            assert not watcher.resets, "PostgreSQL kept everything: nothing to reload"
        for watcher in watchers:
            await watcher.subscriber.close()
    finally:
        await running.stop()
        await postgres.stop()
        postgres.remove()


async def test_a_database_that_went_back_is_told_never_hidden(tmp_path: Path) -> None:
    """As if restored from an older backup: the last 20 events of the room are gone and the
    head is back where it was; the next events reuse their offsets."""
    async with cluster(tmp_path, nodes=2, broker="postgresql") as running:
        a, b = running.nodes
        watcher = Recorder(b.url, "alice", "project:p1")
        await watcher.start()
        try:
            await publish_many(a.url, 40)
            await until(lambda: len(watcher.ticks) == 40, timeout=15)
            admin = await asyncpg.connect(running.store_url)
            try:
                async with admin.transaction():
                    await admin.execute(
                        "DELETE FROM notifier_room_events WHERE room = 'project:p1' AND \"offset\" > 20"
                    )
                    await admin.execute("UPDATE notifier_room_heads SET head = 20 WHERE room = 'project:p1'")
            finally:
                await admin.close()
            acked = await publish_many(a.url, 30, start=100)
            assert len(acked) == 30
            await until(lambda: ("project:p1", "epoch_changed") in watcher.resets, timeout=15)
            in_order_without_gaps(watcher)
        finally:
            await watcher.subscriber.close()


async def test_a_postgresql_store_without_a_broker_says_which_to_set(tmp_path: Path) -> None:
    async with postgres_database() as store_url:
        env = {"NOTIFIER_STORE_URL": store_url, "NOTIFIER_PORT": "0"}
        result = run_notifier("serve", env=env, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "NOTIFIER_BROKER_URL=postgresql://" in lines[0], result.stderr
