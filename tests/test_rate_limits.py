"""One flooding client is limited and then dropped; everyone else carries on."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from notifier import Settings
from tests.conftest import RunningServer, make_settings


@pytest.fixture
def server_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, user_rate_per_second=50, user_rate_burst=10, flood_disconnect_seconds=1.0)


async def test_events_over_the_limit_are_refused_and_not_processed(server: RunningServer) -> None:
    mallory = await server.connect("mallory", projects=["p1"])

    started = time.monotonic()
    replies = await asyncio.gather(*(mallory.call("subscribe", {"rooms": ["project:p1"]}) for _ in range(40)))
    elapsed = time.monotonic() - started

    limited = [r for r in replies if not r["ok"]]
    assert limited and all(r["error"]["code"] == "RATE_LIMITED" for r in limited)
    # The burst (10), then the rate (50/s) for as long as it took; the connection's own
    # CONNECT counts too.
    assert sum(r["ok"] for r in replies) <= 10 + 50 * elapsed


async def test_a_flooder_is_disconnected_and_others_keep_low_latency(
    server: RunningServer,
) -> None:
    mallory = await server.connect("mallory")
    bob = await server.connect("bob")
    closing: list[dict] = []
    mallory.sio.on("connection.closing", closing.append)

    async def flood() -> None:
        deadline = time.monotonic() + 5
        while mallory.sio.connected and time.monotonic() < deadline:
            await mallory.sio.emit("ping", {"spam": True})
            await asyncio.sleep(0.001)

    async def measure() -> list[float]:
        latencies = []
        for _ in range(20):
            sent = time.monotonic()
            assert (await bob.call("ping", {}))["ok"] is True
            latencies.append(time.monotonic() - sent)
            await asyncio.sleep(0.02)
        return latencies

    flooding = asyncio.create_task(flood())
    latencies = await measure()
    await asyncio.wait_for(flooding, 10)

    assert closing and closing[0]["data"]["code"] == "RATE_LIMITED"
    assert not mallory.sio.connected
    assert max(latencies) < 0.5, latencies
    assert bob.sio.connected
