"""One contract, every broker: in-process (SQLite), Redis and PostgreSQL, each a real backend.

Order, no gaps, replay, epochs, idempotent appends, guards, presence, signals (revocations
travel as signals), one-offs, unkept announcements and the all-projects feed. The shared
brokers run two nodes over one backend: whatever one appends, both deliver."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from notifier.broker import UNKEPT, Broker, Delivery, Guard, NewEvent, open_broker
from notifier.broker.postgres import PostgresBroker
from notifier.broker.redis import RedisBroker
from notifier.health import Health
from notifier.records import new_id
from notifier.store import open_store
from tests.backends import postgres_database
from tests.cluster import RedisServer
from tests.conftest import until

OPTIONS = {"max_events_per_room": 10_000, "max_age_seconds": 3600.0}


class Node:
    """What a broker delivers to a process, written down."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.losses: list[tuple[str, str]] = []
        self.signals: list[tuple[str, dict[str, Any]]] = []

    def deliver(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)

    def lost(self, room: str, reason: str) -> None:
        self.losses.append((room, reason))

    def describe(self) -> dict[str, Any]:
        return {"user_connections": 0}

    def signal(self, kind: str, data: dict[str, Any]) -> None:
        self.signals.append((kind, data))

    def signals_missed(self) -> None:
        pass

    def offsets(self, room: str) -> list[int]:
        return [d.offset for d in self.deliveries if d.room == room and d.kept]


Backend = Callable[[], Broker]


@pytest.fixture(params=["local", "redis", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, Backend]]:
    """A factory of brokers over one backend (a node each), and the backend's name."""
    if request.param == "local":
        url = f"sqlite:///{tmp_path / 'local.db'}"
        yield "local", lambda: open_broker("", open_store(url, Health()), Health(), **OPTIONS)
        return
    if request.param == "redis":
        redis = RedisServer(tmp_path / "redis")
        await redis.start()
        try:
            yield "redis", lambda: RedisBroker(redis.url, Health(), **OPTIONS)
        finally:
            await redis.stop()
        return
    async with postgres_database() as url:
        yield "postgresql", lambda: PostgresBroker(url, Health(), **OPTIONS)


@pytest.fixture
async def nodes(backend: tuple[str, Backend]) -> AsyncIterator[list[tuple[Broker, Node]]]:
    """Started brokers with their nodes: two for the shared brokers, one in-process."""
    name, make = backend
    async with AsyncExitStack() as stack:
        started = []
        for _ in range(1 if name == "local" else 2):
            broker, node = make(), Node()
            await broker.start(node)
            stack.push_async_callback(broker.stop)
            started.append((broker, node))
        yield started


def event(room: str, n: int, *, once: bool = False, event_id: str | None = None) -> NewEvent:
    return NewEvent(room, "tick", {"n": n}, event_id or new_id(), int(time.time() * 1000), once)


async def test_appends_are_delivered_to_every_node_in_offset_order_without_gaps(
    nodes: list[tuple[Broker, Node]],
) -> None:
    for broker, _ in nodes:
        await broker.follow("project:p1")
    publisher = nodes[0][0]
    # Single appends and batches, all at once, from one node.
    singles = [publisher.publish([event("project:p1", n)]) for n in range(200)]
    batches = [
        publisher.publish([event("project:p1", 1000 + 2 * n), event("project:p1", 1001 + 2 * n)])
        for n in range(50)
    ]
    answers = await asyncio.gather(*singles, *batches)
    offsets = sorted(envelope["offset"] for answer in answers for envelope in answer or [])
    assert offsets == list(range(1, 301))
    for _, node in nodes:
        await until(lambda node=node: len(node.offsets("project:p1")) >= 300, timeout=10)
        assert node.offsets("project:p1") == list(range(1, 301))
        assert not node.losses
    epochs = {d.epoch for _, node in nodes for d in node.deliveries}
    assert len(epochs) == 1 and "" not in epochs


async def test_history_is_read_back_by_offset_with_its_bounds(nodes: list[tuple[Broker, Node]]) -> None:
    broker = nodes[0][0]
    for n in range(30):
        await broker.publish([event("task:t1", n)])
    page = await broker.read("task:t1", 10, 5)
    assert [e["offset"] for e in page] == [11, 12, 13, 14, 15]
    assert [e["data"]["n"] for e in page] == [10, 11, 12, 13, 14]
    head, first = await broker.bounds("task:t1")
    assert (head.offset, first) == (30, 1)
    assert head.epoch == page[0]["epoch"]
    empty, first_of_empty = await broker.bounds("task:never")
    assert (empty.offset, first_of_empty) == (0, 1)
    # Every node reads the same history.
    assert await nodes[-1][0].read("task:t1", 28, 10) == await broker.read("task:t1", 28, 10)


