"""Tokens over a connection's life: renewed in-band, narrowed, revoked on demand."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import pytest

from notifier.auth import Role
from notifier.client import NotifierClientError, Subscriber
from tests.cluster import cluster
from tests.conftest import ConnectRefused, RunningServer, until
from tests.test_cluster import token


async def test_a_short_token_renewed_in_band_keeps_one_connection_for_30_seconds(
    server: RunningServer,
) -> None:
    issued: list[float] = []

    def five_second_token() -> str:
        issued.append(time.monotonic())
        return server.token("alice", ["p1"], ttl=5)

    alice = Subscriber(server.url, five_second_token)
    connects: list[float] = []
    ticks: list[int] = []
    expiring: list[dict] = []
    alice.sio.on("connect", lambda: connects.append(time.monotonic()))
    alice.on("tick", lambda event: ticks.append(event["data"]["n"]))
    alice.on("auth.expiring", expiring.append)
    closed: list[dict] = []
    alice.on("auth.expired", closed.append)
    await alice.connect()
    await alice.subscribe(["project:p1"])
    worker = await server.worker()
    try:
        started, n = time.monotonic(), 0
        while time.monotonic() - started < 30:
            await worker.call("publish", {"room": "project:p1", "type": "tick", "data": {"n": n}})
            n += 1
            await until(lambda count=n: len(ticks) == count, timeout=5)  # paced by delivery
            await until(lambda due=started + n * 0.25: time.monotonic() > due, timeout=1)
        assert ticks == list(range(n)) and n >= 100
        assert len(connects) == 1 and not closed, "the connection never dropped"
        assert len(issued) >= 7, "a 5-second token lasted 30 s by being renewed in-band"
        assert expiring and all(e["data"]["expires_at"] > 0 for e in expiring)
    finally:
        await alice.close()


async def test_a_token_for_another_user_is_refused_and_the_old_expiry_stays(
    server: RunningServer,
) -> None:
    alice = await server.connect("alice", ["p1"], ttl=3)
    reply = await alice.call("auth.refresh", {"token": server.token("bob", ["p1"])})
    assert reply["error"]["code"] == "FORBIDDEN" and "'bob'" in reply["error"]["message"]
    expired = await alice.next_event("auth.expired", timeout=6)
    assert expired["data"]["code"] == "AUTH_EXPIRED"


async def test_refresh_needs_a_valid_token(server: RunningServer) -> None:
    alice = await server.connect("alice", ["p1"])
    bad = await alice.call("auth.refresh", {"token": "not-a-jwt"})
    assert bad["error"]["code"] == "AUTH_INVALID"
    old = await alice.call("auth.refresh", {"token": server.token("alice", ["p1"], ttl=-60)})
    assert old["error"]["code"] == "AUTH_EXPIRED"
    missing = await alice.call("auth.refresh", {})
    assert missing["error"]["code"] == "INVALID_PAYLOAD" and missing["error"]["message"].startswith("token")
    worker = await server.worker()
    demoted = await worker.call("auth.refresh", {"token": server.token("worker-1")})
    assert demoted["error"]["code"] == "FORBIDDEN"


async def test_a_narrowed_token_removes_the_rooms_it_no_longer_allows(server: RunningServer) -> None:
    alice = await server.connect("alice", ["p1", "p2"])
    await alice.call("subscribe", {"rooms": ["project:p1", "project:p2"]})
    reply = await alice.call("auth.refresh", {"token": server.token("alice", ["p1"], ttl=600)})
    assert reply["ok"] and reply["rooms_revoked"] == ["project:p2"]
    assert reply["expires_at"] > time.time() * 1000 + 500_000
    revoked = await alice.next_event("rooms.revoked")
    assert revoked["data"]["rooms"] == ["project:p2"]
    assert revoked["data"]["reason"]["code"] == "FORBIDDEN"

    worker = await server.worker()
    await worker.call("publish", {"room": "project:p2", "type": "secret"})
    await worker.call("publish", {"room": "project:p1", "type": "marker"})
    await alice.next_event("marker")
    assert not alice.of_type("secret")
    again = await alice.call("subscribe", {"rooms": ["project:p2"]})
    assert again["rooms"]["project:p2"]["error"]["code"] == "FORBIDDEN"


async def test_disconnecting_a_user_closes_their_connections_and_refuses_old_tokens(
    server: RunningServer,
) -> None:
    old_token = server.token("alice", ["p1"])
    phone = await server.connect(auth={"token": old_token})
    laptop = await server.connect(auth={"token": old_token})
    bob = await server.connect("bob", ["p1"])
    status, body = await server.http("POST", "/api/v1/users/alice/disconnect", server.token("bob"))
    assert status == 403 and body["error"]["code"] == "FORBIDDEN"

    status, body = await server.http(
        "POST", "/api/v1/users/alice/disconnect", server.token("ops", role=Role.ADMIN)
    )
    assert status == 200 and body["user_id"] == "alice"
    assert body["revoked_until"] - body["revoked_at"] == server.settings.revocation_seconds * 1000
    for device in (phone, laptop):
        revoked = await device.next_event("auth.revoked")
        assert revoked["data"]["code"] == "AUTH_REVOKED"
        await until(lambda device=device: not device.sio.connected, timeout=5)
    assert bob.sio.connected and not bob.of_type("auth.revoked")

    with pytest.raises(ConnectRefused) as refused:
        await server.connect(auth={"token": old_token})
    assert refused.value.code == "AUTH_REVOKED"
    status, refusal = await server.http("GET", "/api/v1/notifications", old_token)
    assert (status, refusal["error"]["code"]) == (401, "AUTH_REVOKED")  # REST refuses it too

    # A token issued after the revocation (in a later second) connects.
    await until(lambda: int(time.time()) * 1000 > body["revoked_at"], timeout=2)
    await server.connect("alice", ["p1"])


async def test_a_user_is_disconnected_on_every_node(tmp_path: Path) -> None:
    async with cluster(tmp_path, nodes=2) as running:
        a, b = running.nodes
        old = token("alice", ["p1"])
        on_a, on_b = Subscriber(a.url, old), Subscriber(b.url, old)
        revoked: list[str] = []
        on_a.on("auth.revoked", lambda event: revoked.append("a"))
        on_b.on("auth.revoked", lambda event: revoked.append("b"))
        try:
            await on_a.connect()
            await on_b.connect()
            admin = token("ops", role=Role.ADMIN)
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"{a.url}/api/v1/users/alice/disconnect",
                    headers={"Authorization": f"Bearer {admin}"},
                ) as response,
            ):
                assert response.status == 200
            await until(lambda: sorted(revoked) == ["a", "b"], timeout=10)
            await until(lambda: not on_a.sio.connected and not on_b.sio.connected, timeout=10)

            # A node started after the call knows it too (from the store).
            c = await running.add_node()
            for url in (b.url, c.url):
                late = Subscriber(url, old)
                with pytest.raises(NotifierClientError) as refused:
                    await late.connect(timeout=5)
                assert refused.value.code == "AUTH_REVOKED"
        finally:
            await on_a.close()
            await on_b.close()
