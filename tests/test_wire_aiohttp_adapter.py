"""notifier/transport/aiohttp_adapter.py leans on aiohttp's private parts. These tests fail by
name when an aiohttp upgrade moves one of them, instead of letting the service misbehave."""

from __future__ import annotations

import asyncio
import gc

import aiohttp
import pytest
from aiohttp import WSMsgType, web, web_protocol, web_server
from aiohttp._websocket.reader import WebSocketDataQueue

from benchmarks.hostile import masked_frame
from notifier.transport.wire_errors import http_error_body
from notifier.wire.aiohttp_adapter import GuardedRunner, new_frame_reader, take_transport


def test_the_private_attributes_we_use_still_exist() -> None:
    slots = set()
    for cls in web_protocol.RequestHandler.__mro__:
        slots.update(getattr(cls, "__slots__", ()))
    for name in (
        "_message_tail",
        "_manager",
        "_request_count",
        "_request_in_progress",
        "_keepalive_handle",
        "transport",
        "_loop",
    ):
        assert name in slots, f"aiohttp's RequestHandler no longer has {name}"
    for method in ("keep_alive", "force_close", "handle_error", "connection_made", "data_received"):
        assert callable(getattr(web_protocol.RequestHandler, method)), method
    assert callable(web_server.Server.connection_lost)
    assert callable(web.AppRunner._make_server)
    assert "feed_data" in dir(WebSocketDataQueue)


async def test_the_frame_reader_calls_back_with_whole_messages() -> None:
    messages, failures = [], []
    reader = new_frame_reader(messages.append, failures.append, 1024)

    frames = masked_frame(b'42["hi"]') + masked_frame(b"\x01\x02", opcode=0x2)
    reader.feed_data(frames[:3])  # a frame split across reads
    reader.feed_data(frames[3:])
    reader.feed_data(masked_frame(b"x" * 2000))  # over the limit

    assert [(m.type, m.data) for m in messages] == [
        (WSMsgType.TEXT, '42["hi"]'),
        (WSMsgType.BINARY, b"\x01\x02"),
    ]
    assert len(failures) == 1


async def test_a_detached_connection_outlives_aiohttps_handler() -> None:
    """take_transport: the socket stays open and aiohttp lets go of everything for it."""
    detached: list[asyncio.Transport] = []

    class Echo(asyncio.Protocol):
        def __init__(self, transport: asyncio.Transport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data.upper())

    async def hijack(request: web.Request) -> web.StreamResponse:
        transport, _ = take_transport(request)
        transport.write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        transport.set_protocol(Echo(transport))
        detached.append(transport)
        return web.Response(status=101)

    app = web.Application()
    app.router.add_get("/", hijack)
    runner = web.AppRunner(app)
    port = await _listen(runner)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.readexactly(5), 2) == b"HELLO"
        await asyncio.sleep(0.05)
        gc.collect()
        handlers = [o for o in gc.get_objects() if isinstance(o, web_protocol.RequestHandler)]
        assert handlers == [], "aiohttp's handler (and its task, parser) stay alive"
        assert runner.server is not None and runner.server.connections == []
        writer.close()
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
)
async def test_the_runner_answers_protocol_errors_with_json(request_bytes: bytes) -> None:
    errors: list[tuple[str, str]] = []
    app = web.Application()
    runner = GuardedRunner(
        app,
        header_timeout=5,
        error_body=http_error_body,
        on_protocol_error=lambda reason, detail, peer: errors.append((reason, detail)),
    )
    port = await _listen(runner)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes)
        answer = await asyncio.wait_for(reader.read(), 2)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split(b" ")[1] == b"400"
        assert b"application/json" in head and b'"code":"INVALID_PAYLOAD"' in body
        assert errors and errors[0][0] == "bad_http_request"
        writer.close()
    finally:
        await runner.cleanup()


async def test_a_regular_request_is_untouched_by_the_runner() -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/", hello)
    runner = GuardedRunner(
        app, header_timeout=5, error_body=http_error_body, on_protocol_error=lambda *_: None
    )
    port = await _listen(runner)
    try:
        url = f"http://127.0.0.1:{port}/"
        async with aiohttp.ClientSession() as http:
            for _ in range(3):  # kept alive between requests
                async with http.get(url) as response:
                    assert await response.json() == {"ok": True}
    finally:
        await runner.cleanup()


async def _listen(runner: web.AppRunner) -> int:
    """Set the runner up on an ephemeral loopback port and return the port."""
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return int(runner.addresses[0][1])
