"""Operating the service: Prometheus metrics, readiness while draining, structured logs."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from notifier.auth import Role

from .conftest import (
    SECRET,
    ConnectRefused,
    RunningServer,
    eventually,
    make_settings,
    start_server,
    stop_server,
    until,
)
from .service_process import ServiceProcess, free_port

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics", headers=headers) as response:
        return response.status, await response.text()


async def test_metrics_on_the_public_port_need_an_admin_token(server: RunningServer) -> None:
    status, body = await scrape(server.url)
    assert status == 401 and orjson.loads(body)["error"]["code"] == "AUTH_REQUIRED"
    status, body = await scrape(server.url, server.token("alice"))
    assert status == 403 and orjson.loads(body)["error"]["code"] == "FORBIDDEN"
    status, body = await scrape(server.url, server.token("ops", role=Role.ADMIN))
    assert status == 200 and "process_resident_memory_bytes" in body


async def test_metrics_move_with_what_the_service_does(server: RunningServer) -> None:
    admin = server.token("ops", role=Role.ADMIN)
    before = parse((await scrape(server.url, admin))[1])

    user = await server.connect("alice", projects=["p1"])
    joined = await user.call("subscribe", {"rooms": ["project:p1"]})
    worker = await server.worker()
    for n in range(3):
        reply = await worker.call("publish", {"room": "project:p1", "type": "build.done", "data": {"n": n}})
        assert reply["ok"], reply
    await user.next_event("build.done", 3)
    assert (await user.call("no.such.event"))["error"]["code"] == "UNKNOWN_EVENT"
    # A second device recovers the room from the first one's position.
    position = joined["rooms"]["project:p1"]
    other = await server.connect("alice", projects=["p1"])
    recovered = await other.call(
        "subscribe",
        {
            "rooms": ["project:p1"],
            "since": {"project:p1": {"epoch": position["epoch"], "offset": position["offset"]}},
        },
    )
    assert recovered["rooms"]["project:p1"]["recovered"] is True
    await asyncio.sleep(0.25)  # the event-loop lag probe ticks every 100 ms

    after = parse((await scrape(server.url, admin))[1])

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert value(after, "notifier_connections", namespace="/", transport="websocket") == 2
    assert value(after, "notifier_connections", namespace="/workers", transport="websocket") == 1
    assert value(after, "notifier_rooms") >= 3  # *, user:alice, project:p1
    assert moved("notifier_events_published_total", type="build.done") == 3
    assert moved("notifier_events_delivered_total", type="build.done") == 3
    assert moved("notifier_acks_total", namespace="/workers", code="ok") == 3
    assert moved("notifier_acks_total", namespace="/", code="UNKNOWN_EVENT") == 1
    assert moved("notifier_replays_total", outcome="recovered", reason="") == 1
    assert moved("notifier_store_seconds_count", operation="commit") >= 1
    assert moved("notifier_event_loop_lag_seconds_count") >= 1
    assert value(after, "process_resident_memory_bytes") > 0


@pytest.fixture
async def strict_server(tmp_path: Path) -> Any:
    settings = make_settings(
        tmp_path,
        user_rate_per_second=1,
        user_rate_burst=3,
        flood_disconnect_seconds=60,
        max_backlog_events=50,
    )
    running, runner = await start_server(settings)
    yield running
    await stop_server(running, runner)


async def test_rate_limit_refusals_are_counted(strict_server: RunningServer) -> None:
    server = strict_server
    admin = server.token("ops", role=Role.ADMIN)
    client = await server.connect("alice")
    replies = await asyncio.gather(*(client.call("ping") for _ in range(10)))
    refused = [r for r in replies if not r["ok"]]
    assert refused and {r["error"]["code"] for r in refused} == {"RATE_LIMITED"}
    samples = parse((await scrape(server.url, admin))[1])
    assert value(samples, "notifier_rate_limited_total") >= len(refused)
    assert value(samples, "notifier_acks_total", namespace="/", code="RATE_LIMITED") == len(refused)


async def test_internal_port_serves_metrics_and_readiness_drains_on_sigterm(
    tmp_path: Path,
) -> None:
    internal_port = free_port()
    process = ServiceProcess(
        tmp_path / "data", SECRET, NOTIFIER_INTERNAL_PORT=str(internal_port), NOTIFIER_DRAIN_SECONDS="3"
    )
    internal = f"http://127.0.0.1:{internal_port}"
    await process.start()
    try:
        status, body = await scrape(internal)
        assert status == 200 and "notifier_connections" in body
        assert (await scrape(process.url))[0] == 401  # the public port still wants a token
        async with aiohttp.ClientSession() as session:
            for base in (process.url, internal):
                async with session.get(base + "/readyz") as response:
                    assert response.status == 200
            assert process.process is not None
            process.process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            statuses: dict[str, int] = {}

            async def readiness() -> bool:
                for base in (process.url, internal):
                    async with session.get(base + "/readyz") as response:
                        statuses[base] = response.status
                return set(statuses.values()) == {503}

            await eventually(readiness, timeout=2.5)
            async with session.get(process.url + "/healthz") as response:
                assert response.status == 200  # alive, only not ready
            assert time.monotonic() - started < 3  # while the drain period still runs
        code = await asyncio.wait_for(process.process.wait(), 15)
        assert code == 0
    finally:
        await process.kill()


async def test_json_logs_carry_fields_and_refusals_name_peer_namespace_and_code(
    tmp_path: Path,
) -> None:
    log_path = tmp_path / "service.log"
    process = ServiceProcess(
        tmp_path / "data",
        SECRET,
        log_path=log_path,
        NOTIFIER_LOG_FORMAT="json",
        NOTIFIER_LOG_LEVEL="INFO",
        NOTIFIER_ACCESS_LOG="true",
    )
    await process.start()
    running = RunningServer(app=None, url=process.url, settings=None)  # type: ignore[arg-type]
    try:
        client = await running.connect("alice")
        await client.disconnect()
        with pytest.raises(ConnectRefused) as refused:
            await running.connect("alice", namespace="/workers")  # a user token on /workers
        assert refused.value.code == "FORBIDDEN"
        with pytest.raises(ConnectRefused) as refused:
            await running.connect(auth={"token": "not-a-jwt"})
        assert refused.value.code == "AUTH_INVALID"

        def entries() -> list[dict[str, Any]]:
            return [orjson.loads(line) for line in log_path.read_text().splitlines() if line]

        await until(lambda: sum(e.get("event") == "client_error" for e in entries()) >= 2)
    finally:
        await process.terminate()
    logged = entries()  # every line is JSON
    connected = next(e for e in logged if e.get("event") == "connected")
    assert connected["user"] == "alice" and connected["namespace"] == "/" and connected["sid"]
    assert connected["peer"] == "127.0.0.1" and connected["level"] == "info"
    refusals = [
        e for e in logged if e.get("event") == "client_error" and e.get("reason") == "connect_refused"
    ]
    assert {(e["namespace"], e["code"]) for e in refusals} == {
        ("/workers", "FORBIDDEN"),
        ("/", "AUTH_INVALID"),
    }
    assert all(e["peer"] == "127.0.0.1" for e in refusals)
    access = [e for e in logged if e.get("event") == "http_request"]
    assert any(e["path"] == "/healthz" and e["status"] == 200 and e["method"] == "GET" for e in access)
    assert not any("token=" in str(e.get("path")) for e in access)
