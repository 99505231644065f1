"""The fault suite: two nodes on Redis and PostgreSQL, publishing without pause over every
path, clients that follow docs/recovery.md, and the faults a deployment sees, one after the
other. A checker over the whole history then proves that every acknowledged event reached
every client that follows its room exactly once and in order, or that the client was told.

- Paths: socket `publish` (`notifier.client.Worker`, which retries with its idempotency key),
  REST `POST /api/v1/publish` and `POST /api/v1/notifications` (each retried with the same
  `Idempotency-Key` on a 503 or a dropped connection, as docs/protocol.md says to).
- Clients: `notifier.client.Subscriber`, over websocket and long-polling, on both nodes, in a
  project room and their own user room.
- Told: the client got `recovered: false` for the room after the event was sent (it reloads
  that room's state from the store).
- In order: one publisher's events, in one epoch of a room, arrive in the order they were
  acknowledged. (A notification left to the redelivery sweep may arrive after a later one:
  only exactly-once is asked of notifications.)

Short form: tests/test_fault_suite.py (in CI). Long form, printing the table:

    .venv/bin/python -m tests.fault_suite [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from notifier.auth import Role
from notifier.client import NotifierClientError, Subscriber, Worker
from tests.cluster import Cluster, PostgresServer, cluster
from tests.faults import SilencingProxy
from tests.service_process import ServiceProcess
from tests.test_cluster import token

ROOM = "project:p1"
# How long a publisher retries one request (the same key) before it gives up on it.
RETRY_FOR = 30.0
# After the last fault: how long clients have to catch up before the history is checked.
SETTLE = 30.0


@dataclass
class Published:
    key: str  # "<publisher>:<n>", in the event's data
    rooms: list[str]
    phase: str
    sent: float
    acked: float | None = None


@dataclass
class Received:
    key: str
    room: str
    epoch: str
    offset: int


@dataclass
class Node:
    process: ServiceProcess
    link: SilencingProxy  # this node's own connections to Redis pass here


class History:
    def __init__(self) -> None:
        self.published: dict[str, Published] = {}
        self.phase = ""

    def sent(self, key: str, rooms: list[str]) -> Published:
        entry = self.published[key] = Published(key, rooms, self.phase, time.monotonic())
        return entry


class Watcher:
    """A client written from docs/recovery.md: `Subscriber`, which keeps positions and drops
    duplicates; everything it hands the application is recorded."""

    def __init__(self, url: str, user: str, transport: str) -> None:
        self.user = user
        self.rooms = {ROOM, f"user:{user}"}
        self.subscriber = Subscriber(
            url,
            lambda: token(user, ["p1"]),
            transports=[transport],
            reconnection_delay=0.1,
            reconnection_delay_max=0.5,
        )
        self.received: list[Received] = []
        self.resets: list[tuple[str, float]] = []
        self.subscriber.on("tick", lambda env: self._record(env, env["data"]["key"]))
        self.subscriber.on("notification", lambda env: self._record(env, env["data"]["data"]["key"]))
        self.subscriber.on_reset(lambda room, _reason: self.resets.append((room, time.monotonic())))

    def _record(self, envelope: dict[str, Any], key: str) -> None:
        self.received.append(Received(key, envelope["room"], envelope["epoch"], envelope["offset"]))

    async def start(self) -> None:
        await self.subscriber.connect()
        await self.subscriber.subscribe([ROOM])

    def told(self, room: str, since: float) -> bool:
        return any(r == room and at >= since for r, at in self.resets)


# Publishers: each sends its next request only once the one before is acknowledged (or given up).


async def publish_over_socket(url: str, name: str, history: History, stop: asyncio.Event) -> None:
    worker = Worker(url, token(name, role=Role.PUBLISHER), reconnection_delay=0.1, reconnection_delay_max=0.5)
    await worker.connect()
    try:
        for n in range(1_000_000):
            if stop.is_set():
                return
            entry = history.sent(f"{name}:{n}", [ROOM])
            with contextlib.suppress(NotifierClientError, TimeoutError):
                await asyncio.wait_for(worker.publish(ROOM, "tick", {"key": entry.key}), RETRY_FOR)
                entry.acked = time.monotonic()
            await asyncio.sleep(0.01)
    finally:
        await worker.close()


async def post_with_retries(http: aiohttp.ClientSession, url: str, key: str, body: dict[str, Any]) -> bool:
    """POST until a 2xx (True) or a refusal that is final (False); the same key every time."""
    headers = {"Authorization": f"Bearer {token('svc', role=Role.PUBLISHER)}", "Idempotency-Key": key}
    give_up = time.monotonic() + RETRY_FOR
    while time.monotonic() < give_up:
        try:
            async with http.post(
                url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
            ) as answer:
                if answer.status < 300:
                    return True
                if answer.status not in (429, 503):
                    return False
        except (aiohttp.ClientError, TimeoutError):
            pass  # the node went, or the answer was lost: the same key again
        await asyncio.sleep(0.1)
    return False


async def publish_over_rest(
    url: str, name: str, users: list[str], history: History, stop: asyncio.Event
) -> None:
    async with aiohttp.ClientSession() as http:
        for n in range(1_000_000):
            if stop.is_set():
                return
            if n % 2 == 0:
                entry = history.sent(f"{name}:{n}", [ROOM])
                body: dict[str, Any] = {"room": ROOM, "type": "tick", "data": {"key": entry.key}}
                route = "/api/v1/publish"
            else:
                entry = history.sent(f"{name}:{n}", [f"user:{user}" for user in users])
                body = {"user_ids": users, "title": entry.key, "data": {"key": entry.key}}
                route = "/api/v1/notifications"
            if await post_with_retries(http, url + route, entry.key, body):
                entry.acked = time.monotonic()
            await asyncio.sleep(0.02)


# Faults: each has a start and an end (which may be nothing), half a phase apart.

Step = Callable[["Suite"], Awaitable[None]]


async def nothing(suite: Suite) -> None:
    pass


async def kill_pubsub(suite: Suite) -> None:
    await suite.running.redis.command("CLIENT", "KILL", "TYPE", "pubsub")


async def kill_normal(suite: Suite) -> None:
    await suite.running.redis.command("CLIENT", "KILL", "TYPE", "normal")


async def silence_subscriptions(suite: Suite) -> None:
    suite.nodes[0].link.silence_subscriptions()


async def slow_links(suite: Suite) -> None:
    for node in suite.nodes:
        node.link.delay = 0.02


async def fast_links(suite: Suite) -> None:
    for node in suite.nodes:
        node.link.delay = 0.0


async def terminate_postgresql_sessions(suite: Suite) -> None:
    db = await asyncpg.connect(suite.running.store_url)
    try:
        await db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await db.close()


async def kill_node(suite: Suite) -> None:
    await suite.nodes[1].process.kill()


async def restart_node(suite: Suite) -> None:
    await suite.nodes[1].process.start()


async def snapshot_redis(suite: Suite) -> None:
    await suite.running.redis.command("SAVE")


async def restart_redis(suite: Suite) -> None:
    """Killed, and back with what is on its disk: the snapshot, if one was taken."""
    await suite.running.redis.stop()
    await suite.running.redis.start()


async def restart_redis_empty(suite: Suite) -> None:
    (suite.running.redis.directory / "dump.rdb").unlink(missing_ok=True)
    await restart_redis(suite)


async def terminate_listen_connections(suite: Suite) -> None:
    db = await asyncpg.connect(suite.running.store_url)
    try:
        await db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%'"  # the broker's and the relay's
        )
    finally:
        await db.close()


async def restart_postgresql(suite: Suite) -> None:
    assert suite.postgres is not None
    await suite.postgres.stop()
    await suite.postgres.start()


@dataclass(frozen=True)
class Fault:
    name: str
    start: Step
    end: Step = nothing


FAULTS = [
    Fault("none", nothing),
    Fault("Redis pub/sub connections killed", kill_pubsub),
    Fault("Redis command connections killed", kill_normal),
    Fault("a subscription gone silent", silence_subscriptions),
    Fault("20 ms to Redis", slow_links, fast_links),
    Fault("PostgreSQL sessions terminated", terminate_postgresql_sessions),
    Fault("a node killed (-9), restarted", kill_node, restart_node),
    Fault("Redis back from an older snapshot", snapshot_redis, restart_redis),
    Fault("Redis restarted empty", restart_redis_empty),
]
# With the PostgreSQL broker (no Redis): each node's store and broker connections pass
# through its own proxy.
POSTGRES_FAULTS = [
    Fault("none", nothing),
    Fault("LISTEN connections terminated", terminate_listen_connections),
    Fault("PostgreSQL sessions terminated", terminate_postgresql_sessions),
    Fault("20 ms to PostgreSQL", slow_links, fast_links),
    Fault("a node killed (-9), restarted", kill_node, restart_node),
    Fault("PostgreSQL restarted", restart_postgresql),
]
BROKERS = {"redis": FAULTS, "postgresql": POSTGRES_FAULTS}


@dataclass
class Row:
    acked: int = 0
    checked: int = 0  # acknowledged events times the clients following their room
    delivered: int = 0
    told: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)


def check(history: History, watchers: list[Watcher], faults: list[Fault] = FAULTS) -> dict[str, Row]:
    """Every acknowledged event, for every client following its room: delivered once, or told;
    nothing delivered twice; each publisher's events in order within an epoch."""
    rows = {fault.name: Row() for fault in faults}
    published = history.published
    for entry in published.values():
        if entry.acked is not None:
            rows[entry.phase].acked += 1
    for watcher in watchers:
        times = Counter((r.key, r.room) for r in watcher.received)
        for (key, room), count in times.items():
            if count > 1:
                rows[published[key].phase].duplicated.append(f"{watcher.user} {room} {key} x{count}")
        for entry in published.values():
            if entry.acked is None:
                continue
            for room in watcher.rooms.intersection(entry.rooms):
                row = rows[entry.phase]
                row.checked += 1
                if times[(entry.key, room)]:
                    row.delivered += 1
                elif watcher.told(room, entry.sent):
                    row.told += 1
                else:
                    row.lost.append(f"{watcher.user} {room} {entry.key}")
        last: dict[tuple[str, str, str], int] = {}
        for received in watcher.received:
            if received.room != ROOM:
                continue
            publisher, n = received.key.rsplit(":", 1)
            stream = (received.room, received.epoch, publisher)
            if int(n) < last.get(stream, -1):
                phase = published[received.key].phase
                rows[phase].out_of_order.append(f"{watcher.user} {received.key} after n={last[stream]}")
            last[stream] = max(int(n), last.get(stream, -1))
    return rows


