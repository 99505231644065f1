"""Limits that keep one client, one user or one address from taking the process's file
descriptors or the event loop: each attack bounded, on loopback (attackers bind 127.0.0.x
addresses of their own), and through each of them /healthz answers and a new legitimate user
connects."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from benchmarks import hostile
from notifier import Settings
from tests.conftest import SECRET, ConnectRefused, RunningServer, make_settings
from tests.service_process import ServiceProcess
from tests.test_hostile import attack, bystander_pings
from tests.wire_client import Polling

LIMITS = {
    "max_connections_per_user": 3,
    "max_http_connections_per_peer": 10,
    "max_pending_sessions_per_peer": 5,
    "max_rooms_per_connection": 5,
    "connect_timeout_seconds": 1,
}


@pytest.fixture
def server_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, **LIMITS)


async def healthy(server: RunningServer) -> bool:
    async with aiohttp.ClientSession() as http, http.get(server.url + "/healthz") as response:
        return response.status == 200


async def legitimate_user_connects(server: RunningServer, user: str = "newcomer") -> None:
    client = await server.connect(user)
    assert (await client.call("ping", {}))["ok"]
    await client.disconnect()
    server.clients.remove(client)


async def websocket_from(address: str, url: str) -> tuple[int, bytes, asyncio.StreamWriter]:
    """A websocket handshake from `address`: its status, its answer's head, the connection."""
    reader, writer = await hostile.open_from(address, url)
    status, head = await hostile.websocket_handshake(writer, reader, "EIO=4&transport=websocket")
    return status, head, writer


# One user


async def test_one_user_may_hold_so_many_connections(server: RunningServer) -> None:
    held = [await server.connect("alice") for _ in range(3)]

    with pytest.raises(ConnectRefused) as refused:
        await server.connect("alice")

    assert refused.value.code == "LIMIT_REACHED"
    assert "NOTIFIER_MAX_CONNECTIONS_PER_USER" in refused.value.data["message"]
    await legitimate_user_connects(server)
    await held[0].disconnect()
    again = await eventually_connect_as(server, "alice")  # a slot is free again
    assert (await again.call("ping", {}))["ok"]


# One address: idle HTTP connections


async def test_idle_http_connections_from_one_address_are_capped(server: RunningServer) -> None:
    streams = [await hostile.open_from("127.0.0.2", server.url) for _ in range(30)]
    try:
        closed = 0
        for reader, _ in streams:
            try:
                data = await asyncio.wait_for(reader.read(4096), 0.2)
            except TimeoutError:
                continue  # held open: one of the allowed ones
            if data.startswith(b"HTTP/1.1 503") or not data:
                assert not data or b"Retry-After" in data
                closed += 1
        assert closed >= 20, f"only {closed} of 30 were refused"
        assert await healthy(server)
        await legitimate_user_connects(server)
    finally:
        for _, writer in streams:
            writer.close()


# One address: sessions that never connect a namespace


async def test_sessions_not_yet_connected_are_capped_per_address(server: RunningServer) -> None:
    pending = []
    statuses = []
    for _ in range(8):
        status, head, writer = await websocket_from("127.0.0.3", server.url)
        statuses.append(status)
        pending.append(writer)
        if status == 429:
            assert b"Retry-After" in head
    assert statuses.count(101) == 5 and statuses.count(429) == 3, statuses
    assert await healthy(server)
    await legitimate_user_connects(server)
    for writer in pending:
        writer.close()


