"""Three nodes behind nginx (deploy/nginx/notifier.conf, as deployed): clients on websocket and
on long-polling spread over the nodes by their addresses (127.0.0.x), workers on every node."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from notifier.auth import Role, issue_token
from notifier.client import Subscriber, Worker
from tests.cluster import Cluster, Nginx, cluster
from tests.conftest import SECRET, until

ADMIN = issue_token(SECRET, "HS256", "root", role=Role.ADMIN)


def token(user: str, projects: list[str] | None = None, role: Role = Role.USER) -> str:
    return issue_token(SECRET, "HS256", user, role=role, projects=projects or [])


class Client:
    """A Subscriber from its own address, recording every tick the server sends it."""

    def __init__(self, url: str, index: int, transport: str) -> None:
        self.name = f"user{index}"
        self.address = f"127.0.0.{index + 2}"
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(self.address, 0)))
        self.subscriber = Subscriber(
            url,
            lambda: token(self.name, ["p1"]),
            transports=[transport],
            reconnection_delay=0.2,
            reconnection_delay_max=1.0,
            client_options={"http_session": self.http},
        )
        self.raw: list[int] = []
        self.notes: list[str] = []
        accept = self.subscriber._accept

        def recording(envelope: dict) -> bool:
            if envelope.get("type") == "tick":
                self.raw.append(envelope["offset"])
            return accept(envelope)

        self.subscriber._accept = recording
        self.subscriber.on("notification", lambda env: self.notes.append(env["data"]["title"]))
        self.resets: list[tuple[str, str]] = []
        self.subscriber.on_reset(lambda room, reason: self.resets.append((room, reason)))

    async def start(self) -> None:
        await self.subscriber.connect()
        await self.subscriber.subscribe(["project:p1"])

    async def close(self) -> None:
        await self.subscriber.close()
        await self.http.close()


@contextlib.asynccontextmanager
async def behind_nginx(
    tmp_path: Path, nodes: int, broker: str = "redis"
) -> AsyncIterator[tuple[Cluster, Nginx]]:
    async with cluster(
        tmp_path,
        nodes=nodes,
        broker=broker,
        NOTIFIER_WORKER_RATE_PER_SECOND="100000",
        NOTIFIER_WORKER_RATE_BURST="10000",
    ) as running:
        nginx = Nginx(tmp_path / "nginx", [f"127.0.0.1:{node.port}" for node in running.nodes])
        await nginx.start()
        try:
            yield running, nginx
        finally:
            await nginx.stop()


async def connections_per_node(running: Cluster) -> list[int]:
    counts = []
    async with aiohttp.ClientSession() as http:
        for node in running.nodes:
            if node.process is None or node.process.returncode is not None:
                counts.append(0)
                continue
            async with http.get(
                f"{node.url}/api/v1/status", headers={"Authorization": f"Bearer {ADMIN}"}
            ) as response:
                counts.append((await response.json())["connections"]["/"])
    return counts


async def publish(url: str, worker_name: str, count: int, acked: list[int]) -> None:
    worker = Worker(url, token(worker_name, role=Role.PUBLISHER))
    await worker.connect()
    try:
        for n in range(count):
            await worker.publish("project:p1", "tick", {"by": worker_name, "n": n})
            acked.append(n)
    finally:
        await worker.close()


@pytest.fixture(autouse=True)
def _needs_loopback_aliases() -> None:
    if os.uname().sysname != "Linux":
        pytest.skip("clients bind 127.0.0.x addresses, which Linux routes on loopback")


@pytest.mark.parametrize("broker", ["redis", "postgresql"])
async def test_every_client_gets_every_event_once_in_order_on_any_node(tmp_path: Path, broker: str) -> None:
    async with behind_nginx(tmp_path, nodes=3, broker=broker) as (running, nginx):
        clients = [Client(nginx.url, i, "websocket" if i % 2 else "polling") for i in range(12)]
        for client in clients:
            await client.start()
        try:
            spread = await connections_per_node(running)
            assert sum(spread) == 12 and sum(1 for count in spread if count) >= 2, spread

            acked: list[int] = []
            await asyncio.gather(
                *(publish(node.url, f"w{i}", 100, acked) for i, node in enumerate(running.nodes))
            )
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"{nginx.url}/api/v1/notifications",
                    json={"user_ids": [client.name for client in clients], "title": "to all"},
                    headers={"Authorization": f"Bearer {token('svc', role=Role.PUBLISHER)}"},
                ) as response,
            ):
                assert response.status == 201

            for client in clients:
                await until(lambda c=client: len(c.raw) >= 300 and c.notes, timeout=20)
                assert client.raw == list(range(1, 301)), client.name
                assert client.notes == ["to all"], client.name
            async with aiohttp.ClientSession() as http:
                for node in running.nodes:
                    async with http.get(
                        f"{node.url}/api/v1/notifications?user_id=user3",
                        headers={"Authorization": f"Bearer {ADMIN}"},
                    ) as response:
                        assert (await response.json())["unread"] == 1
        finally:
            for client in clients:
                await client.close()


@pytest.mark.parametrize("broker", ["redis", "postgresql"])
async def test_a_killed_node_loses_nothing(tmp_path: Path, broker: str) -> None:
    async with behind_nginx(tmp_path, nodes=3, broker=broker) as (running, nginx):
        clients = [Client(nginx.url, i, "websocket" if i % 3 else "polling") for i in range(9)]
        for client in clients:
            await client.start()
        try:
            spread = await connections_per_node(running)
            doomed = max(range(3), key=lambda i: spread[i])
            survivors = [node for i, node in enumerate(running.nodes) if i != doomed]
            victim = running.nodes[doomed]

            acked: list[int] = []
            publishing = asyncio.gather(
                *(publish(node.url, f"w{i}", 150, acked) for i, node in enumerate(survivors))
            )
            stored: list[str] = []
            async with aiohttp.ClientSession() as http:
                for n in range(30):  # REST writes to the node about to die
                    async with http.post(
                        f"{victim.url}/api/v1/notifications",
                        json={"user_ids": ["user0"], "title": f"rest {n}"},
                        headers={"Authorization": f"Bearer {token('svc', role=Role.PUBLISHER)}"},
                    ) as response:
                        assert response.status == 201
                        stored.append((await response.json())["notifications"][0]["id"])
                await asyncio.sleep(0.1)
                assert victim.process is not None
                victim.process.kill()  # kill -9, while the workers publish
                await victim.process.wait()
                await publishing

                for client in clients:
                    await until(lambda c=client: len(c.raw) >= 300, timeout=30)
                    assert client.raw == list(range(1, 301)), (client.name, "lost, duplicated or reordered")
                    assert client.resets == []
                assert sum(await connections_per_node(running)) == 9

                async with http.get(
                    f"{survivors[0].url}/api/v1/notifications?user_id=user0&limit=100",
                    headers={"Authorization": f"Bearer {ADMIN}"},
                ) as response:
                    inbox = await response.json()
                assert set(stored) <= {n["id"] for n in inbox["notifications"]}
        finally:
            for client in clients:
                await client.close()
