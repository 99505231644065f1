"""Refresh broadcasts on an interval that admins change at run time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from notifier import Settings
from notifier.auth import Role
from tests.conftest import RunningServer, make_settings


@pytest.fixture
def server_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, refresh_min_interval_seconds=0.05)


async def test_admin_changes_the_interval_and_everyone_is_told(server: RunningServer) -> None:
    admin = await server.connect("root", role="admin")
    alice = await server.connect("alice")

    ack = await admin.call("config.set_refresh_interval", {"seconds": 0.1})

    assert ack == {"ok": True, "refresh_interval": 0.1}
    update = await alice.next_event("config.updated")
    assert update["data"] == {"refresh_interval": 0.1}
    refresh = await alice.next_event("refresh", count=2)
    assert refresh["data"] == {"reason": "interval", "interval": 0.1}
    _, body = await server.http("GET", "/api/v1/status", server.token("ops", role=Role.ADMIN))
    assert body["refresh_interval"] == 0.1
    late = await server.connect("bob")
    assert (await late.next_event("session"))["data"]["refresh_interval"] == 0.1


async def test_a_new_interval_restarts_the_timer_at_once(server: RunningServer) -> None:
    admin = await server.connect("root", role="admin")
    await admin.call("config.set_refresh_interval", {"seconds": 3600})

    loop = asyncio.get_running_loop()
    changed_at = loop.time()
    status, _ = await server.http(
        "PUT",
        "/api/v1/config/refresh-interval",
        server.token("root", role="admin"),
        {"seconds": 0.2},
    )
    await admin.next_event("refresh", timeout=3)

    assert status == 200
    # Not after the old hour: one new period (plus scheduling slack).
    assert loop.time() - changed_at < 2


@pytest.mark.parametrize("seconds", [-1, 0.01, "60", None, 10**9])
async def test_bad_intervals_are_refused(server: RunningServer, seconds: object) -> None:
    admin = await server.connect("root", role="admin")
    ack = await admin.call("config.set_refresh_interval", {"seconds": seconds})
    assert ack["ok"] is False and ack["error"]["code"] == "INVALID_PAYLOAD"
    assert server.notifier.refresh_interval == 0


async def test_rest_interval_change_needs_admin(server: RunningServer) -> None:
    status, body = await server.http(
        "PUT", "/api/v1/config/refresh-interval", server.token("alice"), {"seconds": 5}
    )
    assert status == 403 and body["error"]["code"] == "FORBIDDEN"


async def test_no_refresh_is_sent_when_nobody_is_connected(server: RunningServer) -> None:
    notifier = server.notifier
    await notifier.set_refresh_interval(0.05)
    ticks = notifier._refresh
    await asyncio.wait_for(_ticks_reached(ticks, 3), 5)

    head, _ = await notifier.broker.bounds("*")
    assert head.offset == 1, "only the config.updated event, no refresh"


async def _ticks_reached(timer, count: int) -> None:
    while timer.ticks < count:  # noqa: ASYNC110 - the timer offers no event per tick
        await asyncio.sleep(0.02)
