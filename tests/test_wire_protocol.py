"""The wire layer against the Engine.IO v4 and Socket.IO v5 protocol documents, as the network
delivers bytes: bodies and frames split at every byte boundary, stalled readers, heartbeats
timed to the protocol's numbers. (tests/test_protocol.py holds the first round of cases.)"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from notifier import Settings
from notifier.keys import ENGINE
from tests.conftest import ADMIN, RunningServer, make_settings, start_server, stop_server, until
from tests.wire_client import (
    SEPARATOR,
    Polling,
    RawHTTP,
    closed,
    connected_websocket,
    masked_frame,
    receive_text,
    websocket,
)

HEARTBEAT = 1.0
# How far from the protocol's numbers a deadline may fire (the wheel's resolution is 20 ms).
PRECISION = 0.05


@pytest.fixture
def server_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, ping_interval_seconds=1, ping_timeout_seconds=1, connect_timeout_seconds=1)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def connected_polling(server: RunningServer, http: aiohttp.ClientSession) -> Polling:
    polling = Polling(http, server.url)
    await polling.open()
    await polling.connect(server.token("alice"))
    return polling


def acks_in(packets: list[str]) -> dict[int, dict]:
    """ACK packets (`43<id>[reply]`) by id."""
    found = {}
    for packet in packets:
        if packet.startswith("43"):
            digits = packet[2:].split("[", 1)[0]
            found[int(digits)] = orjson.loads(packet[2 + len(digits) :])[0]
    return found


# Payload framing: a polling POST split by the network


PING_EVENTS = '421["ping",{"n":1}]' + SEPARATOR + '422["ping",{"n":2}]'


@pytest.mark.parametrize("cut", range(1, len(PING_EVENTS.encode())))
async def test_a_polling_post_split_anywhere_is_read_whole(
    server: RunningServer, http: aiohttp.ClientSession, cut: int
) -> None:
    polling = await connected_polling(server, http)
    path = f"/socket.io/?EIO=4&transport=polling&sid={polling.sid}"

    async with RawHTTP(server.url) as raw:
        request = raw.post_bytes(path, PING_EVENTS.encode())
        await raw.send_in_pieces(request, [len(request) - len(PING_EVENTS.encode()) + cut])
        assert await raw.response() == (200, b"ok")

    packets = await polling.packets_until("432")
    acks = acks_in(packets)
    assert acks[1]["echo"] == {"n": 1} and acks[2]["echo"] == {"n": 2}


async def test_a_polling_post_in_many_small_pieces_is_read_whole(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    polling = await connected_polling(server, http)
    body = SEPARATOR.join(f'42{n}["ping",{{"n":{n}}}]' for n in range(1, 9)).encode()
    path = f"/socket.io/?EIO=4&transport=polling&sid={polling.sid}"

    async with RawHTTP(server.url) as raw:
        request = raw.post_bytes(path, body)
        head = len(request) - len(body)
        await raw.send_in_pieces(request, list(range(head + 7, len(request), 7)))
        assert await raw.response() == (200, b"ok")

    acks = acks_in(await polling.packets_until("438"))
    assert sorted(acks) == list(range(1, 9))


@pytest.mark.parametrize("cut", range(1, 24))
async def test_a_websocket_frame_split_anywhere_is_read_whole(server: RunningServer, cut: int) -> None:
    from benchmarks.hostile import raw_websocket

    reader, writer = await raw_websocket(server.url)
    try:
        writer.write(masked_frame(b"40" + orjson.dumps({"token": server.token("alice")})))
        frame = masked_frame(b'421["ping",{"n":7}]')
        writer.write(frame[:cut])
        await writer.drain()
        await asyncio.sleep(0.002)
        writer.write(frame[cut:])
        await writer.drain()
        received = b""
        while b'431[{"ok":true' not in received:
            received += await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()


async def test_a_fragmented_websocket_message_is_one_message(server: RunningServer, http) -> None:
    from benchmarks.hostile import raw_websocket

    reader, writer = await raw_websocket(server.url)
    try:
        writer.write(masked_frame(b"40" + orjson.dumps({"token": server.token("alice")})))
        whole = b'421["ping",{"n":8}]'
        # RFC 6455 section 5.4: a text frame without FIN, then a continuation frame with FIN.
        first = bytearray(masked_frame(whole[:5]))
        first[0] = 0x01  # text, not final
        last = bytearray(masked_frame(whole[5:]))
        last[0] = 0x80  # continuation, final
        writer.write(bytes(first) + bytes(last))
        received = b""
        while b'"n":8' not in received:
            received += await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()


# Payload framing: what a POST may carry


async def test_a_polling_post_over_max_payload_is_413_and_ends_the_session(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    polling = await connected_polling(server, http)
    too_big = "4" + "x" * server.settings.max_payload_bytes * 4

    status, body = await polling.post(too_big)

    assert status == 413 and orjson.loads(body)["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert (await polling.poll())[0] == 400


async def test_a_websocket_message_over_max_payload_closes_with_1009(server: RunningServer, http) -> None:
    ws = await connected_websocket(server, http)
    await ws.send_str("4" + "x" * (server.settings.max_payload_bytes * 4 + 1))
    message = await ws.receive(timeout=5)
    while message.type is aiohttp.WSMsgType.TEXT:
        message = await ws.receive(timeout=5)
    assert message.type is aiohttp.WSMsgType.CLOSE and message.data == 1009


async def test_binary_is_refused_clearly_over_polling(server: RunningServer, http) -> None:
    polling = await connected_polling(server, http)
    attachment = "b" + base64.b64encode(b"\x01\x02\x03").decode()
    event = '451-7["upload",{"_placeholder":true,"num":0}]'

    assert await polling.post(event + SEPARATOR + attachment) == (200, "ok")

    packets = await polling.packets_until("437")
    assert acks_in(packets)[7]["error"]["code"] == "INVALID_PAYLOAD"
    # The session goes on: the attachment was read past, not taken as a protocol error.
    assert await polling.post('422["ping",{}]') == (200, "ok")
    assert acks_in(await polling.packets_until("432"))[2]["ok"] is True


async def test_concurrent_posts_end_the_session(server: RunningServer, http) -> None:
    polling = await connected_polling(server, http)
    path = f"/socket.io/?EIO=4&transport=polling&sid={polling.sid}"
    async with RawHTTP(server.url) as raw:
        body = b'42["ping",{}]'
        request = raw.post_bytes(path, body)
        await raw.send_in_pieces(request[:-3], [])  # the first POST stalls mid-body

        status, _ = await polling.post('42["ping",{}]')

        assert status == 400
        assert (await polling.poll())[0] == 400


# Upgrade


async def test_after_an_upgrade_polling_requests_and_a_second_websocket_are_refused(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    polling = await connected_polling(server, http)
    ws = await websocket(http, server.url, sid=polling.sid)
    await ws.send_str("2probe")
    assert await receive_text(ws) == "3probe"
    await ws.send_str("5")

    assert (await polling.poll())[0] == 400
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await websocket(http, server.url, sid=polling.sid)
    await ws.send_str('421["ping",{}]')
    assert (await receive_text(ws)).startswith("431")
    await ws.close()


# Heartbeat, to the protocol's numbers


async def test_websocket_heartbeat_runs_to_the_announced_interval_and_timeout(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    ws = await websocket(http, server.url)
    opened = time.monotonic()
    await receive_text(ws)
    await ws.send_str("40" + orjson.dumps({"token": server.token("alice")}).decode())
    assert (await receive_text(ws)).startswith("40")
    assert (await receive_text(ws)).startswith('42["session"')

    assert await receive_text(ws, skip_pings=False) == "2"
    first_ping = time.monotonic()
    assert abs(first_ping - opened - HEARTBEAT) < PRECISION, first_ping - opened
    await ws.send_str("3")
    answered = time.monotonic()

    assert await receive_text(ws, skip_pings=False) == "2"
    second_ping = time.monotonic()
    assert abs(second_ping - answered - HEARTBEAT) < PRECISION, second_ping - answered

    # No PONG now: closed one ping timeout after that ping.
    assert await closed(ws, within=3)
    assert abs(time.monotonic() - second_ping - HEARTBEAT) < PRECISION


async def test_polling_heartbeat_runs_to_the_announced_interval_and_timeout(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    polling = Polling(http, server.url)
    opened = time.monotonic()
    await polling.open()
    await polling.connect(server.token("alice"))

    status, body = await polling.poll()
    pinged = time.monotonic()
    assert (status, body) == (200, "2")
    assert abs(pinged - opened - HEARTBEAT) < PRECISION, pinged - opened

    # Unanswered: the session is gone one timeout later, and a poll then is refused.
    waiting = asyncio.create_task(polling.poll())
    status, body = await asyncio.wait_for(waiting, 3)
    ended = time.monotonic()
    assert (status, body) == (200, "1")  # the pending poll carries the CLOSE packet
    assert abs(ended - pinged - HEARTBEAT) < PRECISION, ended - pinged
    assert (await polling.poll())[0] == 400


async def test_every_poll_is_answered_within_interval_plus_timeout(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    polling = await connected_polling(server, http)
    for _ in range(3):
        started = time.monotonic()
        status, body = await polling.poll()
        assert status == 200
        assert time.monotonic() - started <= 2 * HEARTBEAT + PRECISION
        if body == "2":
            assert await polling.post("3") == (200, "ok")


# A long-polling client that stops polling


async def test_a_polling_session_without_a_poll_for_the_gap_is_closed(tmp_path: Path) -> None:
    gap = 0.5
    server, runner = await start_server(make_settings(tmp_path, polling_gap_seconds=gap))
    try:
        async with aiohttp.ClientSession() as http:
            steady = Polling(http, server.url)
            await steady.open()
            await steady.connect(server.token("alice"))
            gone = Polling(http, server.url)
            await gone.open()
            await gone.connect(server.token("bob"))
            # The one that keeps polling (each poll waits for the 1 s heartbeat) stays.
            deadline = time.monotonic() + 4 * gap
            while time.monotonic() < deadline:
                status, body = await steady.poll()
                assert status == 200, body
                if body == "2":
                    assert await steady.post("3") == (200, "ok")
            assert (await gone.poll())[0] == 400
            status, body = await server.http("GET", "/api/v1/status", ADMIN["Authorization"][7:])
            assert body["sessions"] == {"websocket": 0, "polling": 1}, body
    finally:
        await stop_server(server, runner)


async def test_an_upgrading_session_is_not_closed_for_not_polling(tmp_path: Path) -> None:
    gap = 0.5
    server, runner = await start_server(make_settings(tmp_path, polling_gap_seconds=gap))
    try:
        async with aiohttp.ClientSession() as http:
            polling = Polling(http, server.url)
            await polling.open()
            await polling.connect(server.token("alice"))
            ws = await websocket(http, server.url, polling.sid)
            await ws.send_str("2probe")
            assert await receive_text(ws) == "3probe"
            # The client waits before it completes the upgrade, polling no more meanwhile.
            await asyncio.sleep(3 * gap)
            await ws.send_str("5")
            await ws.send_str('421["subscribe",{"rooms":["user:alice"]}]')
            answer = await receive_text(ws)
            assert answer.startswith("431") and '"ok":true' in answer, answer
            await ws.close()
    finally:
        await stop_server(server, runner)


# A stalled long-polling client under publishing


async def test_a_stalled_poller_is_cut_and_costs_publishers_and_bystanders_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_backlog_events=20)
    server, runner = await start_server(settings)
    try:
        bystander = await server.connect("bob", projects=["p1"])
        assert (await bystander.call("subscribe", {"rooms": ["project:p1"]}))["ok"]
        async with aiohttp.ClientSession() as http:
            stalled = Polling(http, server.url)
            await stalled.open()
            await stalled.connect(server.token("carol", projects=["p1"]))
            assert await stalled.post('421["subscribe",{"rooms":["project:p1"]}]') == (200, "ok")
            assert acks_in(await stalled.packets_until("431"))[1]["ok"]
            # From here on it never polls again.

            publisher = server.token("worker", role="publisher")
            for n in range(60):
                status, answer = await asyncio.wait_for(
                    server.http(
                        "POST",
                        "/api/v1/publish",
                        publisher,
                        json={"room": "project:p1", "type": "tick", "data": {"n": n}},
                    ),
                    5,
                )
                assert status == 201, answer

            await bystander.wait_until(lambda: len(bystander.of_type("tick")) == 60, what="60 ticks")
            assert [e["data"]["n"] for e in bystander.of_type("tick")] == list(range(60))
            # The stalled session was cut as a slow consumer; its next poll is refused.
            assert (await stalled.poll())[0] == 400
            status, _ = await server.http("GET", "/api/v1/status", ADMIN["Authorization"][7:])
            assert status == 200
    finally:
        await stop_server(server, runner)


# Socket.IO, as its protocol document writes it


async def test_connect_to_the_main_and_a_custom_namespace_on_one_session(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    ws = await connected_websocket(server, http)
    worker = orjson.dumps({"token": server.token("w", role="publisher")}).decode()
    await ws.send_str("40/workers," + worker)
    answer = await receive_text(ws)
    assert answer.startswith("40/workers,") and orjson.loads(answer.split(",", 1)[1])["sid"]
    await ws.send_str('40/workers,1["ping",{}]'.replace("40/workers,1", "42/workers,1"))
    assert (await receive_text(ws)).startswith("43/workers,1[")
    # Leaving one namespace keeps the session for the other.
    await ws.send_str("41/workers,")
    await ws.send_str('422["ping",{}]')
    assert (await receive_text(ws)).startswith("432[")
    await ws.close()


async def test_an_unknown_namespace_is_refused_as_the_reference_server_words_it(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    ws = await connected_websocket(server, http)
    await ws.send_str("40/random,")
    answer = await receive_text(ws)
    assert answer.startswith("44/random,")
    body = orjson.loads(answer.split(",", 1)[1])
    assert body["message"] == "Invalid namespace" and body["data"]["code"] == "NOT_FOUND"
    await ws.close()


async def test_an_acked_event_gets_an_ack_with_its_id(server: RunningServer, http) -> None:
    ws = await connected_websocket(server, http)
    await ws.send_str('4212345["ping",{"x":1}]')
    answer = await receive_text(ws)
    assert answer.startswith("4312345[")
    assert orjson.loads(answer[len("4312345") :])[0]["echo"] == {"x": 1}
    await ws.close()


async def test_websocket_ping_frames_are_answered_with_pong_frames(server: RunningServer, http) -> None:
    ws = await connected_websocket(server, http)
    await ws.ping(b"hello")
    message = await ws.receive(timeout=5)
    while message.type is aiohttp.WSMsgType.TEXT:
        message = await ws.receive(timeout=5)
    assert message.type is aiohttp.WSMsgType.PONG and message.data == b"hello"
    await ws.close()


async def test_sessions_are_forgotten_when_they_end(server: RunningServer, http) -> None:
    for _ in range(5):
        ws = await connected_websocket(server, http)
        await ws.close()
    polling = await connected_polling(server, http)
    assert await polling.post("1") == (200, "ok")
    engine = server.app[ENGINE]

    await until(lambda: not engine.sessions, timeout=5)
    assert len(engine.deadlines) == 0, "the time wheel still holds ended sessions"


async def test_an_unmasked_client_frame_closes_with_1002(server: RunningServer) -> None:
    from benchmarks.hostile import raw_websocket
    from notifier.wire.packets import websocket_frame

    reader, writer = await raw_websocket(server.url)
    try:
        writer.write(websocket_frame(b"40"))  # server-style: no mask
        received = b""
        while b"\x88" not in received[:1] and len(received) < 4:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                break
            received += chunk
        close_at = received.find(b"\x88\x02")
        assert close_at >= 0, received
        assert received[close_at + 2 : close_at + 4] == (1002).to_bytes(2, "big")
    finally:
        writer.close()
