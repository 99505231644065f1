"""A Sentinel-managed Redis (`redis+sentinel://`): one primary, one replica, three sentinels,
all real processes. The primary is killed under load: the broker follows the promoted
replica, publishing resumes, and subscribers get every acknowledged event or are told; also
when the promoted replica had lagged behind what the primary acknowledged."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis.asyncio as aioredis

from tests.backends import postgres_database
from tests.cluster import REDIS_SERVER, Cluster, RedisServer
from tests.conftest import until
from tests.faults import SilencingProxy
from tests.service_process import free_port
from tests.test_cluster import Recorder, publish_many, told_or_delivered


async def start_sentinel(directory: Path, *args: str) -> asyncio.subprocess.Process:
    directory.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - a test's own directory
    return await asyncio.create_subprocess_exec(
        REDIS_SERVER, *args, "--dir", str(directory), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def answers(port: int, *command: str) -> object:
    async with aioredis.Redis(host="127.0.0.1", port=port, decode_responses=True) as client:
        return await client.execute_command(*command)


async def eventually_true(check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if await check():
                return
        except (OSError, aioredis.RedisError):
            pass
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


@asynccontextmanager
async def sentinels(directory: Path, primary_port: int, replica_port: int) -> AsyncIterator[str]:
    """Three sentinels watching the primary (at `primary_port`), ready once they know its
    replica and the replica's link is up; the broker URL that reaches them."""
    processes: list[asyncio.subprocess.Process] = []
    ports = [free_port() for _ in range(3)]
    try:
        for n, port in enumerate(ports):
            conf = directory / f"sentinel{n}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\n"
                f"sentinel monitor notifier 127.0.0.1 {primary_port} 2\n"
                "sentinel down-after-milliseconds notifier 1000\n"
                "sentinel failover-timeout notifier 5000\n"
            )
            processes.append(await start_sentinel(directory / f"s{n}", str(conf), "--sentinel"))

        async def ready() -> bool:
            info = await answers_info(replica_port)
            known = await answers(ports[0], "SENTINEL", "REPLICAS", "notifier")
            return info.get("master_link_status") == "up" and bool(known)

        await eventually_true(ready, timeout=20)
        yield "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in ports) + "/notifier/0"
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def answers_info(port: int) -> dict:
    async with aioredis.Redis(host="127.0.0.1", port=port, decode_responses=True) as client:
        return await client.info("replication")


async def published_after_failover(url: str, start: int, timeout: float = 30) -> tuple[list[int], float]:
    """Publish until one is acknowledged again; those acknowledged, and how long it took."""
    began = time.monotonic()
    after: list[int] = []

    async def publishing_again() -> bool:
        after.extend(await publish_many(url, 1, start=start + len(after)))
        return bool(after)

    await eventually_true(publishing_again, timeout=timeout)
    return after, time.monotonic() - began


async def test_the_broker_follows_a_sentinel_failover(tmp_path: Path) -> None:
    primary = RedisServer(tmp_path / "primary")
    await primary.start()
    replica = RedisServer(tmp_path / "replica", "--replicaof", "127.0.0.1", str(primary.port))
    await replica.start()
    try:
        async with sentinels(tmp_path, primary.port, replica.port) as url, postgres_database() as store_url:
            running = Cluster(tmp_path, primary, store_url)
            node = await running.add_node(NOTIFIER_BROKER_URL=url)
            watcher = Recorder(node.url, "alice", "project:p1")
            await watcher.start()
            try:
                acked = await publish_many(node.url, 20)
                await primary.stop()  # killed: the sentinels promote the replica
                after, took = await published_after_failover(node.url, 100)
                acked += after
                role = await answers(replica.port, "ROLE")
                assert role[0] == "master", role  # type: ignore[index]
                await until(
                    lambda: (
                        set(after) <= {t["data"]["n"] for t in watcher.ticks}
                        or ("project:p1", "epoch_changed") in watcher.resets
                    ),
                    timeout=15,
                )
                assert told_or_delivered(watcher, acked) == []
                assert took < 20, f"publishing resumed {took:.1f} s after the primary died"
            finally:
                await watcher.subscriber.close()
                await running.stop()
    finally:
        await replica.stop()
        await primary.stop()


async def test_a_failover_to_a_replica_that_lagged_is_told_never_hidden(tmp_path: Path) -> None:
    """The replica's link goes silent (it stays up, so nobody notices), the primary acknowledges
    20 more events, then dies: the sentinels promote a replica 20 events behind. Offsets the
    node handed out would be handed out again; every client past the new head is told."""
    primary = RedisServer(tmp_path / "primary")
    await primary.start()
    # Everyone reaches the primary through this link (the sentinels and the node too, so that
    # the replica's view of its primary matches theirs); only the replication stream stalls.
    link = SilencingProxy(primary.port)
    await link.start()
    replica = RedisServer(tmp_path / "replica", "--replicaof", "127.0.0.1", str(link.port))
    await replica.start()
    try:
        async with sentinels(tmp_path, link.port, replica.port) as url, postgres_database() as store_url:
            running = Cluster(tmp_path, primary, store_url)
            node = await running.add_node(NOTIFIER_BROKER_URL=url)
            watcher = Recorder(node.url, "alice", "project:p1")
            await watcher.start()
            try:
                acked = await publish_many(node.url, 20)

                async def caught_up() -> bool:
                    ahead = (await answers_info(primary.port))["master_repl_offset"]
                    return (await answers_info(replica.port)).get("slave_repl_offset") == ahead

                await eventually_true(caught_up, timeout=10)
                assert link.silence_replication() == 1
                lagged = await publish_many(node.url, 20, start=20)
                assert lagged == list(range(20, 40)), "acknowledged by the primary alone"
                acked += lagged
                await until(lambda: len(watcher.raw) >= 40, timeout=10)
                await primary.stop()  # kill -9: the sentinels promote the lagging replica

                after, _ = await published_after_failover(node.url, 100)
                acked += after
                role = await answers(replica.port, "ROLE")
                assert role[0] == "master", role  # type: ignore[index]
                heads = await answers(replica.port, "XLEN", "notifier:log:project:p1")
                assert isinstance(heads, int) and heads < 40, "the promoted replica had lagged"

                # The watcher stood at offset 40, past the new head: told, never silently wrong.
                await until(lambda: ("project:p1", "epoch_changed") in watcher.resets, timeout=15)
                assert told_or_delivered(watcher, acked) == []
                last = await publish_many(node.url, 1, start=200)
                await until(lambda: 200 in {t["data"]["n"] for t in watcher.ticks}, timeout=10)
                assert last == [200]
                assert len({epoch for epoch, _ in watcher.raw}) == 2, "the rewound history has a new epoch"
            finally:
                await watcher.subscriber.close()
                await running.stop()
    finally:
        await replica.stop()
        await link.stop()
        await primary.stop()
