"""A Sentinel-managed Redis (`redis+sentinel://`): one primary, one replica, three sentinels,
all real processes. The primary is killed under load: the broker follows the promoted
replica, publishing resumes, and subscribers get every acknowledged event or are told."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import redis.asyncio as aioredis

from tests.backends import postgres_database
from tests.cluster import REDIS_SERVER, Cluster, RedisServer
from tests.conftest import until
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


async def test_the_broker_follows_a_sentinel_failover(tmp_path: Path) -> None:
    primary = RedisServer(tmp_path / "primary")
    await primary.start()
    replica = RedisServer(tmp_path / "replica", "--replicaof", "127.0.0.1", str(primary.port))
    await replica.start()
    replica_port = replica.port
    processes: list[asyncio.subprocess.Process] = []
    sentinel_ports = [free_port() for _ in range(3)]
    try:
        for n, port in enumerate(sentinel_ports):
            conf = tmp_path / f"sentinel{n}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\n"
                f"sentinel monitor notifier 127.0.0.1 {primary.port} 2\n"
                "sentinel down-after-milliseconds notifier 1000\n"
                "sentinel failover-timeout notifier 5000\n"
            )
            processes.append(await start_sentinel(tmp_path / f"s{n}", str(conf), "--sentinel"))

        async def ready() -> bool:
            async with aioredis.Redis(host="127.0.0.1", port=replica_port, decode_responses=True) as replica:
                info = await replica.info("replication")
            known = await answers(sentinel_ports[0], "SENTINEL", "REPLICAS", "notifier")
            return info.get("master_link_status") == "up" and bool(known)

        await eventually_true(ready, timeout=20)
        url = "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in sentinel_ports) + "/notifier/0"
        async with postgres_database() as store_url:
            running = Cluster(tmp_path, primary, store_url)
            node = await running.add_node(NOTIFIER_BROKER_URL=url)
            watcher = Recorder(node.url, "alice", "project:p1")
            await watcher.start()
            try:
                acked = await publish_many(node.url, 20)
                await primary.stop()  # killed: the sentinels promote the replica
                killed = time.monotonic()
                after: list[int] = []

                async def publishing_again() -> bool:
                    after.extend(await publish_many(node.url, 1, start=100 + len(after)))
                    return bool(after)

                await eventually_true(publishing_again, timeout=30)
                took = time.monotonic() - killed
                acked += after
                role = await answers(replica_port, "ROLE")
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
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
        await replica.stop()
        await primary.stop()
