"""A client that stops reading is dropped, instead of growing the server's memory."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest

from notifier import Settings
from notifier.keys import GATEWAY
from notifier.models import PublishRequest
from tests.conftest import RunningServer, make_settings


@pytest.fixture
def server_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, max_backlog_events=50)


def masked_text_frame(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    body = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    assert len(payload) < 65536
    header = struct.pack("!BBH", 0x81, 0x80 | 126, len(payload))
    return header + mask + body


async def stalled_client(url: str, token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A websocket Socket.IO client, by hand, that will read nothing after connecting."""
    parts = urlsplit(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fill up quickly
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
            f"Host: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    await reader.readexactly(2)  # the OPEN frame's header ...
    writer.write(masked_text_frame("40" + orjson.dumps({"token": token}).decode()))
    await writer.drain()
    return reader, writer


async def test_a_client_that_stops_reading_is_disconnected(server: RunningServer) -> None:
    healthy = await server.connect("bob")
    gateway = server.app[GATEWAY]
    _, writer = await stalled_client(server.url, server.token("mallory"))

    async def connections(count: int) -> None:
        while gateway.connection_counts()["/"] != count:  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    await asyncio.wait_for(connections(2), 5)
    blob = "x" * 16_000
    for n in range(1, 1501):
        await server.notifier.publish(PublishRequest(room="*", type="bulk", data={"n": n, "b": blob}))
        if n % 20 == 0:
            # Paced by the healthy reader, which must never fall 50 events behind.
            await healthy.next_event("bulk", count=n, timeout=10)

    await asyncio.wait_for(connections(1), 15)
    await healthy.next_event("bulk", count=1500, timeout=30)
    assert [event["data"]["n"] for event in healthy.of_type("bulk")] == list(range(1, 1501))
    assert healthy.sio.connected
    writer.close()
