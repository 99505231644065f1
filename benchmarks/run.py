"""notifier's benchmarks, with references measured in the same run.

    .venv/bin/python -m benchmarks.run all                 # everything (about 25 minutes)
    .venv/bin/python -m benchmarks.run fanout --clients 1000
    .venv/bin/python -m benchmarks.run latency --clients 1000 --rate 20 --seconds 10
    .venv/bin/python -m benchmarks.run memory --clients 1000 --clients 10000
    .venv/bin/python -m benchmarks.run progress
    .venv/bin/python -m benchmarks.run connect --clients 10000      # set-up rate, JWT checked
    .venv/bin/python -m benchmarks.run hold --clients 19000 --seconds 120
    .venv/bin/python -m benchmarks.run storm --clients 10000        # restart, and a killed node
    .venv/bin/python -m benchmarks.run runner     # GuardedRunner against aiohttp's own AppRunner
    .venv/bin/python -m benchmarks.run escalation --users 10000   # Web Push for offline users
    .venv/bin/python -m benchmarks.run inbox --notifications 100000   # listing a large inbox
    .venv/bin/python -m benchmarks.run workers --clients 2000  # --workers 2 against one process
    .venv/bin/python -m benchmarks.run pgbroker --clients 2000  # PostgreSQL broker against Redis
    .venv/bin/python -m benchmarks.run outbox --messages 200    # commit to delivery (outbox)

Servers under test, each in its own process on 127.0.0.1: notifier (`python -m notifier serve`,
SQLite store, publishing through `/workers` `publish`), notifier-inprocess (fan-out only: the
same app publishing from its own handler, benchmarks/inprocess_server.py), plain
python-socketio on aiohttp with its defaults, and Node socket.io 4.8 (pinned in
benchmarks/package.json). Clients: the Node load generator (benchmarks/loadgen.mjs, several
processes). Everything is bounded in count and time and stays on loopback. The Node packages
are installed from benchmarks/package-lock.json on first use. Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import socketio
import uvloop

from benchmarks.http_runner import runner_command
from benchmarks.node_process import LOAD_GENERATOR_LIMITS, NodeGenerator
from notifier.auth import Role, issue_token

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SECRET = "benchmark-secret-" + "b" * 40
PAD = "x" * 110  # makes a delivered message about 200 bytes of JSON


@dataclass
class Server:
    name: str
    url: str
    process: asyncio.subprocess.Process
    publish_namespace: str
    publisher_token: str | None

    def rss_kb(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])

    def publish_payload(self, data: dict[str, Any]) -> dict[str, Any]:
        if self.name.startswith("notifier"):
            return {"room": "*", "type": "tick", "data": data}
        return {"type": "tick", "data": data}


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def run_server(name: str, **extra_env: str) -> AsyncIterator[Server]:
    """A server process; `notifier-redis` is notifier with the Redis broker and PostgreSQL
    store given in `extra_env` (see `shared_backends`)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    with tempfile.TemporaryDirectory() as data_dir:
        if name in ("notifier", "notifier-inprocess", "notifier-redis", "notifier-workers"):
            command = [sys.executable, "-m", "notifier", "serve"]
            if name == "notifier-inprocess":
                command = [sys.executable, str(BENCH / "inprocess_server.py")]
            if name == "notifier-workers":
                command += ["--workers", "2"]
            env.update(
                NOTIFIER_PORT=str(port),
                NOTIFIER_JWT_SECRET=SECRET,
                NOTIFIER_DATA_DIR=data_dir,
                NOTIFIER_LOG_LEVEL="WARNING",
                NOTIFIER_REFRESH_INTERVAL_SECONDS="0",
                NOTIFIER_WORKER_RATE_PER_SECOND="1000000",
                NOTIFIER_WORKER_RATE_BURST="100000",
                **LOAD_GENERATOR_LIMITS,
                **extra_env,
            )
            namespace = "/workers"
            token = issue_token(SECRET, "HS256", "bench", role=Role.PUBLISHER)
        elif name == "python-socketio":
            command = [sys.executable, str(BENCH / "ref_python_socketio.py")]
            env["PORT"] = str(port)
            namespace, token = "/", None
        else:
            script = "ref_node_cluster.mjs" if name == "node-cluster" else "ref_node_server.mjs"
            command = ["node", str(BENCH / script)]
            env["PORT"] = str(port)
            env["WORKERS"] = "2"
            env["JWT_SECRET"] = SECRET  # tokens checked as notifier checks them
            namespace, token = "/", issue_token(SECRET, "HS256", "bench", role=Role.PUBLISHER)
        process = await asyncio.create_subprocess_exec(
            *command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        server = Server(name, f"http://127.0.0.1:{port}", process, namespace, token)
        try:
            await _wait_listening(port)
            yield server
        finally:
            process.terminate()
            await process.wait()


@contextlib.asynccontextmanager
async def shared_backends() -> AsyncIterator[dict[str, str]]:
    """A Redis of the benchmark's own and a fresh PostgreSQL database: the environment of
    `notifier-redis` servers (the machine's PostgreSQL; scripts/services.sh starts it)."""
    from tests.backends import postgres_database
    from tests.cluster import RedisServer

    with tempfile.TemporaryDirectory() as directory:
        redis = RedisServer(Path(directory) / "redis")
        await redis.start()
        try:
            async with postgres_database() as store_url:
                yield {"NOTIFIER_BROKER_URL": redis.url, "NOTIFIER_STORE_URL": store_url}
        finally:
            await redis.stop()


async def _wait_listening(port: int) -> None:
    for _ in range(300):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


class LoadGenerator(NodeGenerator):
    """loadgen.mjs: socket.io-client connections in several processes."""

    @classmethod
    async def start(cls, server: Server, clients: int, shards: int) -> LoadGenerator:
        token = issue_token(SECRET, "HS256", "viewer")  # python-socketio's reference ignores it
        config = {"url": server.url, "count": clients, "token": token, "shards": shards}
        generator = cls(await cls.spawn("loadgen.mjs", config, limit=2**28))
        try:
            await generator.read("connected", timeout=max(60, clients / 100))
        except BaseException:  # not all connected: its processes must not outlive the run
            await generator.stop(grace=2)
            raise
        return generator


@contextlib.asynccontextmanager
async def publisher(server: Server) -> AsyncIterator[socketio.AsyncClient]:
    client = socketio.AsyncClient(reconnection=False)
    auth = {"token": server.publisher_token} if server.publisher_token else None
    await client.connect(
        server.url, auth=auth, namespaces=[server.publish_namespace], transports=["websocket"]
    )
    try:
        yield client
    finally:
        await client.disconnect()


async def publish(client: socketio.AsyncClient, server: Server, seq: int) -> None:
    data = {"sent": time.time() * 1000, "seq": seq, "pad": PAD}
    reply = await client.call(
        "publish", server.publish_payload(data), namespace=server.publish_namespace, timeout=30
    )
    if not reply or not reply.get("ok"):
        raise RuntimeError(f"publish refused: {reply}")


async def wait_for_deliveries(load: LoadGenerator, expected: int, stall: float = 5.0) -> dict:
    """Poll until every delivery arrived, or nothing new arrived for `stall` seconds."""
    delivered, last_change, latencies = -1, time.monotonic(), []
    report: dict[str, Any] = {}
    while True:
        report = await load.command("report", "report")
        latencies.extend(report["latencies"])
        if report["delivered"] != delivered:
            delivered, last_change = report["delivered"], time.monotonic()
        if delivered >= expected or time.monotonic() - last_change > stall:
            report["latencies"] = latencies
            return report
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def burst_publisher(server: Server, window: int = 8) -> AsyncIterator[Any]:
    """Yields `burst(messages)`: that many broadcasts, at most `window` awaiting their ack."""
    if server.name == "notifier-inprocess":
        async with aiohttp.ClientSession() as http:

            async def burst_in_process(messages: int) -> None:
                body = {"count": messages, "window": window, "pad": PAD}
                async with http.post(f"{server.url}/bench/publish", json=body) as response:
                    response.raise_for_status()

            yield burst_in_process
        return
    async with publisher(server) as client:
        slots = asyncio.Semaphore(window)

        async def one(seq: int) -> None:
            async with slots:
                await publish(client, server, seq)

        async def burst(messages: int) -> None:
            await asyncio.gather(*(one(n) for n in range(messages)))

        yield burst


async def measure_fanout(
    name: str, clients: int, messages: int, shards: int, **extra_env: str
) -> dict[str, Any]:
    async with run_server(name, **extra_env) as server:
        return await fanout_between(server, server, name, clients, messages, shards)


async def fanout_between(
    publish_to: Server, clients_on: Server, name: str, clients: int, messages: int, shards: int
) -> dict[str, Any]:
    """Broadcasts published through `publish_to`, delivered to clients of `clients_on`."""
    load = await LoadGenerator.start(clients_on, clients, shards)
    try:
        async with burst_publisher(publish_to) as burst:
            await burst(1)  # warm-up
            await asyncio.sleep(0.5)
            await load.command("reset", "reset")
            started_ms = time.time() * 1000
            await burst(messages)
            report = await wait_for_deliveries(load, clients * messages)
    finally:
        await load.stop()
    seconds = max(report["last"] - started_ms, 1) / 1000
    return {
        "server": name,
        "clients": clients,
        "messages": messages,
        "delivered": report["delivered"],
        "expected": clients * messages,
        "deliveries_per_s": report["delivered"] / seconds,
        "loadgen_cpu_share": max(report["cpuMs"]) / 1000 / seconds,
        "loadgen_cores": sum(report["cpuMs"]) / 1000 / seconds,
    }


async def measure_latency(
    name: str, clients: int, rate: float, seconds: float, shards: int
) -> dict[str, Any]:
    async with run_server(name) as server:
        return await latency_between(server, server, name, clients, rate, seconds, shards)


async def latency_between(
    publish_to: Server, clients_on: Server, name: str, clients: int, rate: float, seconds: float, shards: int
) -> dict[str, Any]:
    load = await LoadGenerator.start(clients_on, clients, shards)
    try:
        async with publisher(publish_to) as client:
            await publish(client, publish_to, -1)
            await asyncio.sleep(0.5)
            await load.command("reset", "reset")
            count = int(rate * seconds)
            started = time.monotonic()
            calls = []
            for n in range(count):
                await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
                calls.append(asyncio.ensure_future(publish(client, publish_to, n)))
            await asyncio.gather(*calls)
            report = await wait_for_deliveries(load, clients * count)
    finally:
        await load.stop()
    latencies = sorted(report["latencies"])
    return {
        "server": name,
        "clients": clients,
        "rate": rate,
        "seconds": seconds,
        "delivered": report["delivered"],
        "expected": clients * count,
        "p50_ms": _percentile(latencies, 50),
        "p99_ms": _percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else float("nan"),
        "loadgen_cores": sum(report["cpuMs"]) / 1000 / seconds,
    }


async def acknowledged_rate(server: Server, event: str, count: int, window: int) -> dict[str, Any]:
    """Operations acknowledged per second through `/workers` (benchmarks/publisher.mjs)."""
    config = {
        "url": server.url,
        "token": server.publisher_token,
        "event": event,
        "count": count,
        "window": window,
    }
    process = await asyncio.create_subprocess_exec(
        "node",
        str(BENCH / "publisher.mjs"),
        json.dumps(config),
        cwd=BENCH,
        stdout=subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), 300)
    return json.loads(stdout.decode().strip().splitlines()[-1])


