"""python-socketio server and manager, adjusted at three documented seams."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import socketio
from aiohttp.web import WebSocketResponse
from engineio.async_drivers import aiohttp as eio_aiohttp
from socketio import packet as sio_packet

from ..errors import ErrorCode, error_body
from . import jsonlib
from .directws import DirectQueue, DirectQueueEngineIO
from .websession import serve_websocket

log = logging.getLogger("notifier.server")


class NotifierManager(socketio.AsyncManager):
    """Calls `on_connected(sid, namespace)` right after the CONNECT packet is queued.

    That is the first moment a connection may be sent events; the gateway uses it to send the
    `session` event and the replay before any live event.
    """

    on_connected: Callable[[str, str], None] | None = None

    async def connect(self, sid: str, namespace: str) -> Any:
        result = await super().connect(sid, namespace)
        if self.on_connected is not None:
            self.on_connected(sid, namespace)
        return result


class _UncompressedWebSocket(eio_aiohttp.WebSocket):  # type: ignore[misc]
    """Engine.IO's aiohttp websocket without permessage-deflate, served by websession.

    aiohttp enables deflate by default: ~90 KB of zlib state per connection and CPU on every
    frame, for small JSON notifications that gain nothing from it (see docs/performance.md).
    """

    async def __call__(self, environ: dict[str, Any]) -> WebSocketResponse:
        request = environ["aiohttp.request"]
        self._sock = WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size, compress=False
        )
        await self._sock.prepare(request)
        self.environ = environ
        socket = getattr(self.handler, "__self__", None)  # the engineio socket being served
        if socket is not None and isinstance(socket.queue, DirectQueue):
            await serve_websocket(socket, self._sock)
        else:
            await self.handler(self)
        return self._sock


class NotifierServer(socketio.AsyncServer):
    """Refuses oversized events with a PAYLOAD_TOO_LARGE ack, without decoding their JSON."""

    def _engineio_server_class(self) -> type[DirectQueueEngineIO]:
        return DirectQueueEngineIO

    def __init__(self, *, max_event_bytes: int, **kwargs: Any) -> None:
        super().__init__(client_manager=NotifierManager(), json=jsonlib, **kwargs)
        self.max_event_bytes = max_event_bytes
        self.eio._async = {**self.eio._async, "websocket": _UncompressedWebSocket}

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        if (
            isinstance(data, str)
            and len(data) > self.max_event_bytes
            and eio_sid not in self._binary_packet
        ):
            header = _event_header(data)
            if header is not None:
                namespace, ack_id = header
                log.info("event=payload_too_large bytes=%d namespace=%s", len(data), namespace)
                if ack_id is not None:
                    reply = error_body(
                        ErrorCode.PAYLOAD_TOO_LARGE,
                        f"event is {len(data)} bytes; the limit is {self.max_event_bytes}",
                    )
                    await self._send_packet(eio_sid, self.packet_class(
                        sio_packet.ACK, namespace=namespace, id=ack_id, data=[reply]
                    ))
                return
        await super()._handle_eio_message(eio_sid, data)


def _event_header(encoded: str) -> tuple[str, int | None] | None:
    """Namespace and ack id of an encoded EVENT packet (`2[/ns,][id][...]`); None otherwise."""
    if not encoded.startswith(str(sio_packet.EVENT)):
        return None
    position = 1
    namespace = "/"
    if encoded.startswith("/", position):
        comma = encoded.find(",", position)
        if comma < 0:
            return None
        namespace = encoded[position:comma]
        position = comma + 1
    digits_end = position
    while digits_end < len(encoded) and encoded[digits_end].isdigit() and digits_end - position < 18:
        digits_end += 1
    ack_id = int(encoded[position:digits_end]) if digits_end > position else None
    return namespace, ack_id
