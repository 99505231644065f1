"""Engine.IO and Socket.IO by hand, for tests that must see the wire: long-polling requests,
websockets without a Socket.IO client in between, and raw HTTP whose bytes arrive in pieces."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from benchmarks.hostile import masked_frame

WAIT = 5.0
SEPARATOR = "\x1e"


class Polling:
    """A long-polling Engine.IO session, by hand."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.base = f"{url}/socket.io/?EIO=4&transport=polling"
        self.sid = ""

    async def open(self) -> dict:
        async with self.http.get(self.base) as response:
            assert response.status == 200
            body = await response.text()
        assert body.startswith("0")
        handshake = orjson.loads(body[1:])
        self.sid = handshake["sid"]
        return handshake

    async def poll(self) -> tuple[int, str]:
        async with self.http.get(f"{self.base}&sid={self.sid}") as response:
            return response.status, await response.text()

    async def post(self, body: str | bytes) -> tuple[int, str]:
        async with self.http.post(f"{self.base}&sid={self.sid}", data=body) as response:
            return response.status, await response.text()

    async def connect(self, token: str) -> str:
        """CONNECT to `/` with a token; the CONNECT answer (and whatever came with it)."""
        assert await self.post("40" + orjson.dumps({"token": token}).decode()) == (200, "ok")
        status, body = await self.poll()
        assert status == 200 and body.startswith("40"), body
        return body

    async def packets_until(self, wanted: str, timeout: float = WAIT) -> list[str]:
        """Poll until a packet that starts with `wanted` has arrived; every packet so far."""
        seen: list[str] = []

        async def collect() -> list[str]:
            while True:
                status, body = await self.poll()
                assert status == 200, (status, body)
                seen.extend(body.split(SEPARATOR))
                if any(packet.startswith(wanted) for packet in seen):
                    return seen

        return await asyncio.wait_for(collect(), timeout)


async def websocket(
    http: aiohttp.ClientSession, url: str, sid: str | None = None
) -> aiohttp.ClientWebSocketResponse:
    query = "EIO=4&transport=websocket" + (f"&sid={sid}" if sid else "")
    return await http.ws_connect(f"{url}/socket.io/?{query}", autoping=False)


async def receive_text(ws: aiohttp.ClientWebSocketResponse, skip_pings: bool = True) -> str:
    while True:
        message = await ws.receive(timeout=WAIT)
        if message.type is not aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"expected text, got {message.type}")
        if not (skip_pings and message.data == "2"):
            return str(message.data)


async def closed(ws: aiohttp.ClientWebSocketResponse, within: float = WAIT) -> bool:
    while True:
        message = await ws.receive(timeout=within)
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            return True


async def connected_websocket(
    server: Any, http: aiohttp.ClientSession, user: str = "alice"
) -> aiohttp.ClientWebSocketResponse:
    """A websocket session connected to `/` as `user`, past its CONNECT answer and `session`."""
    ws = await websocket(http, server.url)
    await receive_text(ws)
    await ws.send_str("40" + orjson.dumps({"token": server.token(user)}).decode())
    connect = await receive_text(ws)
    assert connect.startswith("40{") and "sid" in orjson.loads(connect[2:])
    assert (await receive_text(ws)).startswith('42["session"')
    return ws


class RawHTTP:
    """One HTTP/1.1 connection whose request bytes go out in the pieces a test chooses, each
    its own TCP segment (the server reads them separately, as over a real network)."""

    def __init__(self, url: str) -> None:
        self.parts = urlsplit(url)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> RawHTTP:
        self.reader, self.writer = await asyncio.open_connection(self.parts.hostname, self.parts.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.writer is not None
        self.writer.close()

    def post_bytes(self, path: str, body: bytes) -> bytes:
        return (
            f"POST {path} HTTP/1.1\r\nHost: {self.parts.netloc}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def send_in_pieces(self, data: bytes, cuts: list[int]) -> None:
        assert self.writer is not None
        previous = 0
        for cut in [*cuts, len(data)]:
            self.writer.write(data[previous:cut])
            await self.writer.drain()
            previous = cut
            if cut < len(data):
                # A pause the size of a network hop: the server reads what has come so far.
                await asyncio.sleep(0.002)

    async def response(self) -> tuple[int, bytes]:
        assert self.reader is not None
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), WAIT)
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await asyncio.wait_for(self.reader.readexactly(length), WAIT)
        return status, body


__all__ = ["Polling", "RawHTTP", "closed", "connected_websocket", "masked_frame", "receive_text", "websocket"]