async def measure_memory(name: str, clients: int, shards: int) -> dict[str, Any]:
    async with run_server(name) as server:
        await asyncio.sleep(0.5)
        before = server.rss_kb()
        load = await LoadGenerator.start(server, clients, shards)
        try:
            await asyncio.sleep(2.0)
            after = server.rss_kb()
        finally:
            await load.stop()
    return {
        "server": name,
        "clients": clients,
        "rss_before_kb": before,
        "rss_after_kb": after,
        "kb_per_connection": (after - before) / clients,
    }


def _percentile(values: list[float], percent: float) -> float:
    if not values:
        return float("nan")
    index = min(len(values) - 1, max(0, round(percent / 100 * len(values)) - 1))
    return values[index]


SERVERS = ("notifier", "python-socketio", "node")
# Fan-out also measures notifier publishing through its in-process API (an app's own handler).
FANOUT_SERVERS = ("notifier", "notifier-inprocess", "python-socketio", "node")


def _ratio_table(rows: list[dict[str, Any]], key: str, higher_is_better: bool) -> None:
    """Each figure, and for each reference the ratio of every notifier figure to it."""
    ours = [row for row in rows if row["server"].startswith("notifier")]
    better = "higher is better" if higher_is_better else "lower is better"
    for row in rows:
        notes = (
            []
            if row in ours
            else [f"{mine['server']} = {mine[key] / row[key]:.2f}x" if row[key] else "n/a" for mine in ours]
        )
        note = f"  ({', '.join(notes)}; {better})" if notes else ""
        print(f"  {row['server']:<18} {key} = {row[key]:>12,.1f}{note}")


