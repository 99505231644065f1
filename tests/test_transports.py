"""Every transport gets every event in order: websocket, long-polling, and the upgrade between."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from notifier import Settings
from notifier.models import PublishRequest
from tests.conftest import RunningServer, make_settings

EVENTS = 300


@pytest.fixture
def server_settings(tmp_path: Path) -> Settings:
    # Short heartbeats, so that a connection must be kept alive by the server's pings.
    return make_settings(tmp_path, ping_interval_seconds=1, ping_timeout_seconds=1)


@pytest.mark.parametrize(
    ("transports", "settles_on"),
    [(["websocket"], "websocket"), (["polling"], "polling"), (["polling", "websocket"], "websocket")],
    ids=["websocket", "polling", "upgrade"],
)
async def test_events_arrive_in_order_on_every_transport(
    server: RunningServer, transports: list[str], settles_on: str
) -> None:
    client = await server.connect("alice", projects=["p"], transports=transports)

    async def publish_all() -> None:
        for n in range(1, EVENTS + 1):
            await server.notifier.publish(PublishRequest(room="project:p", type="step", data={"n": n}))
            await asyncio.sleep(0)

    reply = await client.call("subscribe", {"rooms": ["project:p"]})
    assert reply["ok"] is True
    await publish_all()  # for "upgrade", while the transport changes under it
    await client.next_event("step", count=EVENTS)

    assert [event["data"]["n"] for event in client.of_type("step")] == list(range(1, EVENTS + 1))
    assert client.sio.transport() == settles_on
    assert (await client.call("ping", {}))["ok"] is True


async def test_an_idle_websocket_is_kept_alive_by_pings(server: RunningServer) -> None:
    client = await server.connect("alice")
    sid = client.sio.get_sid()
    # Three ping periods of silence: without the server's pings the client gives up after
    # interval + timeout (2 s) and the connection would be gone.
    await asyncio.sleep(3.5)
    assert client.sio.connected and client.sio.get_sid() == sid
    assert (await client.call("ping", {}))["ok"] is True


async def test_garbage_on_the_websocket_closes_only_that_connection(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    bystander = await server.connect("bob")
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{server.url}/socket.io/?EIO=4&transport=websocket") as websocket,
    ):
        opened = await websocket.receive(timeout=5)
        assert opened.type is aiohttp.WSMsgType.TEXT and opened.data.startswith("0{")
        await websocket.send_str("not an engine.io packet")
        closed = await websocket.receive(timeout=5)
        assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)

    assert (await bystander.call("ping", {}))["ok"] is True
    assert not [record for record in caplog.records if record.exc_info]
