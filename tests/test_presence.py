"""Presence: who is in a project or task room, per user, with a grace for reconnects."""

from __future__ import annotations

import signal
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from notifier import Settings
from notifier.auth import Role
from notifier.client import Subscriber
from tests.cluster import cluster
from tests.conftest import RunningServer, eventually, make_settings, start_server, stop_server, until
from tests.test_cluster import token
from tests.wire_client import Polling

GRACE = 1.0


@pytest.fixture
def server_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, presence_grace_seconds=GRACE)


def presence_events(client, kind: str) -> list[str]:
    return [event["data"]["user_id"] for event in client.of_type(f"presence.{kind}")]


async def test_users_join_once_and_leave_after_their_last_connection(server: RunningServer) -> None:
    observer = await server.connect("olga", ["p1"])
    await observer.call("subscribe", {"rooms": ["project:p1"], "presence": True})
    alice_phone = await server.connect("alice", ["p1"])
    await alice_phone.call("subscribe", {"rooms": ["project:p1"]})
    alice_laptop = await server.connect("alice", ["p1"])
    await alice_laptop.call("subscribe", {"rooms": ["project:p1"]})
    bob = await server.connect("bob", ["p1"])
    await bob.call("subscribe", {"rooms": ["project:p1"]})

    await observer.wait_until(lambda: len(presence_events(observer, "joined")) >= 3)
    assert sorted(presence_events(observer, "joined")) == ["alice", "bob", "olga"]
    joined = observer.of_type("presence.joined")[0]
    assert joined["room"] == "project:p1" and "offset" not in joined  # not in the history

    reply = await observer.call("presence.get", {"room": "project:p1"})
    assert reply["users"] == [
        {"user_id": "alice", "connections": 2},
        {"user_id": "bob", "connections": 1},
        {"user_id": "olga", "connections": 1},
    ]
    stats = await observer.call("presence.stats", {"room": "project:p1"})
    assert (stats["users"], stats["connections"]) == (3, 4)
    assert not bob.of_type("presence.joined")  # only those who asked get presence events

    await alice_phone.disconnect()  # alice is still there on her laptop
    await bob.disconnect()
    await observer.next_event("presence.left", timeout=GRACE + 3)
    await alice_laptop.disconnect()
    await observer.next_event("presence.left", 2, timeout=GRACE + 3)
    assert presence_events(observer, "left") == ["bob", "alice"]
    assert presence_events(observer, "joined").count("alice") == 1
    reply = await observer.call("presence.get", {"room": "project:p1"})
    assert [user["user_id"] for user in reply["users"]] == ["olga"]

    # Presence events take no offsets: the room's first published event is still offset 1.
    worker = await server.worker()
    assert (await worker.call("publish", {"room": "project:p1", "type": "x"}))["offset"] == 1


async def test_a_reconnect_within_the_grace_causes_no_leave_and_join(server: RunningServer) -> None:
    observer = await server.connect("olga", ["p1"])
    await observer.call("subscribe", {"rooms": ["project:p1"], "presence": True})
    alice = await server.connect("alice", ["p1"])
    await alice.call("subscribe", {"rooms": ["project:p1"]})
    await observer.wait_until(lambda: "alice" in presence_events(observer, "joined"))
    await alice.disconnect()
    again = await server.connect("alice", ["p1"])
    await again.call("subscribe", {"rooms": ["project:p1"]})
    # Past the grace, with a marker event to know everything before it has arrived.
    deadline = time.monotonic() + GRACE + 1.5
    await until(lambda: time.monotonic() > deadline, timeout=GRACE + 3)
    worker = await server.worker()
    await worker.call("publish", {"room": "project:p1", "type": "marker"})
    await observer.next_event("marker")
    assert presence_events(observer, "left") == []
    assert presence_events(observer, "joined").count("alice") == 1


async def test_an_abandoned_long_polling_client_leaves_within_the_gap_and_the_grace(tmp_path: Path) -> None:
    # A client a proxy moved to another node (or a closed tab) simply stops polling: its
    # session here must not stay listed until the ping timeout (25 + 20 s by default).
    gap = 1.0
    settings = make_settings(tmp_path, presence_grace_seconds=GRACE, polling_gap_seconds=gap)
    server, runner = await start_server(settings)
    try:
        observer = await server.connect("olga", ["p1"])
        await observer.call("subscribe", {"rooms": ["project:p1"], "presence": True})
        async with aiohttp.ClientSession() as http:
            carol = Polling(http, server.url)
            await carol.open()
            await carol.connect(server.token("carol", projects=["p1"]))
            assert await carol.post('421["subscribe",{"rooms":["project:p1"]}]') == (200, "ok")
            await carol.packets_until("431")
            await observer.wait_until(lambda: "carol" in presence_events(observer, "joined"))
            abandoned = time.monotonic()  # the last poll was answered: carol polls no more

            await observer.next_event("presence.left", timeout=gap + GRACE + 3)
            took = time.monotonic() - abandoned
            assert presence_events(observer, "left") == ["carol"]
            # (the sweep runs every second, and the gap is checked on the time wheel's tick)
            assert gap + GRACE - 0.1 <= took <= gap + GRACE + 1.5, took
            assert (await carol.poll())[0] == 400  # the session is gone
    finally:
        await stop_server(server, runner)


