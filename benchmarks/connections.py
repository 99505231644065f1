"""Connection benchmarks: set-up rate, many connections held, and a reconnect storm.

The clients are benchmarks/wsclients.mjs: bare websockets speaking Engine.IO/Socket.IO, in
several Node processes, each client with a token of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import socketio
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.node_process import LOAD_GENERATOR_LIMITS, NodeGenerator
from notifier.auth import Role, issue_token

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


class Clients(NodeGenerator):
    """A wsclients.mjs generator: its processes and its JSON lines."""

    def __init__(self, process: asyncio.subprocess.Process, started: dict[str, Any]) -> None:
        super().__init__(process)
        self.started = started

    @classmethod
    async def start(cls, config: dict[str, Any], timeout: float, cpus: set[int] | None = None) -> Clients:
        clients = cls(await cls.spawn("wsclients.mjs", config, cpus=cpus), {})
        clients.started = await clients.read("connected", timeout)
        return clients

    async def report(self, heads: dict[str, int] | None = None) -> dict[str, Any]:
        return await self.command(f"report {json.dumps(heads or {})}", "report")


async def scrape(url: str, token: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(url + "/metrics", headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# Connection set-up rate


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def split_cores(pid: int) -> set[int] | None:
    """Give the server process core 0 and return the others, for the load generator: each
    side then measures without the other taking its CPU (None on a single core)."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    os.sched_setaffinity(pid, {cores[0]})
    return set(cores[1:])


async def measure_connect_rate(
    server: Any,
    secret: str,
    count: int,
    window: int,
    shards: int,
    *,
    pin: bool = True,
    cpu: Callable[[int], float] | None = None,
) -> dict[str, Any]:
    """Connections set up per second (`pin`: the server on one core, the generator on the
    others; else both anywhere), and the server's CPU time per connection (`cpu`: how it is
    read from the server's pid; its process alone by default)."""
    cpu = cpu or cpu_seconds
    config = {
        "mode": "connect",
        "url": server.url,
        "count": count,
        "window": window,
        "shards": shards,
        "rooms": 50,
        "secret": secret,
    }
    cpus = split_cores(server.process.pid) if pin else None
    cpu_before = cpu(server.process.pid)
    clients = await Clients.start(config, timeout=120, cpus=cpus)
    cpu_used = cpu(server.process.pid) - cpu_before
    await clients.stop()
    figures = clients.started
    per_connection = cpu_used / max(figures["connected"], 1)
    return {
        "server": server.name,
        "connections": figures["connected"],
        "refused": figures["refused"],
        "seconds": figures["seconds"],
        "per_second": figures["connected"] / max(figures["seconds"], 1e-9),
        "server_cpu_us_per_connection": per_connection * 1e6,
        "per_server_core_second": 1 / per_connection if per_connection else float("inf"),
    }


# Many connections held


async def measure_hold(
    server: Any, secret: str, count: int, seconds: float, rate: float, shards: int
) -> dict[str, Any]:
    admin = issue_token(secret, "HS256", "ops", role=Role.ADMIN)
    before = server.rss_kb()
    config = {
        "mode": "hold",
        "url": server.url,
        "count": count,
        "rate": rate,
        "shards": shards,
        "rooms": 50,
        "secret": secret,
    }
    clients = await Clients.start(config, timeout=count / rate * 3 + 60)
    try:
        connected_rss = server.rss_kb()
        held_from = time.monotonic()
        await asyncio.sleep(seconds)
        report = await clients.report()
        metrics = await scrape(server.url, admin) if server.name.startswith("notifier") else {}
        held_rss = server.rss_kb()
    finally:
        await clients.stop()
    closes = {
        dict(labels).get("reason"): value
        for (name, labels), value in metrics.items()
        if name == "notifier_sessions_closed_total"
    }
    return {
        "server": server.name,
        "connections": clients.started["connected"],
        "refused": clients.started["refused"],
        "held_seconds": time.monotonic() - held_from,
        "still_open": report["open"],
        "dropped": report["dropped"],
        "ping_timeouts": closes.get("ping timeout", 0.0),
        "rss_before_kb": before,
        "rss_connected_kb": connected_rss,
        "rss_held_kb": held_rss,
        "kb_per_connection": (held_rss - before) / max(count, 1),
    }


# A reconnect storm


class Publisher:
    """Publishes to the storm's rooms through /workers with retries (the Worker client) and
    keeps the highest acknowledged offset of each room."""

    def __init__(self, url: str, token: str, rooms: int) -> None:
        from notifier.client import Worker

        self.worker = Worker(
            url, token, reconnection_delay=0.2, reconnection_delay_max=1.0, transports=["websocket"]
        )
        self.rooms = rooms
        self.heads: dict[str, int] = {}
        self.published = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self, per_second: float) -> None:
        await self.worker.connect()
        self._task = asyncio.ensure_future(self._run(per_second))

    async def _run(self, per_second: float) -> None:
        n = 0
        started = time.monotonic()
        pending: set[asyncio.Task[None]] = set()
        while True:
            room = f"project:p{n % self.rooms}"
            task = asyncio.ensure_future(self._publish(room, n))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
            await asyncio.sleep(max(0.0, started + n / per_second - time.monotonic()))

    async def _publish(self, room: str, n: int) -> None:
        reply = await self.worker.publish(room, "tick", {"n": n})
        self.heads[room] = max(self.heads.get(room, 0), reply["offset"])
        self.published += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.worker.close(drain_timeout=30)


