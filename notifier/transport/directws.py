"""Engine.IO packets written straight to a websocket's transport, from the send queue itself.

Server-to-client websocket frames are not masked, so one broadcast's frame bytes are the same
for every websocket recipient. python-engineio instead queues each packet per connection and
wakes a writer task per connection per message, which measured 4-7x slower than writing, and
keeps that writer task (and a task waiting on the queue) alive for every idle connection.

`DirectQueue` replaces a socket's send queue. While the socket is on long-polling it is a plain
queue that engineio's poll reads. Once a websocket session takes it over (see websession), a
packet put on it is framed and written to the transport at once, in the caller's turn; only
when the transport holds a backlog does it wait here, in order, for a drain task started for
the occasion. There is no writer task per connection.
"""

from __future__ import annotations

import asyncio
import collections
import struct
import time
from typing import Any

import engineio
from aiohttp.web import WebSocketResponse
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket

# Past this many bytes waiting in a transport, packets wait in the queue, where the
# slow-consumer limit (fanout) sees them.
_TRANSPORT_BACKLOG_BYTES = 256 * 1024

_TEXT, _BINARY = 0x1, 0x2

_NO_PUTTERS: collections.deque[Any] = collections.deque(maxlen=0)


class FramedPacket(eio_packet.Packet):  # type: ignore[misc]
    """An Engine.IO MESSAGE packet encoded once, with its websocket text frame built once."""

    def __init__(self, encoded_message: str) -> None:
        super().__init__(eio_packet.MESSAGE, encoded_message)
        self._encoded = super().encode()
        self.frame = websocket_frame(self._encoded.encode())

    def encode(self, b64: bool = False) -> Any:
        return self._encoded


def websocket_frame(payload: bytes, opcode: int = _TEXT) -> bytes:
    """An unmasked, final, uncompressed websocket frame (RFC 6455 section 5.2)."""
    length = len(payload)
    first = 0x80 | opcode
    if length < 126:
        header = struct.pack("!BB", first, length)
    elif length < 65536:
        header = struct.pack("!BBH", first, 126, length)
    else:
        header = struct.pack("!BBQ", first, 127, length)
    return header + payload


def packet_frame(pkt: eio_packet.Packet) -> bytes:
    if isinstance(pkt, FramedPacket):
        return pkt.frame
    encoded = pkt.encode()
    if isinstance(encoded, str):
        return websocket_frame(encoded.encode())
    return websocket_frame(encoded, _BINARY)


class DirectQueue(asyncio.Queue[Any]):
    """A socket's send queue that, once a websocket takes it over, writes packets itself."""

    def __init__(self) -> None:
        super().__init__()
        # An unbounded queue never has waiting putters; one shared empty deque instead of a
        # ~700-byte one per connection.
        self._putters = _NO_PUTTERS
        self._websocket: WebSocketResponse | None = None
        self._transport: asyncio.Transport | None = None
        self._protocol: Any = None
        self._drainer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[Any] | None = None

    @property
    def direct(self) -> bool:
        return self._transport is not None

    def take_over(self, websocket: WebSocketResponse) -> None:
        """From now on write to `websocket`, starting with whatever is queued."""
        writer = websocket._writer
        assert writer is not None, "the websocket is prepared before it takes over"
        self._websocket = websocket
        self._transport = writer.transport
        self._protocol = writer.protocol
        if not self._flush():
            self._start_drain()

    def abort(self) -> None:
        """Drop the connection at once, whatever is still unsent (for a client gone silent)."""
        if self._transport is not None:
            self._transport.abort()

    def put_nowait(self, item: Any) -> None:
        if self._transport is None:
            super().put_nowait(item)  # long-polling: engineio's poll() takes it from here
        elif item is None:
            # engineio's "writer, stop": with no writer, close the websocket instead.
            self._close_websocket()
        elif self._transport.is_closing():
            pass  # the connection is gone; a reconnecting client recovers what it missed
        elif not self._queue and self._has_room():
            self._transport.write(packet_frame(item))
        else:
            super().put_nowait(item)
            self._start_drain()

    def _has_room(self) -> bool:
        assert self._transport is not None
        return self._transport.get_write_buffer_size() < _TRANSPORT_BACKLOG_BYTES

    def _flush(self) -> bool:
        """Write the backlog while the transport has room; True when nothing is left."""
        transport = self._transport
        assert transport is not None
        if transport.is_closing():
            self._discard()
        while self._queue and self._has_room():
            transport.write(packet_frame(self.get_nowait()))
            self.task_done()
        return not self._queue

    def _start_drain(self) -> None:
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """Write the backlog, in order, as fast as the client reads it."""
        try:
            while not self._flush():
                try:
                    await self._protocol._drain_helper()  # until the transport resumes writing
                except ConnectionError:
                    self._discard()
                    return
                if not self._has_room():
                    await asyncio.sleep(0.01)  # resumed, yet full again: let others write
        finally:
            self._drainer = None  # no finished task kept per idle connection

    def _discard(self) -> None:
        """Forget the backlog of a connection that is gone, so that queue.join() returns."""
        while self._queue:
            self.get_nowait()
            self.task_done()

    def _close_websocket(self) -> None:
        if self._closer is None and self._websocket is not None:
            self._closer = asyncio.get_running_loop().create_task(self._websocket.close())


class DirectQueueEngineIO(engineio.AsyncServer):  # type: ignore[misc]
    """engineio's server, giving every socket a DirectQueue and pinging it from a timer.

    engineio pings each socket from a task that sleeps for the ping interval: one task, its
    coroutine and context alive per idle connection. A timer handle does the same job.
    """

    def create_queue(self, *args: Any, **kwargs: Any) -> DirectQueue:
        return DirectQueue()

    def start_background_task(self, target: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(target, "__func__", None) is AsyncSocket._send_ping:
            loop = asyncio.get_running_loop()
            return loop.call_later(self.ping_interval, _ping, target.__self__)
        return super().start_background_task(target, *args, **kwargs)


def _ping(socket: AsyncSocket) -> None:
    """engineio's _send_ping, after its sleep, without a task."""
    if not socket.closing and not socket.closed:
        socket.last_ping = time.time()
        socket.queue.put_nowait(eio_packet.Packet(eio_packet.PING))
