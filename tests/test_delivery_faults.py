"""Work that runs inside another component's critical section (the store's commit, the fan-out
over a room) may fail by a defect; it must cost only what it belongs to. Faults are injected
into the real server: a connection whose send raises, an after-commit hook that raises."""

from __future__ import annotations

import asyncio

import pytest

from notifier.broker.local import LocalBroker
from notifier.wire import EngineSession, Outbound
from tests.conftest import RunningServer, until


async def publish(server: RunningServer, n: int) -> None:
    token = server.token("worker", role="publisher")
    status, answer = await asyncio.wait_for(
        server.http(
            "POST", "/api/v1/publish", token, json={"room": "project:p1", "type": "tick", "data": {"n": n}}
        ),
        5,
    )
    assert status == 201, answer


async def test_a_connection_whose_delivery_raises_costs_only_itself(
    server: RunningServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await server.connect("alice", projects=["p1"])
    bob = await server.connect("bob", projects=["p1"])
    carol = await server.connect("carol", projects=["p1"])
    for client in (alice, bob, carol):
        assert (await client.call("subscribe", {"rooms": ["project:p1"]}))["ok"]
    fanout = server.notifier._transport
    (broken,) = [c for c in fanout.members("project:p1") if c.data.claims.sub == "bob"]

    session, send = broken.session, EngineSession.send

    def failing_for_bob(self: EngineSession, packet: Outbound) -> None:
        if self is session:
            raise RuntimeError("a defect in delivery")
        send(self, packet)

    monkeypatch.setattr(EngineSession, "send", failing_for_bob)  # bob's fails; he alone pays

    for n in range(5):
        await publish(server, n)

    for client in (alice, carol):
        await client.wait_until(lambda c=client: len(c.of_type("tick")) == 5, what="5 ticks")
    await until(lambda: not bob.sio.connected, timeout=5)
    assert len([r for r in caplog.records if "delivery_failed" in r.getMessage()]) == 1


async def test_an_after_commit_hook_that_raises_leaves_no_writer_waiting(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    alice = await server.connect("alice", projects=["p1"])
    assert (await alice.call("subscribe", {"rooms": ["project:p1"]}))["ok"]
    broker = server.notifier.broker
    assert isinstance(broker, LocalBroker)

    def failing_hook() -> None:
        raise RuntimeError("a defect after the commit")

    broker.db.on_after_commit(failing_hook)

    for n in range(3):
        await publish(server, n)  # answered: what was committed is acknowledged

    await alice.wait_until(lambda: len(alice.of_type("tick")) == 3, what="3 ticks")
    hook_lines = [r for r in caplog.records if "after_commit_hook_failed" in r.getMessage()]
    assert len(hook_lines) == 1
