"""`benchmarks.run escalation`: offline users whose notifications escalate to Web Push.

    .venv/bin/python -m benchmarks.run escalation --users 10000 --clients 1000

One notifier process (SQLite), a push service in a process of its own
(benchmarks/push_sink.py, which decrypts every message), and `--users` offline users, each
with one push subscription and one notification escalated after a few seconds. Reported:
pushes sent per second from the moment they fell due, and how late they were (p50, p99).
Live fan-out to `--clients` connected clients is measured twice in the same run: before the
escalations (the reference) and while they go out; the ratio should stay at or above 0.95.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from typing import Any

import aiohttp
from py_vapid import Vapid02

from benchmarks.run import BENCH, SECRET, Server, _percentile, fanout_between, run_server
from notifier.auth import Role, issue_token

# When the notifications fall due, after they were sent: long enough for the reference
# fan-out to finish first.
_DELAY_SECONDS = 20.0
_PER_REQUEST = 1000  # users per notify request
_RUNS = 3


async def _start_sink() -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(BENCH / "push_sink.py"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert process.stdout is not None
    port = int((await asyncio.wait_for(process.stdout.readline(), 10)).decode())
    return process, f"http://127.0.0.1:{port}"


async def _subscribe_all(http: aiohttp.ClientSession, server: Server, sink: str, users: int) -> None:
    async with http.get(f"{sink}/keys") as answer:
        keys = await answer.json()
    slots = asyncio.Semaphore(32)

    async def one(n: int) -> None:
        token = issue_token(SECRET, "HS256", f"offline{n}", role=Role.USER)
        body = {"endpoint": f"{sink}/push/{n}", "keys": keys}
        async with (
            slots,
            http.post(
                f"{server.url}/api/v1/push/subscriptions",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            ) as answer,
        ):
            answer.raise_for_status()

    await asyncio.gather(*(one(n) for n in range(users)))


async def _notify_all(http: aiohttp.ClientSession, server: Server, users: int) -> float:
    """Send every user one escalating notification; when they fall due (epoch ms)."""
    token = issue_token(SECRET, "HS256", "bench", role=Role.PUBLISHER)
    due = time.time() * 1000 + _DELAY_SECONDS * 1000
    for start in range(0, users, _PER_REQUEST):
        body = {
            "user_ids": [f"offline{n}" for n in range(start, min(users, start + _PER_REQUEST))],
            "title": "unseen",
            # Due when the last request was sent at the latest: lateness is measured from here.
            "data": {"due": due},
            "escalate": {"after_seconds": _DELAY_SECONDS, "channels": ["push"]},
        }
        async with http.post(
            f"{server.url}/api/v1/notifications", json=body, headers={"Authorization": f"Bearer {token}"}
        ) as answer:
            answer.raise_for_status()
    return due


async def _median_fanout(
    server: Server, name: str, clients: int, messages: int, shards: int
) -> dict[str, Any]:
    """The median of three fan-out runs (one burst varies by a third from run to run here)."""
    runs = [await fanout_between(server, server, name, clients, messages, shards) for _ in range(_RUNS)]
    return sorted(runs, key=lambda run: float(run["deliveries_per_s"]))[_RUNS // 2]


async def escalation_command(args: argparse.Namespace) -> list[dict[str, Any]]:
    users, clients, messages, shards = args.users, args.clients[0], args.messages, args.shards
    vapid = Vapid02()
    vapid.generate_keys()
    sink_process, sink = await _start_sink()
    env = {
        "NOTIFIER_VAPID_PRIVATE_KEY": vapid.private_pem().decode(),
        "NOTIFIER_VAPID_SUBJECT": "mailto:bench@example.com",
        "NOTIFIER_PUSH_ALLOW_PRIVATE": "true",
    }
    try:
        async with run_server("notifier", **env) as server, aiohttp.ClientSession() as http:
            began = time.monotonic()
            await _subscribe_all(http, server, sink, users)
            print(f"{users} push subscriptions registered in {time.monotonic() - began:.1f} s", flush=True)
            due = await _notify_all(http, server, users)
            reference = await _median_fanout(server, "no escalation", clients, messages, shards)
            wait = due / 1000 - time.time()
            assert wait > 0, f"the reference ran {-wait:.1f} s past the due time: raise _DELAY_SECONDS"
            await asyncio.sleep(wait + 0.3)  # the escalations are going out now
            during = await _median_fanout(server, "during escalation", clients, messages, shards)
            still_going = True
            async with http.get(f"{sink}/stats") as answer:
                still_going = (await answer.json())["received"] < users
            deadline = time.monotonic() + 300
            while True:
                async with http.get(f"{sink}/stats") as answer:
                    arrived = (await answer.json())["received"]
                if arrived >= users or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            async with http.get(f"{sink}/stats?decrypt=1") as answer:
                stats = await answer.json()
    finally:
        sink_process.terminate()
        await sink_process.wait()
    lateness = stats["lateness_ms"]
    seconds = max(lateness) / 1000 if lateness else float("inf")
    row = {
        "users": users,
        "pushed": stats["received"],
        "pushes_per_s": stats["received"] / seconds,
        "late_p50_ms": _percentile(lateness, 50),
        "late_p99_ms": _percentile(lateness, 99),
        "fanout_reference_per_s": reference["deliveries_per_s"],
        "fanout_during_per_s": during["deliveries_per_s"],
        "fanout_ratio": during["deliveries_per_s"] / reference["deliveries_per_s"],
        "escalations_outlasted_fanout": still_going,
    }
    print(
        f"escalation to Web Push, {users} offline users: {row['pushed']} pushed, "
        f"{row['pushes_per_s']:,.0f}/s from the due time; late by p50 {row['late_p50_ms']:,.0f} ms, "
        f"p99 {row['late_p99_ms']:,.0f} ms"
    )
    print(
        f"live fan-out to {clients} clients: {row['fanout_reference_per_s']:,.0f}/s without escalations, "
        f"{row['fanout_during_per_s']:,.0f}/s while they went out = {row['fanout_ratio']:.2f}x "
        "(target >= 0.95)" + ("" if still_going else "; the pushes were over before the last run ended")
    )
    return [row]
