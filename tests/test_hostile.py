"""Hostile and broken clients against a real service process: they cost almost nothing.

The attackers are in benchmarks/hostile.py (raw sockets, no client library), each run in a
process of its own; `benchmarks.run hostile` measures the same attacks at full size.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import jwt
import orjson
import pytest
import socketio

from benchmarks import hostile
from notifier.auth import Role, issue_token
from tests.conftest import (
    ADMIN,
    SECRET,
    ConnectRefused,
    RunningServer,
    make_settings,
    start_server,
    stop_server,
    until,
)
from tests.service_process import ServiceProcess

ROOT = Path(__file__).resolve().parents[1]


def token(user: str, role: Role = Role.USER) -> str:
    return issue_token(SECRET, "HS256", user, role=role)


@pytest.fixture
async def service(tmp_path: Path):
    process = ServiceProcess(
        tmp_path / "data",
        SECRET,
        log_path=tmp_path / "service.log",
        NOTIFIER_LOG_LEVEL="INFO",
        NOTIFIER_HTTP_HEADER_TIMEOUT_SECONDS="1",
        NOTIFIER_CONNECT_TIMEOUT_SECONDS="1",
    )
    await process.start()
    yield process
    await process.kill()


def log_of(service: ServiceProcess) -> str:
    assert service.log_path is not None
    return service.log_path.read_text(errors="replace")


async def attack(service: ServiceProcess, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.hostile",
        *args,
        "--url",
        service.url,
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )


async def bystander_pings(url: str, seconds: float) -> list[float]:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url, auth={"token": token("bob")}, transports=["websocket"])
    latencies = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            sent = time.perf_counter()
            reply = await client.call("ping", {}, timeout=5)
            assert reply["ok"] is True
            latencies.append(time.perf_counter() - sent)
            await asyncio.sleep(0.02)
    finally:
        await client.disconnect()
    return latencies


async def test_an_anonymous_flood_leaves_a_bystander_fast(service: ServiceProcess) -> None:
    flooders = [
        await attack(service, "flood", "--seconds", "4"),
        await attack(service, "malformed", "--count", "100000", "--seconds", "4"),
    ]
    await asyncio.sleep(0.5)  # the flood is under way

    latencies = await bystander_pings(service.url, 3.0)

    for flooder in flooders:
        if flooder.returncode is None:  # the service may have closed it for flooding already
            flooder.kill()
        await flooder.wait()
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    assert len(latencies) > 50
    assert p99 < 0.050, f"bystander p99 {p99 * 1000:.1f} ms, median {statistics.median(latencies) * 1000:.1f}"
    assert "Traceback" not in log_of(service)


async def test_malformed_packets_barely_grow_the_log(service: ServiceProcess) -> None:
    before = len(log_of(service).encode())

    done = await hostile.malformed_sessions(service.url, 2000)

    grown = len(log_of(service).encode()) - before
    assert done == 2000
    assert grown < 20_000, f"the log grew by {grown} bytes for 2000 malformed packets"
    assert "Traceback" not in log_of(service)
    assert "suppressed" in log_of(service) or grown < 5_000


async def test_unexpected_polling_posts_are_answered_and_abandoned_polls_let_go(
    service: ServiceProcess,
) -> None:
    for body in (b"6", b"0", b"2", b"7", b"\x1e\x1e"):
        took = await hostile.unexpected_posts(service.url, 5, body)
        assert max(took) < 1.0, (body, took)

    rss_before = service.rss_kb()
    await hostile.abandoned_polls(service.url, 300)
    async with aiohttp.ClientSession() as http:
        # Sessions that only sent a NOOP are closed by the connect timeout (1 s here).
        for _ in range(50):
            async with http.get(service.url + "/api/v1/status", headers=ADMIN) as response:
                sessions = (await response.json())["sessions"]
            if sessions["polling"] == 0:
                break
            await asyncio.sleep(0.1)
    assert sessions == {"websocket": 0, "polling": 0}
    assert service.rss_kb() - rss_before < 10_000

    started = time.monotonic()
    code, took = await service.terminate()
    assert code == 0 and took < 5 and time.monotonic() - started < 5


async def test_http_limits_answer_json_and_log_no_traceback(service: ServiceProcess) -> None:
    answer = await hostile.long_header(service.url)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400"
    assert orjson.loads(body)["error"]["code"] == "INVALID_PAYLOAD"

    answer, took = await hostile.slow_headers(service.url, wait=5)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"408" and took < 3
    assert orjson.loads(body)["error"]["code"] == "TIMEOUT"
    assert "Traceback" not in log_of(service)


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": 10**400},
        {"exp": float("inf")},
        {"exp": True},
        {"nbf": 10**400},
        {"iat": 10**400},
        {"exp": -1e308},
    ],
    ids=["huge-exp", "infinite-exp", "bool-exp", "huge-nbf", "huge-iat", "negative-exp"],
)
async def test_overflowing_time_claims_are_refused(server: RunningServer, claims: dict) -> None:
    payload = {"sub": "mallory", "exp": int(time.time()) + 60, **claims}
    forged = jwt.encode(payload, SECRET, algorithm="HS256")
    admin = server.token("ops", role=Role.ADMIN)
    rooms_before = (await server.http("GET", "/api/v1/status", admin))[1]["rooms"]

    with pytest.raises(ConnectRefused) as refused:
        await server.connect(auth={"token": forged})
    status, body = await server.http("GET", "/api/v1/tasks", forged)

    assert refused.value.code in ("AUTH_INVALID", "AUTH_EXPIRED")
    assert status == 401 and body["error"]["code"] in ("AUTH_INVALID", "AUTH_EXPIRED")
    assert (await server.http("GET", "/api/v1/status", admin))[1]["rooms"] == rooms_before


async def test_new_sessions_wait_while_the_event_loop_is_late(server: RunningServer) -> None:
    """Admission: while the loop runs late (a reconnect storm, a burst of work), new sessions
    get 503 UNAVAILABLE, which clients retry after their backoff; connections already there
    go on. Here the loop is really held up, by blocking it, as heavy work would."""
    from notifier.keys import METRICS

    bystander = await server.connect("bob")
    async with _loop_held_up(server):
        async with (
            aiohttp.ClientSession() as http,
            http.get(server.url + "/socket.io/?EIO=4&transport=polling") as response,
        ):
            assert response.status == 503
            assert (await response.json())["error"]["code"] == "UNAVAILABLE"
        assert (await bystander.call("ping", timeout=10))["ok"]
    await server.connect("carol")  # admitted again
    assert server.app[METRICS].exposition().count(b"notifier_handshakes_refused_busy_total 1.0") == 1


async def test_admission_can_be_turned_off(tmp_path: Path) -> None:
    """NOTIFIER_ADMISSION_MAX_LAG_MS=0: however late the loop, new sessions are admitted."""
    server, runner = await start_server(make_settings(tmp_path, admission_max_lag_ms=0))
    try:
        async with (
            _loop_held_up(server),
            aiohttp.ClientSession() as http,
            http.get(server.url + "/socket.io/?EIO=4&transport=polling") as response,
        ):
            assert response.status == 200
    finally:
        await stop_server(server, runner)


@contextlib.asynccontextmanager
async def _loop_held_up(server: RunningServer) -> AsyncIterator[None]:
    """The server's event loop blocked for 0.3 s at a time, until its lag shows it."""
    from notifier.keys import METRICS

    metrics = server.app[METRICS]
    blocking = True

    async def hold_the_loop_up() -> None:
        while blocking:
            time.sleep(0.3)  # noqa: ASYNC251 - the point: the loop is held up
            await asyncio.sleep(0.02)

    blocker = asyncio.ensure_future(hold_the_loop_up())
    try:
        await until(lambda: metrics.latest_lag > 0.2, timeout=5)
        yield
    finally:
        blocking = False
        await blocker
    await until(lambda: metrics.latest_lag < 0.05, timeout=5)