async def fanout_command(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name in args.servers or FANOUT_SERVERS:
        row = await measure_fanout(name, args.clients[0], args.messages, args.shards)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"fan-out deliveries/s, {args.clients[0]} clients in one room:")
    _ratio_table(rows, "deliveries_per_s", True)
    # The generator shares the machine with the server: past half of its cores, or with one of
    # its processes saturated, the figure may be the generator's limit, not the server's.
    cores = os.cpu_count() or 1
    for row in rows:
        if row["loadgen_cpu_share"] > 0.9 or row["loadgen_cores"] > cores / 2:
            print(
                f"  note: against {row['server']} the load generator used "
                f"{row['loadgen_cores']:.1f} of {cores} cores (busiest process "
                f"{row['loadgen_cpu_share']:.0%}): that figure may be the generator's limit"
            )
    return rows


async def latency_command(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name in args.servers or SERVERS:
        row = await measure_latency(name, args.clients[0], args.rate, args.seconds, args.shards)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"latency at {args.clients[0]} clients x {args.rate:g} broadcasts/s:")
    for key in ("p50_ms", "p99_ms", "max_ms"):
        _ratio_table(rows, key, False)
    return rows


async def memory_command(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for clients in args.clients:
        group = []
        for name in args.servers or SERVERS:
            row = await measure_memory(name, clients, max(args.shards, clients // 2500))
            group.append(row)
            print(json.dumps(row), flush=True)
        print(f"RSS per idle websocket connection at {clients} connections (KB):")
        _ratio_table(group, "kb_per_connection", False)
        rows += group
    return rows


async def hostile_command(args: argparse.Namespace) -> list[dict[str, Any]]:
    """What hostile and broken clients cost a real service process (benchmarks/hostile.py)."""
    from benchmarks.hostile import measure
    from tests.service_process import ServiceProcess

    with tempfile.TemporaryDirectory() as directory:
        log_path = Path(directory) / "service.log"
        service = ServiceProcess(
            Path(directory) / "data", SECRET, log_path=log_path, NOTIFIER_LOG_LEVEL="INFO"
        )
        await service.start()
        try:
            admin = issue_token(SECRET, "HS256", "ops", role=Role.ADMIN)
            figures = await measure(service, issue_token(SECRET, "HS256", "bystander"), admin)
        finally:
            await service.kill()
    print(json.dumps(figures), flush=True)
    print("hostile and broken clients against one notifier process:")
    for name, value in figures.items():
        print(f"  {name:<52} {value:>12,.3f}")
    return [figures]


async def scale_command(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The Redis broker and PostgreSQL store: against the embedded default, and two nodes."""
    clients, messages, shards = args.clients[0], args.messages, args.shards
    embedded = await measure_fanout("notifier", clients, messages, shards)
    async with shared_backends() as env:
        redis = await measure_fanout("notifier-redis", clients, messages, shards, **env)
    print(json.dumps(embedded), json.dumps(redis), flush=True)
    print(
        f"fan-out, {clients} clients on one node: embedded {embedded['deliveries_per_s']:,.0f}/s, "
        f"Redis broker {redis['deliveries_per_s']:,.0f}/s = "
        f"{redis['deliveries_per_s'] / embedded['deliveries_per_s']:.2f}x (target >= 0.7x)"
    )

    async with shared_backends() as env, run_server("notifier-redis", **env) as server:
        published = await acknowledged_rate(server, "publish", 80_000, 2048)
        notified = await acknowledged_rate(server, "notify", 20_000, 512)
    print(json.dumps(published), json.dumps(notified), flush=True)
    print(
        f"room publishes acknowledged through /workers (Redis): {published['per_second']:,.0f}/s "
        f"(target >= 20,000)"
    )
    print(
        f"notifications stored in PostgreSQL (notify through /workers): "
        f"{notified['per_second']:,.0f}/s (target >= 5,000)"
    )

    many = args.scale_clients
    rows: list[dict[str, Any]] = [embedded, redis, published, notified]
    async with shared_backends() as env:
        async with run_server("notifier-redis", **env) as one:
            single = await fanout_between(one, one, "one node", many, messages, max(shards, 4))
            single_latency = await latency_between(
                one, one, "one node", many, args.rate, args.seconds, max(shards, 4)
            )
        async with run_server("notifier-redis", **env) as a, run_server("notifier-redis", **env) as b:
            across = await fanout_between(
                a, b, "two nodes (publisher on A, clients on B)", many, messages, max(shards, 4)
            )
            across_latency = await latency_between(
                a, b, "two nodes", many, args.rate, args.seconds, max(shards, 4)
            )
    for row in (single, across, single_latency, across_latency):
        print(json.dumps(row), flush=True)
    print(f"{many} clients, Redis broker, {os.cpu_count()} cores shared with the load generator:")
    for fan, lat in ((single, single_latency), (across, across_latency)):
        print(
            f"  {fan['server']:<42} {fan['deliveries_per_s']:>10,.0f} deliveries/s, "
            f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms at {args.rate:g}/s; "
            f"load generator {fan['loadgen_cores']:.1f} cores"
        )
    return [*rows, single, across, single_latency, across_latency]


async def connect_command(args: argparse.Namespace) -> list[dict[str, Any]]:
    """New authenticated websocket connections per second (each with its own JWT)."""
    from benchmarks.connections import measure_connect_rate

    rows = []
    for name in args.servers or ("notifier", "node"):
        async with run_server(name) as server:
            row = await measure_connect_rate(
                server, SECRET, args.clients[0], args.window, max(args.shards, 4)
            )
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(
        f"authenticated websocket connections set up per second ({args.clients[0]}, "
        f"{args.window} handshakes in flight, server on one core and the generator on the "
        f"others; target >= 5,000/s):"
    )
    _ratio_table(rows, "per_second", True)
    print("the same, per second of the server's own CPU time:")
    _ratio_table(rows, "per_server_core_second", True)
    return rows


async def hold_command(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Many idle connections held by one process, answering heartbeats."""
    from benchmarks.connections import measure_hold

    rows = []
    for name in args.servers or ("notifier",):
        async with run_server(name) as server:
            row = await measure_hold(
                server, SECRET, args.clients[0], args.seconds, args.connect_rate, max(args.shards, 4)
            )
        rows.append(row)
        print(json.dumps(row), flush=True)
        projected = row["rss_before_kb"] + row["kb_per_connection"] * 100_000
        print(
            f"{row['server']}: {row['connections']} connections held {row['held_seconds']:.0f} s; "
            f"{row['still_open']} still open, {row['ping_timeouts']:.0f} ping timeouts, "
            f"{row['kb_per_connection']:.1f} KB each; 100,000 would take about "
            f"{projected / 1024 / 1024:.1f} GB"
        )
    return rows


async def storm_command(args: argparse.Namespace) -> list[dict[str, Any]]:
    """A reconnect storm: the server restarted, then (Redis broker) the clients' node killed."""
    from benchmarks.connections import measure_storm

    rate = args.storm_publish_rate
    rows = [
        await measure_storm(SECRET, args.clients[0], 50, max(args.shards, 4), rate, kill=False, backends=None)
    ]
    print(json.dumps(rows[-1]), flush=True)
    async with shared_backends() as env:
        rows.append(
            await measure_storm(
                SECRET, args.clients[0], 50, max(args.shards, 4), rate, kill=True, backends=env
            )
        )
    print(json.dumps(rows[-1]), flush=True)
    print(
        "reconnect storm (targets: all recovered < 30 s, 0 lost, 0 duplicated, loop lag < 250 ms, "
        "bystander p99 < 100 ms):"
    )
    for row in rows:
        within, p99 = row["all_recovered_within_s"], row["bystander_p99_ms"]
        print(
            f"  {row['variant']}: {row['clients']} clients, all recovered within "
            f"{'-' if within is None else f'{within:.1f}'} s (not reconnected "
            f"{row['not_reconnected']}), lost {row['lost']}, duplicated {row['duplicates']}, "
            f"behind at the end {row['behind_at_end']}, max loop lag "
            f"{row['max_loop_lag_ms']:.0f} ms, bystander p99 "
            f"{'-' if p99 is None else f'{p99:.1f}'} ms"
        )
    return rows


async def progress_command(args: argparse.Namespace) -> list[dict[str, Any]]:
    from benchmarks.progress import measure_progress

    def on_the_service_loop(tasks: int) -> dict[str, Any]:
        # The service runs on uvloop (`notifier serve`), so the task book is measured on it,
        # in a thread of its own beside this benchmark's loop.
        return uvloop.run(measure_progress(tasks=tasks, updates=args.updates))

    rows = [
        await asyncio.to_thread(on_the_service_loop, 1),
        await asyncio.to_thread(on_the_service_loop, 1000),
    ]
    for row in rows:
        print(json.dumps(row), flush=True)
    print("progress updates absorbed per second (target: 100,000 into one task):")
    for row in rows:
        print(
            f"  {row['tasks']:>5} task(s): {row['updates_per_s']:>12,.0f}/s, "
            f"{row['updates_per_s'] / 100_000:.2f}x target, "
            f"max event-loop lag {row['max_loop_lag_ms']:.1f} ms, "
            f"{row['emitted']} progress events emitted"
        )
    return rows


def _install_node_packages() -> None:
    """The load generator and the Node reference come from benchmarks/package-lock.json."""
    if not (BENCH / "node_modules" / "socket.io-client").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BENCH, check=True)


async def inbox_command(args: argparse.Namespace) -> list[dict[str, Any]]:
    from benchmarks.inbox import inbox_command as measure

    return await measure(args)


async def escalation_command(args: argparse.Namespace) -> list[dict[str, Any]]:
    from benchmarks.escalation import escalation_command as measure

    return await measure(args)


async def workers_command(args: argparse.Namespace) -> list[dict[str, Any]]:
    from benchmarks.workers import workers_command as measure

    return await measure(args)


async def pgbroker_command(args: argparse.Namespace) -> list[dict[str, Any]]:
    from benchmarks.workers import pgbroker_command as measure

    return await measure(args)


async def outbox_command(args: argparse.Namespace) -> list[dict[str, Any]]:
    from benchmarks.outbox import outbox_command as measure

    return await measure(args)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "command",
        choices=[
            "fanout",
            "latency",
            "memory",
            "progress",
            "hostile",
            "scale",
            "connect",
            "hold",
            "storm",
            "runner",
            "escalation",
            "inbox",
            "workers",
            "pgbroker",
            "outbox",
            "all",
        ],
    )
    parser.add_argument("--clients", type=int, action="append")
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--updates", type=int, default=200_000)
    parser.add_argument(
        "--scale-clients", type=int, default=2000, help="clients for the two-nodes-vs-one figures of `scale`"
    )
    parser.add_argument(
        "--storm-publish-rate",
        type=float,
        default=50,
        help="events published per second during `storm` (over its 50 rooms)",
    )
    parser.add_argument("--users", type=int, default=10_000, help="offline users for `escalation`")
    parser.add_argument("--notifications", type=int, default=100_000, help="one user's inbox for `inbox`")
    parser.add_argument("--window", type=int, default=400, help="handshakes in flight for `connect`")
    parser.add_argument("--setups", type=int, default=10_000, help="connections set up for `workers`")
    parser.add_argument(
        "--connect-rate", type=float, default=2000, help="connections opened per second for `hold`"
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=(*FANOUT_SERVERS, "notifier-redis", "notifier-workers", "node-cluster"),
        help="which servers to measure (default: all; ratios need notifier)",
    )
    args = parser.parse_args()
    if args.command not in ("progress", "hostile", "runner", "inbox"):
        _install_node_packages()
    commands = {
        "fanout": fanout_command,
        "latency": latency_command,
        "memory": memory_command,
        "progress": progress_command,
        "hostile": hostile_command,
        "scale": scale_command,
        "connect": connect_command,
        "hold": hold_command,
        "storm": storm_command,
        "runner": runner_command,
        "escalation": escalation_command,
        "inbox": inbox_command,
        "workers": workers_command,
        "pgbroker": pgbroker_command,
        "outbox": outbox_command,
    }
    if args.command == "all":
        memory_clients = args.clients or [1000, 10000]
        args.clients = [1000]
        for name in ("fanout", "latency", "progress", "hostile", "scale"):
            await commands[name](args)
        args.clients = memory_clients
        await memory_command(args)
        args.clients = [10_000]
        await connect_command(args)
        await storm_command(args)
        args.clients, args.seconds = [19_000], 120
        await hold_command(args)
    else:
        args.clients = args.clients or [1000]
        await commands[args.command](args)


if __name__ == "__main__":
    asyncio.run(main())
