"""Every core, and a cluster on PostgreSQL alone.

    .venv/bin/python -m benchmarks.run workers --clients 1000      # --workers 2 against one process
    .venv/bin/python -m benchmarks.run pgbroker --clients 2000     # PostgreSQL broker against Redis

`workers`: notifier as one process and as `serve --workers 2` (both on the Redis broker and
PostgreSQL store), Node socket.io as one process and as `cluster` + `@socket.io/sticky` +
`@socket.io/cluster-adapter` on 2 workers (benchmarks/ref_node_cluster.mjs), measured in the
same run: connections set up per second (each with its own JWT), fan-out deliveries per
second, and the CPU seconds the server's processes (the supervisor or primary and every
worker, read from /proc) spend per 100,000 deliveries. Nothing is pinned: on this machine the
servers share its cores with the load generator, whose own CPU time is printed beside.

`pgbroker`: acknowledged publishes per second and fan-out deliveries per second, one node and
two (publisher on A, clients on B), for the Redis and the PostgreSQL broker in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from benchmarks.connections import measure_connect_rate

PROC = Path("/proc")


def process_tree(pid: int) -> list[int]:
    """`pid` and every process below it (a supervisor's workers, a cluster's)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, []))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process and its descendants (those alive now)."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for member in process_tree(pid):
        try:
            fields = (PROC / str(member) / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


async def _fanout_with_cpu(
    run: Any, publish_to: Any, clients_on: Any, name: str, clients: int, messages: int, shards: int
) -> dict[str, Any]:
    """Fan-out deliveries per second and the server tree's CPU per 100,000 of them (both
    servers' when the publisher is on another)."""
    servers = {publish_to.process.pid, clients_on.process.pid}
    before = sum(tree_cpu_seconds(pid) for pid in servers)
    row = await run.fanout_between(publish_to, clients_on, name, clients, messages, shards)
    used = sum(tree_cpu_seconds(pid) for pid in servers) - before
    row["server_cpu_s_per_100k"] = used / max(row["delivered"], 1) * 100_000
    return row


async def workers_command(args: argparse.Namespace) -> list[dict[str, Any]]:
    from benchmarks import run

    clients, messages, shards = args.clients[0], args.messages, max(args.shards, 4)
    connections = args.setups
    setups: list[dict[str, Any]] = []
    fanouts: list[dict[str, Any]] = []
    for name in args.servers or ("notifier-redis", "notifier-workers", "node", "node-cluster"):
        # A fresh server for each figure: the set-up run leaves thousands of connections
        # closing, which would weigh on the fan-out run after it.
        async with run.shared_backends() as env, run.run_server(name, **env) as server:
            setup = await measure_connect_rate(
                server, run.SECRET, connections, args.window, shards, pin=False, cpu=tree_cpu_seconds
            )
        setup["server"] = _label(name)
        setups.append(setup)
        print(json.dumps(setup), flush=True)
        try:
            async with run.shared_backends() as env, run.run_server(name, **env) as server:
                fanout = await _fanout_with_cpu(run, server, server, _label(name), clients, messages, shards)
        except TimeoutError:  # seen with the Node cluster: its clients did not all connect in time
            print(f"{_label(name)}: the fan-out clients did not all connect within the time allowed")
            continue
        fanouts.append(fanout)
        print(json.dumps(fanout), flush=True)
    cores = len(os.sched_getaffinity(0))
    print(f"{connections} authenticated websocket set-ups ({args.window} in flight), {cores} cores shared:")
    _table(setups, "per_second", higher_is_better=True)
    print("server CPU per set-up (all its processes), microseconds:")
    _table(setups, "server_cpu_us_per_connection", higher_is_better=False)
    print(f"fan-out, {clients} clients x {messages} broadcasts, deliveries per second:")
    _table(fanouts, "deliveries_per_s", higher_is_better=True)
    print("server CPU seconds per 100,000 deliveries (all its processes; Redis not counted):")
    _table(fanouts, "server_cpu_s_per_100k", higher_is_better=False)
    for row in fanouts:
        print(f"  (load generator: {row['loadgen_cores']:.2f} cores during {row['server']}'s fan-out)")
    return [*setups, *fanouts]


def _label(name: str) -> str:
    return {
        "notifier-redis": "notifier 1 process",
        "notifier-workers": "notifier --workers 2",
        "node": "node 1 process",
        "node-cluster": "node cluster 2",
    }.get(name, name)


def _table(rows: list[dict[str, Any]], key: str, *, higher_is_better: bool) -> None:
    """Each figure, and its ratio to notifier's one process and to each Node figure."""
    by_name = {row["server"]: row[key] for row in rows}
    references = [name for name in by_name if not name.startswith("notifier")]
    base = by_name.get("notifier 1 process")
    better = "higher is better" if higher_is_better else "lower is better"
    for name, value in by_name.items():
        notes = []
        if base and name != "notifier 1 process":
            notes.append(f"{value / base:.2f}x notifier 1 process")
        if name.startswith("notifier"):
            notes += [f"{value / by_name[ref]:.2f}x {ref}" for ref in references if by_name[ref]]
        note = f"  ({'; '.join(notes)}; {better})" if notes else ""
        print(f"  {name:<22} {value:>12,.1f}{note}")


async def pgbroker_command(args: argparse.Namespace) -> list[dict[str, Any]]:
    from benchmarks import run

    clients, messages, shards = args.clients[0], args.messages, max(args.shards, 4)
    rows: list[dict[str, Any]] = []
    for broker in ("redis", "postgresql"):
        async with run.shared_backends() as env:
            if broker == "postgresql":
                env = {**env, "NOTIFIER_BROKER_URL": env["NOTIFIER_STORE_URL"]}
            async with run.run_server("notifier-redis", **env) as one:
                published = await run.acknowledged_rate(one, "publish", 40_000, 2048)
                published.update(server=broker, figure="acknowledged publishes/s")
                single = await _fanout_with_cpu(run, one, one, broker, clients, messages, shards)
            async with (
                run.run_server("notifier-redis", **env) as a,
                run.run_server("notifier-redis", **env) as b,
            ):
                across = await _fanout_with_cpu(run, a, b, broker, clients, messages, shards)
        for row, figure in ((single, "fan-out one node"), (across, "fan-out two nodes")):
            row["figure"] = figure
        rows += [published, single, across]
        for row in (published, single, across):
            print(json.dumps(row), flush=True)
    print(f"PostgreSQL broker against Redis, {clients} clients, {messages} broadcasts:")
    for figure, key in (
        ("acknowledged publishes/s", "per_second"),
        ("fan-out one node", "deliveries_per_s"),
        ("fan-out two nodes", "deliveries_per_s"),
    ):
        redis, postgres = (
            next(r for r in rows if r["figure"] == figure and r["server"] == broker)
            for broker in ("redis", "postgresql")
        )
        print(
            f"  {figure:<26} Redis {redis[key]:>10,.0f}  PostgreSQL {postgres[key]:>10,.0f}  "
            f"= {postgres[key] / redis[key]:.2f}x"
        )
    return rows