class Bystander:
    """A connection that stays up through the storm and measures its ping round trips."""

    def __init__(self, url: str, token: str) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.url, self.token = url, token
        self.round_trips: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.client.connect(self.url, auth={"token": self.token}, transports=["websocket"])
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            sent = time.perf_counter()
            await self.client.call("ping", {}, timeout=30)
            self.round_trips.append((time.perf_counter() - sent) * 1000)
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.client.disconnect()


class LagWatch:
    """The largest event-loop lag a process reports (its /metrics), sampled twice a second."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                metrics = await scrape(self.url, self.token)
                self.worst = max(self.worst, metrics.get(("notifier_event_loop_lag_max_seconds", ()), 0.0))
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@contextlib.asynccontextmanager
async def notifier_process(
    port: int, data_dir: str, secret: str, **env: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    environment.update(
        NOTIFIER_PORT=str(port),
        NOTIFIER_JWT_SECRET=secret,
        NOTIFIER_DATA_DIR=data_dir,
        NOTIFIER_LOG_LEVEL="WARNING",
        NOTIFIER_REFRESH_INTERVAL_SECONDS="0",
        NOTIFIER_WORKER_RATE_PER_SECOND="1000000",
        NOTIFIER_WORKER_RATE_BURST="100000",
        **LOAD_GENERATOR_LIMITS,
        **env,
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "notifier", "serve", env=environment, cwd=ROOT, stdout=subprocess.DEVNULL
    )
    try:
        for _ in range(400):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                if process.returncode is not None:
                    raise RuntimeError("notifier exited at start") from None
                await asyncio.sleep(0.05)
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def measure_storm(
    secret: str,
    clients: int,
    rooms: int,
    shards: int,
    rate: float,
    kill: bool,
    backends: dict[str, str] | None,
) -> dict[str, Any]:
    """`clients` in `rooms` rooms with history; the server restarted (embedded), or with
    `backends` (Redis and PostgreSQL) the node holding the clients killed with -9, the
    clients reconnecting to a second node where a bystander never dropped."""
    admin = issue_token(secret, "HS256", "ops", role=Role.ADMIN)
    publisher_token = issue_token(secret, "HS256", "storm-publisher", role=Role.PUBLISHER)
    env = dict(backends or {})
    with tempfile.TemporaryDirectory() as data_a, tempfile.TemporaryDirectory() as data_b:
        port_a = _free_port()
        url_a = f"http://127.0.0.1:{port_a}"
        stack = contextlib.AsyncExitStack()
        async with stack:
            node_a = await stack.enter_async_context(notifier_process(port_a, data_a, secret, **env))
            if backends:
                port_b = _free_port()
                await stack.enter_async_context(notifier_process(port_b, data_b, secret, **env))
                survivor = f"http://127.0.0.1:{port_b}"
            else:
                port_b, survivor = port_a, url_a
            config = {
                "mode": "storm",
                "url": url_a,
                "count": clients,
                "rooms": rooms,
                "shards": shards,
                "rate": 2000,
                "secret": secret,
                "delay": 500,
                "delayMax": 5000,
                "reconnectUrls": [survivor],
            }
            load = await Clients.start(config, timeout=clients / 2000 * 3 + 60)
            publisher = Publisher(survivor if backends else url_a, publisher_token, rooms)
            await publisher.start(rate)
            await asyncio.sleep(3)  # history in every room
            bystander = None
            if backends:
                bystander = Bystander(survivor, issue_token(secret, "HS256", "bystander"))
                await bystander.start()
            lag = LagWatch(survivor, admin)
            lag.start()
            before_drop = await load.report()
            dropped_at = time.time()
            if backends:
                node_a.send_signal(signal.SIGKILL)
                await node_a.wait()
            else:
                node_a.send_signal(signal.SIGTERM)
                await node_a.wait()
                await stack.enter_async_context(notifier_process(port_a, data_a, secret, **env))
            restarted = time.time()
            # Everyone back: every client reconnected and recovered, and caught up with what
            # was acknowledged by then.
            deadline = time.monotonic() + 60
            report = await load.report()
            while time.monotonic() < deadline:
                report = await load.report()
                if report["notReconnected"] == 0 and report["open"] >= clients:
                    break
                await asyncio.sleep(0.25)
            # None unless every client is back: the slowest one is the figure.
            everyone = report["recoveredAt"] and report["notReconnected"] == 0
            recovered_seconds = (report["recoveredAt"] / 1000 - dropped_at) if everyone else None
            await asyncio.sleep(2)
            await publisher.stop()
            round_trips = sorted(bystander.round_trips) if bystander else []
            if bystander is not None:
                await bystander.stop()
            await lag.stop()
            await asyncio.sleep(1.5)  # the last events reach everyone
            final = await load.report(publisher.heads)
            await load.stop()
    p99 = round_trips[int(len(round_trips) * 0.99) - 1] if round_trips else None
    return {
        "variant": "node killed (Redis broker)" if backends else "server restarted (embedded)",
        "clients": clients,
        "rooms": rooms,
        "published": publisher.published,
        "restart_seconds": restarted - dropped_at,
        "all_recovered_within_s": recovered_seconds,
        "not_reconnected": final["notReconnected"],
        "not_reconnected_states": final["stuck"],
        "unrecovered": final["unrecovered"],
        "lost": final["lost"],
        "duplicates": final["duplicates"],
        "behind_at_end": final["behind"],
        "refused_handshakes": final["refused"],
        "failed_joins": final["failed"],
        "max_loop_lag_ms": lag.worst * 1000,
        "bystander_p99_ms": p99,
        "bystander_pings": len(round_trips),
        "open_before": before_drop["open"],
    }