async def test_presence_is_asked_with_the_rights_of_subscribe(server: RunningServer) -> None:
    alice = await server.connect("alice", ["p1"])
    denied = await alice.call("presence.get", {"room": "project:p2"})
    assert denied["error"]["code"] == "FORBIDDEN"
    wrong = await alice.call("presence.stats", {"room": "user:bob"})
    assert wrong["error"]["code"] == "INVALID_PAYLOAD" and "project and task" in wrong["error"]["message"]
    missing = await alice.call("presence.get", {})
    assert missing["error"]["code"] == "INVALID_PAYLOAD" and missing["error"]["message"].startswith("room")

    await alice.call("subscribe", {"rooms": ["project:p1"]})
    status, body = await server.http(
        "GET", "/api/v1/presence?room=project:p1", server.token("svc", role=Role.PUBLISHER)
    )
    assert status == 200 and body["users"] == [{"user_id": "alice", "connections": 1}]
    status, body = await server.http("GET", "/api/v1/presence?room=project:p1", server.token("bob"))
    assert status == 403 and body["error"]["code"] == "FORBIDDEN"


async def test_presence_spans_nodes_and_a_killed_node_leaves_no_ghosts(tmp_path: Path) -> None:
    ttl = 3
    async with cluster(
        tmp_path, nodes=2, NOTIFIER_PRESENCE_TTL_SECONDS=str(ttl), NOTIFIER_PRESENCE_GRACE_SECONDS=str(GRACE)
    ) as running:
        a, b = running.nodes
        olga = Subscriber(b.url, token("olga", ["p1"]))
        joined: list[str] = []
        left: list[str] = []
        olga.on("presence.joined", lambda event: joined.append(event["data"]["user_id"]))
        olga.on("presence.left", lambda event: left.append(event["data"]["user_id"]))
        alice = Subscriber(a.url, token("alice", ["p1"]))  # on the node that will be killed
        bob = Subscriber(b.url, token("bob", ["p1"]))
        try:
            await olga.connect()
            await olga.subscribe(["project:p1"], presence=True)
            for user in (alice, bob):
                await user.connect()
                await user.subscribe(["project:p1"])
            await until(lambda: sorted(joined) == ["alice", "bob", "olga"], timeout=10)
            users = (await olga.call("presence.get", {"room": "project:p1"}))["users"]
            assert {u["user_id"]: u["connections"] for u in users} == {"alice": 1, "bob": 1, "olga": 1}

            killed_at = time.monotonic()
            await a.kill()  # -9: no goodbye from node A
            await until(lambda: left == ["alice"], timeout=ttl + GRACE + 5)
            assert time.monotonic() - killed_at < ttl + GRACE + 3
            users = (await olga.call("presence.get", {"room": "project:p1"}))["users"]
            assert [u["user_id"] for u in users] == ["bob", "olga"]  # no ghost of alice
        finally:
            for client in (olga, alice, bob):
                await client.close()


async def _is(answer: Awaitable[Any], expected: Any) -> bool:
    return await answer == expected


async def test_presence_survives_a_node_pausing_past_its_ttl(tmp_path: Path) -> None:
    """A node stopped (SIGSTOP) past the TTL loses its entries; once it runs again it writes
    them back, and its users are present again."""
    ttl = 3
    async with cluster(
        tmp_path, nodes=2, NOTIFIER_PRESENCE_TTL_SECONDS=str(ttl), NOTIFIER_PRESENCE_GRACE_SECONDS="0"
    ) as running:
        a, b = running.nodes
        alice = Subscriber(a.url, token("alice", ["p1"]))
        olga = Subscriber(b.url, token("olga", ["p1"]))
        try:
            await alice.connect()
            await alice.subscribe(["project:p1"])
            await olga.connect()

            async def present() -> list[str]:
                users = (await olga.call("presence.get", {"room": "project:p1"}))["users"]
                return [u["user_id"] for u in users]

            assert await present() == ["alice"]
            assert a.process is not None
            a.process.send_signal(signal.SIGSTOP)
            try:
                await eventually(lambda: _is(present(), []), timeout=ttl + 10)
            finally:
                a.process.send_signal(signal.SIGCONT)
            await eventually(lambda: _is(present(), ["alice"]), timeout=10)
        finally:
            await alice.close()
            await olga.close()