async def test_the_epoch_outlives_a_restart_of_the_broker(backend: tuple[str, Backend]) -> None:
    _, make = backend
    first, node = make(), Node()
    await first.start(node)
    [[envelope]] = [await first.publish([event("user:alice", 1)])]  # type: ignore[misc]
    await first.stop()
    again = make()
    await again.start(Node())
    try:
        head, _ = await again.bounds("user:alice")
        assert head == type(head)(envelope["epoch"], 1)
        [[after]] = [await again.publish([event("user:alice", 2)])]  # type: ignore[misc]
        assert (after["epoch"], after["offset"]) == (envelope["epoch"], 2)
    finally:
        await again.stop()


async def test_an_event_appended_once_is_answered_with_its_first_offset_again(
    nodes: list[tuple[Broker, Node]],
) -> None:
    broker = nodes[0][0]
    await broker.publish([event("user:bob", 0)])
    first = await broker.publish([event("user:bob", 1, once=True, event_id="fixed-id")])
    again = await nodes[-1][0].publish([event("user:bob", 99, once=True, event_id="fixed-id")])
    assert first is not None and again is not None
    assert again[0]["offset"] == first[0]["offset"] == 2
    kept = [e for e in await broker.read("user:bob", 0, 10) if e["id"] == "fixed-id"]
    assert [e["data"] for e in kept] == [{"n": 1}]  # the first one, once


async def test_a_guard_refuses_an_older_version(nodes: list[tuple[Broker, Node]]) -> None:
    broker = nodes[0][0]
    assert await broker.publish([event("task:t2", 1)], Guard("task:t2", 5)) is not None
    assert await nodes[-1][0].publish([event("task:t2", 2)], Guard("task:t2", 4)) is None
    assert await broker.publish([event("task:t2", 3)], Guard("task:t2", 6)) is not None
    assert [e["data"]["n"] for e in await broker.read("task:t2", 0, 10)] == [1, 3]


async def test_signals_reach_every_node(nodes: list[tuple[Broker, Node]]) -> None:
    await nodes[0][0].signal("revoke", {"user": "alice", "before": 123})
    for _, node in nodes:
        await until(lambda node=node: node.signals, timeout=10)
        assert node.signals == [("revoke", {"user": "alice", "before": 123})]


async def test_announcements_reach_followers_unkept(nodes: list[tuple[Broker, Node]]) -> None:
    for broker, _ in nodes:
        await broker.follow("presence:project:p1")
    await nodes[0][0].announce([("presence:project:p1", event("project:p1", 7))])
    for broker, node in nodes:
        await until(lambda node=node: node.deliveries, timeout=10)
        [delivery] = node.deliveries
        assert delivery.offset == UNKEPT and delivery.envelope["data"] == {"n": 7}
        assert (await broker.bounds("project:p1"))[0].offset == 0  # nothing kept


async def test_the_all_projects_feed_gets_every_project_room(nodes: list[tuple[Broker, Node]]) -> None:
    follower, node = nodes[-1]
    await follower.follow("project:*")
    await nodes[0][0].publish([event("project:p7", 1), event("project:p8", 2), event("user:x", 3)])
    await until(lambda: {"project:p7", "project:p8"} <= {d.room for d in node.deliveries}, timeout=10)


async def test_a_one_off_is_won_by_one_node(nodes: list[tuple[Broker, Node]]) -> None:
    wins = await asyncio.gather(*(broker.claim("refresh-tick", 5.0) for broker, _ in nodes))
    assert wins.count(True) == 1


async def test_presence_counts_every_node_and_ends_after_the_grace(nodes: list[tuple[Broker, Node]]) -> None:
    grace = 2.0
    backends = [broker.presence(grace_seconds=grace, ttl_seconds=10) for broker, _ in nodes]
    first, last = backends[0], backends[-1]
    member = ("project:p1", "alice")
    now = time.time()
    assert await first.change({member: 1}, now) == [member]  # absent until now
    for backend in backends[1:]:
        assert await backend.change({member: 1}, now) == []  # present already
    assert await last.members("project:p1") == {"alice": len(backends)}
    await first.change({member: -5}, now)  # never below what a node added itself
    assert await last.members("project:p1") == {"alice": len(backends) - 1}
    for backend in backends[1:]:
        await backend.change({member: -1}, now)
    assert await first.members("project:p1") == {"alice": 0}  # gone, within the grace
    assert await first.sweep(now + grace / 2) == []
    assert await last.sweep(now + grace + 1) == [member]
    assert await first.sweep(now + grace + 2) == []  # each member to one caller only
    assert await first.members("project:p1") == {}
    # A node that stops takes its connections with it.
    await first.change({("user:bob", "bob"): 1}, now)
    await first.remove_mine(now)
    assert await last.members("user:bob") == {"bob": 0}
