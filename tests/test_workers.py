"""`notifier serve --workers N`: N real worker processes behind one port, under a supervisor
that hands each connection to its worker (long-polling requests by their sid)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.backends import postgres_database
from tests.cluster import RedisServer
from tests.conftest import ADMIN, SECRET, until
from tests.service_process import ServiceProcess, free_port, run_notifier
from tests.test_cluster import Recorder, publish_many, token


@contextlib.asynccontextmanager
async def workers(
    directory: Path, count: int = 2, broker: str = "redis", **env: str
) -> AsyncIterator[ServiceProcess]:
    """`serve --workers count` on PostgreSQL, the broker Redis or PostgreSQL."""
    redis = RedisServer(directory / "redis")
    await redis.start()
    try:
        async with postgres_database() as store_url:
            service = ServiceProcess(
                directory / "data",
                SECRET,
                log_path=directory / "notifier.log",
                serve_args=("--workers", str(count)),
                NOTIFIER_STORE_URL=store_url,
                NOTIFIER_BROKER_URL=redis.url if broker == "redis" else store_url,
                NOTIFIER_LOG_LEVEL="INFO",
                **env,
            )
            await service.start()
            try:
                yield service
            finally:
                await service.kill()
                with contextlib.suppress(Exception):
                    for pid in _worker_pids(directory):
                        os.kill(pid, signal.SIGKILL)
    finally:
        await redis.stop()


def _worker_pids(directory: Path) -> list[int]:
    """The pids the supervisor logged as started (to clean up after a failed test)."""
    log = (directory / "notifier.log").read_text()
    started = [line for line in log.splitlines() if "worker_started" in line]
    return [int(line.rsplit("pid=", 1)[1].split()[0]) for line in started]


async def status(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/api/v1/status", headers=ADMIN) as response:
        assert response.status == 200
        answer: dict[str, Any] = await response.json()
        return answer


@pytest.mark.parametrize("broker", ["redis", "postgresql"])
async def test_clients_of_both_transports_spread_over_the_workers_and_miss_nothing_when_one_is_killed(
    tmp_path: Path, broker: str
) -> None:
    async with workers(tmp_path, broker=broker) as service:
        recorders = [
            Recorder(service.url, f"user{n}", "project:p1", transports=transports)
            for n, transports in enumerate([["websocket"], ["polling"]] * 3)
        ]
        for recorder in recorders:
            await recorder.start()
        sids = [recorder.subscriber.sio.eio.sid for recorder in recorders]
        assert {sid[:3] for sid in sids} == {"w0.", "w1."}, sids  # both workers have clients
        before = {summary["index"]: summary["pid"] for summary in (await status(service.url))["workers"]}
        assert sorted(before) == [0, 1]
        publishing = asyncio.create_task(publish_many(service.url, 400))
        await until(lambda: all(len(r.ticks) >= 100 for r in recorders), timeout=20)
        os.kill(before[1], signal.SIGKILL)  # worker 1 and every client on it
        acked = await asyncio.wait_for(publishing, 60)
        assert len(acked) > 350, f"only {len(acked)} of 400 publishes acknowledged"
        await until(lambda: all(len(r.ticks) >= len(acked) for r in recorders), timeout=30)
        for recorder in recorders:
            ns = [tick["data"]["n"] for tick in recorder.ticks]
            assert ns == sorted(set(ns)), f"{recorder.name}: out of order or twice"
            assert set(acked) <= set(ns), f"{recorder.name}: lost {sorted(set(acked) - set(ns))[:5]}"
            assert not recorder.resets

        # The supervisor started worker 1 again, and it takes new clients.
        async def restarted() -> bool:
            now = {summary["index"]: summary["pid"] for summary in (await status(service.url))["workers"]}
            return sorted(now) == [0, 1] and now[1] != before[1]

        deadline = time.monotonic() + 20
        while not await restarted():
            assert time.monotonic() < deadline, "worker 1 was not started again"
            await asyncio.sleep(0.2)
        late = [Recorder(service.url, f"late{n}", "project:p1", transports=["polling"]) for n in range(4)]
        for recorder in late:
            await recorder.start()
        assert "w1." in {recorder.subscriber.sio.eio.sid[:3] for recorder in late}
        for recorder in [*recorders, *late]:
            await recorder.subscriber.close()


async def _handshake(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(f"{url}/socket.io/?EIO=4&transport=polling") as response:
        text = await response.text()
    return str(json.loads(text[1:])["sid"])


async def test_a_poll_on_a_connection_first_handed_to_another_worker_reaches_its_own(tmp_path: Path) -> None:
    """Browsers reuse one keep-alive connection for the polls of several tabs: the connection
    went to one worker, the session lives on another."""
    async with workers(tmp_path) as service:
        # One connection each (limit=1), kept alive between requests.
        first = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
        second = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
        try:
            here = await _handshake(first, service.url)
            there = await _handshake(second, service.url)
            while there[:3] == here[:3]:  # the next new connection goes to the other worker
                await second.close()
                second = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
                there = await _handshake(second, service.url)
            user = token("alice", ["p1"])
            query = f"{service.url}/socket.io/?EIO=4&transport=polling&sid={there}"
            async with first.post(query, data=f'40{{"token":"{user}"}}') as response:
                assert response.status == 200, await response.text()
                assert await response.text() == "ok"
            async with first.get(query) as response:
                assert response.status == 200
                body = await response.text()
            assert body.startswith("40{") and '"sid"' in body, body
            assert len(first.connector._conns) == 1  # type: ignore[union-attr]  # one connection throughout
        finally:
            await first.close()
            await second.close()


async def test_the_request_line_may_come_one_byte_at_a_time_and_a_silent_client_holds_nobody(
    tmp_path: Path,
) -> None:
    async with workers(tmp_path) as service:
        silent = [socket.create_connection(("127.0.0.1", service.port)) for _ in range(20)]
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        line_end = request.index(b"\r\n") + 2
        try:
            for cut in range(1, line_end + 1):
                reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
                writer.write(request[:cut])
                await writer.drain()
                await asyncio.sleep(0.01)  # the supervisor peeks at a part of the line first
                writer.write(request[cut:])
                answer = await asyncio.wait_for(reader.read(), 5)
                writer.close()
                assert answer.startswith(b"HTTP/1.1 200"), (cut, answer[:60])
            # And a byte at a time, the whole line.
            reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
            for byte in request[:line_end]:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.005)
            writer.write(request[line_end:])
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 200"), answer[:60]
        finally:
            for connection in silent:
                connection.close()


async def test_sigterm_drains_every_worker_and_exits(tmp_path: Path) -> None:
    async with workers(tmp_path, NOTIFIER_DRAIN_SECONDS="0") as service:
        recorder = Recorder(service.url, "alice", "project:p1", transports=["websocket"])
        await recorder.start()
        pids = [summary["pid"] for summary in (await status(service.url))["workers"]]
        code, took = await service.terminate(timeout=20)
        assert code == 0
        assert took < 10, f"took {took:.1f} s"
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        await recorder.subscriber.close()


async def test_metrics_and_status_report_every_worker(tmp_path: Path) -> None:
    internal = free_port()
    async with workers(tmp_path, NOTIFIER_INTERNAL_PORT=str(internal)) as service:
        recorders = [Recorder(service.url, f"u{n}", "project:p1", transports=["websocket"]) for n in range(4)]
        for recorder in recorders:
            await recorder.start()
        async with aiohttp.ClientSession() as http:
            # On the clients' port for admins, and on the internal port (each worker binds it,
            # whichever answers gathers them all), several times.
            scrapes = [(f"{service.url}/metrics", ADMIN)] + [(f"http://127.0.0.1:{internal}/metrics", {})] * 4
            for url, headers in scrapes:
                async with http.get(url, headers=headers) as response:
                    assert response.status == 200
                    text = await response.text()
                sessions = {
                    line.split('"')[1]: float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith("notifier_sessions{")
                }
                assert sessions == {"0": 2.0, "1": 2.0}, (url, sessions)
                assert text.count("# TYPE notifier_sessions gauge") == 1
        summaries = (await status(service.url))["workers"]
        assert [s["sessions"]["websocket"] for s in summaries] == [2, 2]
        for recorder in recorders:
            await recorder.subscriber.close()


def test_workers_without_a_shared_broker_stop_at_start_with_one_line(tmp_path: Path) -> None:
    result = run_notifier("serve", "--workers", "2", env={"NOTIFIER_DATA_DIR": str(tmp_path)}, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "NOTIFIER_BROKER_URL" in lines[0], result.stderr


def test_a_worker_that_cannot_start_stops_the_supervisor(tmp_path: Path) -> None:
    result = run_notifier(
        "serve",
        "--workers",
        "2",
        env={
            "NOTIFIER_DATA_DIR": str(tmp_path),
            "NOTIFIER_JWT_SECRET": SECRET,
            # A Redis broker on the embedded store: each worker refuses it at start.
            "NOTIFIER_BROKER_URL": "redis://127.0.0.1:6379/15",
            "NOTIFIER_PORT": "0",
        },
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "cannot start: NOTIFIER_BROKER_URL: a Redis broker needs a shared store" in result.stderr
