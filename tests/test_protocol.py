"""Engine.IO v4 and Socket.IO v5, as their protocol documents write them, over raw HTTP and
websockets (no Socket.IO client library between the test and the wire)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from notifier import Settings
from notifier.keys import ENGINE
from tests.conftest import RunningServer, make_settings
from tests.wire_client import Polling, closed, connected_websocket, receive_text, websocket

WAIT = 5.0


@pytest.fixture
def server_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, ping_interval_seconds=1, ping_timeout_seconds=1, connect_timeout_seconds=1)


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert not [record for record in caplog.records if record.exc_info], "a client caused a traceback"


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


# Engine.IO: handshake


async def test_polling_handshake_announces_the_session(server: RunningServer, http) -> None:
    handshake = await Polling(http, server.url).open()

    assert set(handshake) == {"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"}
    assert handshake["upgrades"] == ["websocket"]
    assert handshake["pingInterval"] == 1000 and handshake["pingTimeout"] == 1000
    assert handshake["maxPayload"] == server.settings.max_payload_bytes * 4


@pytest.mark.parametrize(
    ("method", "query"),
    [
        ("GET", "transport=polling"),
        ("GET", "EIO=abc&transport=polling"),
        ("GET", "EIO=3&transport=polling"),
        ("GET", "EIO=4"),
        ("GET", "EIO=4&transport=abc"),
        ("POST", "EIO=4&transport=polling"),
        ("PUT", "EIO=4&transport=polling"),
        ("GET", "EIO=4&transport=polling&j=1"),
    ],
)
async def test_invalid_handshakes_get_400_with_a_code(
    server: RunningServer, http, method: str, query: str
) -> None:
    async with http.request(method, f"{server.url}/socket.io/?{query}") as response:
        assert response.status == 400
        body = await response.json()
    assert body["error"]["code"] in {"INVALID_PAYLOAD", "NOT_FOUND"} and body["error"]["message"]


async def test_websocket_handshake_opens_a_session_without_upgrades(server: RunningServer, http) -> None:
    ws = await websocket(http, server.url)
    handshake = orjson.loads((await receive_text(ws))[1:])
    assert handshake["upgrades"] == [] and handshake["sid"]
    await ws.close()


async def test_unknown_sessions_are_refused(server: RunningServer, http) -> None:
    polling = Polling(http, server.url)
    polling.sid = "nope"
    assert (await polling.poll())[0] == 400
    assert (await polling.post("40"))[0] == 400
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await websocket(http, server.url, sid="nope")


# Engine.IO: heartbeat


async def test_polling_heartbeat_and_its_timeout(server: RunningServer, http) -> None:
    polling = Polling(http, server.url)
    await polling.open()
    await polling.post("40" + orjson.dumps({"token": server.token("alice")}).decode())
    status, body = await polling.poll()
    assert status == 200 and body.startswith("40")

    for _ in range(2):
        status, body = await polling.poll()
        assert (status, body.split("\x1e")[-1]) == (200, "2")
        assert await polling.post("3") == (200, "ok")

    # No PONG for the next PING: the session ends after the ping timeout.
    assert (await polling.poll())[1].endswith("2")
    await asyncio.sleep(2.5)
    assert (await polling.poll())[0] == 400


async def test_websocket_heartbeat_and_its_timeout(server: RunningServer, http) -> None:
    ws = await websocket(http, server.url)
    await receive_text(ws)
    await ws.send_str("40" + orjson.dumps({"token": server.token("alice")}).decode())
    pings = 0
    started = time.monotonic()
    while pings < 2:
        if await receive_text(ws, skip_pings=False) == "2":
            pings += 1
            await ws.send_str("3")
    assert time.monotonic() - started < 4
    # Now silence: closed after ping interval + timeout.
    assert await closed(ws, within=5)


# Engine.IO: close


async def test_a_polling_close_is_honoured_at_once(server: RunningServer, http) -> None:
    polling = Polling(http, server.url)
    await polling.open()

    pending = asyncio.create_task(polling.poll())
    await asyncio.sleep(0.1)
    assert await polling.post("1") == (200, "ok")

    assert await asyncio.wait_for(pending, 2) == (200, "6")
    assert (await polling.poll())[0] == 400


async def test_a_websocket_close_is_honoured_at_once(server: RunningServer, http) -> None:
    ws = await websocket(http, server.url)
    await receive_text(ws)
    started = time.monotonic()
    await ws.send_str("1")
    assert await closed(ws, within=2)
    assert time.monotonic() - started < 1


async def test_a_second_concurrent_poll_ends_the_session(server: RunningServer, http) -> None:
    polling = Polling(http, server.url)
    await polling.open()

    first = asyncio.create_task(polling.poll())
    await asyncio.sleep(0.1)
    second = await polling.poll()

    assert second[0] == 400
    assert await asyncio.wait_for(first, 2) == (200, "1")
    assert (await polling.poll())[0] == 400


# Engine.IO: upgrade


async def test_upgrade_from_polling_to_websocket(server: RunningServer, http) -> None:
    polling = Polling(http, server.url)
    await polling.open()
    await polling.post("40" + orjson.dumps({"token": server.token("alice")}).decode())
    _, body = await polling.poll()
    assert body.startswith("40")  # CONNECT answered (and the session event) over polling

    ws = await websocket(http, server.url, sid=polling.sid)
    pending = asyncio.create_task(polling.poll())
    await ws.send_str("2probe")
    assert await receive_text(ws) == "3probe"
    assert (await asyncio.wait_for(pending, 2))[1] in {"6", "2"}  # the poll ends
    await ws.send_str("5")
    await ws.send_str('421["ping",{"n":1}]')

    reply = await receive_text(ws)
    assert reply.startswith("431[") and orjson.loads(reply[3:])[0]["echo"] == {"n": 1}
    # No stray NOOP reached the new websocket, and polling is over for this session.
    assert (await polling.poll())[0] == 400
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await websocket(http, server.url, sid=polling.sid)
    await ws.send_str('422["ping",{}]')
    assert (await receive_text(ws)).startswith("432[")
    await ws.close()


# Socket.IO


async def test_refused_connect_carries_a_code(server: RunningServer, http) -> None:
    ws = await websocket(http, server.url)
    await receive_text(ws)
    await ws.send_str("40")
    refusal = orjson.loads((await receive_text(ws))[2:])
    assert refusal["data"]["code"] == "AUTH_REQUIRED" and refusal["message"]
    await ws.close()


async def test_an_unknown_namespace_gets_connect_error_with_a_code(server: RunningServer, http) -> None:
    ws = await websocket(http, server.url)
    await receive_text(ws)
    await ws.send_str("40/random,")
    answer = await receive_text(ws)
    assert answer.startswith("44/random,")
    body = orjson.loads(answer[len("44/random,") :])
    assert body["message"] == "Invalid namespace" and body["data"]["code"] == "NOT_FOUND"
    await ws.close()


@pytest.mark.parametrize(
    "packet",
    [
        "4abc",
        "42{}",
        '42abc["ping",{}]',
        "47",
        '44{"message":"x"}',
        "49",
        "7",
        "8",
        "9",
        "0",
        "2",
        "2probe",
        "5",
        "40[1]",
        "4",
        "",
    ],
    ids=[
        "bad-type",
        "not-array",
        "bad-ack-id",
        "type-7",
        "connect-error",
        "type-9",
        "eio-7",
        "eio-8",
        "eio-9",
        "eio-open",
        "client-ping",
        "probe",
        "upgrade",
        "array-auth",
        "empty-message",
        "empty",
    ],
)
async def test_malformed_packets_end_only_that_session(
    server: RunningServer, http, caplog: pytest.LogCaptureFixture, packet: str
) -> None:
    bystander = await server.connect("bob")
    ws = await connected_websocket(server, http)

    await ws.send_str(packet)

    assert await closed(ws, within=2)
    assert (await bystander.call("ping", {}))["ok"] is True
    no_tracebacks(caplog)


async def test_a_packet_before_connect_ends_the_session(server: RunningServer, http) -> None:
    ws = await websocket(http, server.url)
    await receive_text(ws)
    await ws.send_str('42["ping",{}]')
    assert await closed(ws, within=2)


async def test_a_session_that_never_connects_is_closed_after_the_timeout(server: RunningServer, http) -> None:
    ws = await websocket(http, server.url)
    await receive_text(ws)
    started = time.monotonic()
    while True:  # answering pings does not keep an anonymous session alive
        message = await ws.receive(timeout=WAIT)
        if message.type is aiohttp.WSMsgType.TEXT and message.data == "2":
            await ws.send_str("3")
            continue
        break
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert time.monotonic() - started < 3
    assert not server.app[ENGINE].sessions


@pytest.mark.parametrize("body", ["6", "0", "2", "7", "1\x1e1", "abc", "4", "b!!!"])
async def test_every_polling_post_is_answered_at_once(server: RunningServer, http, body: str) -> None:
    polling = Polling(http, server.url)
    await polling.open()

    status, _ = await asyncio.wait_for(polling.post(body), 2)

    assert status in (200, 400)
    if body not in ("6",):
        assert (await polling.poll())[0] == 400, "an invalid or closing packet ends the session"


async def test_an_abandoned_poll_ends_its_session(server: RunningServer) -> None:
    engine = server.app[ENGINE]
    async with aiohttp.ClientSession() as http:
        polling = Polling(http, server.url)
        await polling.open()
        waiting = asyncio.create_task(polling.poll())
        await asyncio.sleep(0.2)
        waiting.cancel()  # the client gives up and drops the connection
    deadline = time.monotonic() + 3
    while engine.sessions and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert not engine.sessions


async def test_binary_events_are_answered_not_processed(server: RunningServer, http) -> None:
    ws = await connected_websocket(server, http)
    await ws.send_str('451-7["ping",{"_placeholder":true,"num":0}]')
    await ws.send_bytes(b"\x01\x02\x03")

    reply = await receive_text(ws)

    assert reply.startswith("437[")
    assert orjson.loads(reply[3:])[0]["error"]["code"] == "INVALID_PAYLOAD"
    await ws.send_str('428["ping",{}]')
    assert (await receive_text(ws)).startswith("438[")
    await ws.close()


async def test_disconnecting_a_namespace_keeps_the_session_for_another_connect(
    server: RunningServer, http
) -> None:
    ws = await connected_websocket(server, http)
    await ws.send_str("41")
    await ws.send_str("40" + orjson.dumps({"token": server.token("alice")}).decode())
    assert (await receive_text(ws)).startswith("40{")
    await ws.close()