async def test_a_refused_connect_does_not_restart_the_connect_timeout(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        polling = Polling(http, server.url)
        await polling.open()
        started = time.monotonic()

        async def refused_connects() -> None:
            while True:
                status, _ = await polling.post("40" + orjson.dumps({"token": "not-a-token"}).decode())
                if status != 200:
                    return
                status, _ = await polling.poll()
                if status != 200:
                    return
                await asyncio.sleep(0.2)

        await asyncio.wait_for(refused_connects(), 5)
        assert time.monotonic() - started < 2.0, "the session outlived its connect timeout"
        assert (await polling.poll())[0] == 400


# The process


async def test_past_the_process_limit_new_sessions_wait_and_health_checks_answer(tmp_path: Path) -> None:
    from tests.conftest import start_server, stop_server

    server, runner = await start_server(make_settings(tmp_path, max_connections=12))
    held = []
    try:
        statuses = []
        for n in range(16):
            status, head, writer = await websocket_from(f"127.0.{n + 10}.1", server.url)
            statuses.append(status)
            held.append(writer)
            if status == 503:
                assert b"Retry-After" in head
        assert 503 in statuses, statuses
        assert await healthy(server)
        status, _ = await server.http("GET", "/readyz")
        assert status == 200
        for writer in held:
            writer.close()
        held.clear()
        await eventually_connects(server)
    finally:
        for writer in held:
            writer.close()
        await stop_server(server, runner)


async def eventually_connect_as(server: RunningServer, user: str):
    for _ in range(50):
        try:
            return await server.connect(user)
        except ConnectRefused:
            await asyncio.sleep(0.05)
    raise AssertionError(f"{user} could not connect again")


async def eventually_connects(server: RunningServer) -> None:
    for _ in range(50):
        try:
            await legitimate_user_connects(server)
            return
        except Exception:
            await asyncio.sleep(0.1)
    raise AssertionError("no legitimate user could connect after the attack ended")


# Rooms


async def test_rooms_per_connection_and_recovered_positions_are_capped(server: RunningServer) -> None:
    projects = [f"p{n}" for n in range(10)]
    alice = await server.connect("alice", projects=projects)
    reply = await alice.call("subscribe", {"rooms": [f"project:{p}" for p in projects]})
    joined = [room for room, result in reply["rooms"].items() if result["joined"]]
    refused = [result["error"]["code"] for result in reply["rooms"].values() if not result["joined"]]
    assert len(joined) == 3  # with its own two rooms, five in all
    assert set(refused) == {"LIMIT_REACHED"}

    token = server.token("bob", projects=projects)
    positions = {f"project:{p}": None for p in projects}
    with pytest.raises(ConnectRefused) as too_many:
        await server.connect("bob", projects=projects, auth={"token": token, "positions": positions})
    assert too_many.value.code == "LIMIT_REACHED"


# Control frames


async def test_a_ping_frame_flood_is_cut_and_costs_memory_and_bystanders_nothing(tmp_path: Path) -> None:
    service = ServiceProcess(tmp_path / "data", SECRET, log_path=tmp_path / "service.log")
    await service.start()
    try:
        assert service.process is not None
        idle = _rss_kb(service.process.pid)
        flooder = await attack(service, "pings", "--seconds", "4")
        await asyncio.sleep(0.3)
        latencies = await bystander_pings(service.url, 3.0)
        peak = _rss_kb(service.process.pid)
        if flooder.returncode is None:
            flooder.kill()
        await flooder.wait()
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        assert peak - idle < 20_000, f"RSS grew {peak - idle} KB under the flood"
        assert p99 < 0.050, (
            f"bystander p99 {p99 * 1000:.1f} ms (median {statistics.median(latencies) * 1000:.1f})"
        )
    finally:
        await service.kill()


def _rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])


# Reconnects


async def test_connect_disconnect_cycles_leave_nothing_behind(tmp_path: Path) -> None:
    """5,000 cycles with one-hour tokens: the service's memory stays flat (nothing outlives
    its connection, deadline structures included)."""
    service = ServiceProcess(tmp_path / "data", SECRET, log_path=tmp_path / "service.log")
    await service.start()
    token = orjson.dumps({"token": server_token("mobile")})

    async def cycle() -> None:
        reader, writer = await hostile.raw_websocket(service.url)
        writer.write(hostile.masked_frame(b"40" + token))
        received = b""
        while b"session" not in received:
            received += await asyncio.wait_for(reader.read(65536), 5)
        writer.write(hostile.masked_frame(b"1"))
        writer.close()

    async def cycles(count: int) -> None:
        slots = asyncio.Semaphore(20)

        async def one() -> None:
            async with slots:
                await cycle()

        await asyncio.gather(*(one() for _ in range(count)))

    try:
        assert service.process is not None
        await cycles(500)  # warm: caches, pools and allocator arenas at their working size
        before = _rss_kb(service.process.pid)
        await cycles(5000)
        await asyncio.sleep(1.0)  # the last sessions' ends are processed
        after = _rss_kb(service.process.pid)
        assert after - before < 2048, f"RSS grew {after - before} KB over 5,000 cycles"
    finally:
        await service.kill()


def server_token(user: str) -> str:
    from notifier.auth import issue_token

    return issue_token(SECRET, "HS256", user, ttl_seconds=3600)
