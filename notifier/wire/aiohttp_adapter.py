"""The one place the wire layer leans on aiohttp's private parts (aiohttp 3.14.x: see
README.md); tests/test_wire_aiohttp_adapter.py fails loudly if an upgrade moves any of them.

1. `take_transport`: after a websocket handshake, the TCP transport leaves aiohttp. An idle
   connection then costs a transport and a small protocol object instead of aiohttp's request,
   response, reader, writer, HTTP parser and the handler's task (measured: 27 KB -> about 4 KB
   per idle websocket, docs/performance.md).
2. `new_frame_reader`: aiohttp's C websocket frame parser, fed by that protocol; it handles
   masking, fragmentation, control frames and size limits.
3. `GuardedRunner`: an AppRunner whose connections answer HTTP protocol errors (a header line
   over 8 KB, a malformed request) with the owner's JSON error body and one report instead
   of aiohttp's plain text and a traceback, and close connections whose request headers do
   not arrive within the header timeout (slow-header clients).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web, web_protocol, web_server
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
from aiohttp.http import WSMessage

from .codes import WireCode
from .limits import ConnectionLimits, OpenConnections

MessageHandler = Callable[[WSMessage], None]
FailureHandler = Callable[[BaseException], None]
# (code, message) -> the body of a JSON error answer
ErrorBody = Callable[[WireCode, str], bytes]


def take_transport(request: web.BaseRequest) -> tuple[asyncio.Transport, bytes]:
    """Detach the request's connection from aiohttp; return it with any bytes read past the
    request (a client may send its first frames right behind the handshake).

    aiohttp's request loop for this connection ends after the current request, without
    closing the transport it no longer holds. The caller must `set_protocol` at once.
    """
    handler = request.protocol
    transport = request.transport
    if not isinstance(handler, web_protocol.RequestHandler) or transport is None:
        raise ConnectionResetError("the connection is already gone")
    tail = handler._message_tail
    handler._message_tail = b""
    # The keep-alive timer (an hour by default) would otherwise keep the handler, its parser
    # and its finished task alive for as long as the websocket lives.
    handler.keep_alive(False)
    if handler._manager is not None:
        handler._manager.connection_lost(handler, None)
    handler.transport = None  # aiohttp closes only the transport it holds
    handler.force_close()  # its request loop ends after this request
    return transport, tail


class _MessageSink(WebSocketDataQueue):
    """Where aiohttp's reader puts each complete message: straight to our callbacks.

    (aiohttp's own queue buffers messages for an awaiting reader task; there is none here.)
    """

    __slots__ = ("_on_failure", "_on_message")
    _on_message: MessageHandler
    _on_failure: FailureHandler

    def feed_data(self, data: Any, size: int) -> None:
        self._on_message(data)

    def set_exception(self, exc: BaseException, exc_cause: Any = None) -> None:
        self._on_failure(exc)

    def feed_eof(self) -> None:
        pass


class _Owner:
    """What the sink tells about flow control; the reader never pauses a callback sink."""

    __slots__ = ()
    _reading_paused = False

    def pause_reading(self) -> None:  # pragma: no cover - the sink never buffers
        pass


_OWNER = _Owner()


def new_frame_reader(
    on_message: MessageHandler,
    on_failure: FailureHandler,
    max_message_bytes: int,
    loop: asyncio.AbstractEventLoop | None = None,
) -> WebSocketReader:
    """A websocket frame reader: `feed_data(bytes)` calls `on_message` for every complete
    message (text as str, binary as bytes, close/ping/pong) or `on_failure` once."""
    owner: Any = _OWNER  # aiohttp types it as its own protocol; only these two members are used
    sink = _MessageSink(owner, max_message_bytes, loop=loop or asyncio.get_running_loop())
    sink._on_message = on_message
    sink._on_failure = on_failure
    return WebSocketReader(sink, max_message_bytes, False, True)


# HTTP protocol errors and slow headers


def _raw_response(status: int, reason: str, body: bytes, extra_headers: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra_headers}Connection: close\r\n\r\n"
    ).encode() + body


class _GuardedRequestHandler(web_protocol.RequestHandler):
    """aiohttp's connection handler with JSON protocol errors and a header read timeout.

    Its settings come from the server that made it (`_GuardedServer`).
    """

    __slots__ = ("_header_timer", "_peer_host", "_settings")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._header_timer: asyncio.TimerHandle | None = None
        self._peer_host: str | None = None  # counted in the server's open connections
        assert isinstance(self._manager, _GuardedServer)
        self._settings: _GuardedServer = self._manager
        super().connection_made(transport)
        if self._settings.over_peer_limit(self._peer_host):
            self._refuse_busy(transport)
            return
        self._start_header_timer()

    def _refuse_busy(self, transport: asyncio.BaseTransport) -> None:
        """One address holds too many connections already: answered and closed at once."""
        settings = self._settings
        settings.on_protocol_error(
            "too_many_connections", "too many connections from one address", self._peer_host
        )
        body = settings.error_body(WireCode.BUSY, "too many connections from your address")
        extra = f"Retry-After: {settings.limits.retry_after}\r\n"
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_raw_response(503, "Service Unavailable", body, extra))
        self.force_close()

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        if self._header_timer is None and not self._request_in_progress and data:
            self._start_header_timer()  # a new request on a kept-alive connection begins
        super().data_received(data)
        if self._request_count != before and self._header_timer is not None:
            self._header_timer.cancel()  # its headers are complete
            self._header_timer = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def _start_header_timer(self) -> None:
        self._header_timer = self._loop.call_later(self._settings.header_timeout, self._headers_too_slow)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        transport = self.transport
        if transport is None or transport.is_closing() or self._request_in_progress:
            return
        peer = transport.get_extra_info("peername")
        self._settings.on_protocol_error("header_timeout", "request headers took too long", peer)
        body = self._settings.error_body(WireCode.TIMED_OUT, "the request headers did not arrive in time")
        transport.write(_raw_response(408, "Request Timeout", body))
        self.force_close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Protocol errors the client caused: one log line, our JSON shape, no traceback."""
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        detail = getattr(exc, "message", None) or message or "bad request"
        self._settings.on_protocol_error(
            "bad_http_request", str(detail).splitlines()[0][:200], request.remote
        )
        code = WireCode.TOO_LARGE if status == 413 else WireCode.MALFORMED
        body = self._settings.error_body(code, f"malformed HTTP request: {detail}"[:300])
        response = web.Response(
            status=status,
            body=body,
            content_type="application/json",
        )
        response.force_close()
        return response


ProtocolErrorHandler = Callable[[str, str, Any], None]


class _GuardedServer(web_server.Server):
    """aiohttp's low-level server, making `_GuardedRequestHandler`s."""

    header_timeout: float = 10.0
    on_protocol_error: ProtocolErrorHandler
    error_body: ErrorBody
    open: OpenConnections
    limits: ConnectionLimits

    def connection_made(self, handler: web_protocol.RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if isinstance(handler, _GuardedRequestHandler):
            peer = transport.get_extra_info("peername")
            handler._peer_host = str(peer[0]) if isinstance(peer, tuple) else "unix"
            self.open.http_opened(handler._peer_host)

    def connection_lost(self, handler: web_protocol.RequestHandler, exc: BaseException | None = None) -> None:
        # Also what `take_transport` calls when a websocket leaves aiohttp: counted once.
        if isinstance(handler, _GuardedRequestHandler) and handler._peer_host is not None:
            self.open.http_closed(handler._peer_host)
            handler._peer_host = None
        super().connection_lost(handler, exc)

    def over_peer_limit(self, peer: str | None) -> bool:
        limits = self.limits
        return (
            peer is not None
            and peer not in limits.exempt
            and self.open.http_by_peer[peer] > limits.max_http_per_peer
        )

    def __call__(self) -> web_protocol.RequestHandler:
        return _GuardedRequestHandler(self, loop=self._loop, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """An AppRunner whose connections use `_GuardedRequestHandler`."""

    def __init__(
        self,
        app: web.Application,
        *,
        header_timeout: float,
        on_protocol_error: ProtocolErrorHandler,
        error_body: ErrorBody,
        open_connections: OpenConnections | None = None,
        limits: ConnectionLimits | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout
        self._on_protocol_error = on_protocol_error
        self._error_body = error_body
        # Shared with the engine, which counts the websockets that left aiohttp.
        self.open_connections = open_connections or OpenConnections()
        self._limits = limits or ConnectionLimits()

    async def _make_server(self) -> web_server.Server:
        server = await super()._make_server()
        # The same object with our connection factory: aiohttp takes no handler class.
        server.__class__ = _GuardedServer
        assert isinstance(server, _GuardedServer)
        server.header_timeout = self._header_timeout
        server.on_protocol_error = self._on_protocol_error
        server.error_body = self._error_body
        server.open = self.open_connections
        server.limits = self._limits
        return server