def table(rows: dict[str, Row]) -> str:
    header = ("fault", "acked", "checked", "delivered", "told", "lost", "duplicated", "out of order")
    lines = [header] + [
        (
            name,
            str(row.acked),
            str(row.checked),
            str(row.delivered),
            str(row.told),
            str(len(row.lost)),
            str(len(row.duplicated)),
            str(len(row.out_of_order)),
        )
        for name, row in rows.items()
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for i, line in enumerate(lines):
        out.append(
            "  ".join(
                cell.ljust(w) if j == 0 else cell.rjust(w)
                for j, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
        )
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


@dataclass
class Suite:
    running: Cluster
    nodes: list[Node]
    postgres: PostgresServer | None = None  # the PostgreSQL broker's server, the suite's own


@contextlib.asynccontextmanager
async def two_nodes(directory: Path, broker: str) -> AsyncIterator[Suite]:
    """Two nodes, each reaching the broker through a proxy of its own (the PostgreSQL broker:
    the database, for the store and the broker)."""
    if broker == "redis":
        async with cluster(directory, nodes=0) as running:
            assert running.redis is not None
            nodes: list[Node] = []
            for _ in range(2):
                link = SilencingProxy(running.redis.port)
                await link.start()
                nodes.append(Node(await running.add_node(NOTIFIER_BROKER_URL=link.url), link))
            yield Suite(running, nodes)
        return
    postgres = PostgresServer()
    await postgres.init()
    await postgres.start()
    running = Cluster(directory, None, postgres.url)
    try:
        nodes = []
        for _ in range(2):
            link = SilencingProxy(postgres.port)
            await link.start()
            through = postgres.url.replace(f":{postgres.port}/", f":{link.port}/")
            node = await running.add_node(NOTIFIER_STORE_URL=through, NOTIFIER_BROKER_URL=through)
            nodes.append(Node(node, link))
        yield Suite(running, nodes, postgres)
    finally:
        await running.stop()
        await postgres.stop()
        postgres.remove()


async def run(directory: Path, seconds: float, broker: str = "redis") -> dict[str, Row]:
    """Every fault for `seconds` each, under load; the checked history, a row per fault."""
    faults = BROKERS[broker]
    async with two_nodes(directory, broker) as suite:
        nodes = suite.nodes
        watchers = [
            Watcher(node.process.url, f"u{i}{transport[0]}", transport)
            for i, node in enumerate(nodes)
            for transport in ("websocket", "polling")
        ]
        users = [watcher.user for watcher in watchers]
        history = History()
        stop = asyncio.Event()
        publishers: list[asyncio.Task[None]] = []
        try:
            for watcher in watchers:
                await watcher.start()
            for i, node in enumerate(nodes):
                url = node.process.url
                publishers.append(asyncio.create_task(publish_over_socket(url, f"ws{i}", history, stop)))
                publishers.append(
                    asyncio.create_task(publish_over_rest(url, f"rest{i}", users, history, stop))
                )
            for fault in faults:
                history.phase = fault.name
                await fault.start(suite)
                await asyncio.sleep(seconds / 2)
                await fault.end(suite)
                await asyncio.sleep(seconds / 2)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*publishers), RETRY_FOR + 10)
            await settle(history, watchers, faults)
        finally:
            stop.set()
            for task in publishers:
                task.cancel()
            await asyncio.gather(*publishers, return_exceptions=True)
            for watcher in watchers:
                await watcher.subscriber.close()
            for node in nodes:
                await node.link.stop()
        return check(history, watchers, faults)


async def settle(history: History, watchers: list[Watcher], faults: list[Fault]) -> None:
    """Until every client has every acknowledged event of its rooms or was told (bounded)."""
    deadline = time.monotonic() + SETTLE
    while time.monotonic() < deadline:
        rows = check(history, watchers, faults)
        if all(not row.lost for row in rows.values()):
            return
        await asyncio.sleep(0.2)


def failures(rows: dict[str, Row]) -> list[str]:
    return [
        f"{name}: {kind} {examples[:5]}"
        for name, row in rows.items()
        for kind, examples in (
            ("lost", row.lost),
            ("duplicated", row.duplicated),
            ("out of order", row.out_of_order),
        )
        if examples
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each fault's phase lasts")
    parser.add_argument("--broker", choices=sorted(BROKERS), default="redis")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="notifier-faults-") as directory:
        started = time.monotonic()
        rows = asyncio.run(run(Path(directory), arguments.seconds, arguments.broker))
    print(table(rows))
    faults = len(BROKERS[arguments.broker])
    print(f"\n{faults} faults, {arguments.seconds:g} s each, {time.monotonic() - started:.0f} s in all")
    problems = failures(rows)
    for problem in problems:
        print(problem)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
