"""Engine.IO packets written straight to a websocket's transport, from the send queue itself.

Server-to-client websocket frames are not masked, so one broadcast's frame bytes are the same
for every websocket recipient. python-engineio instead queues each packet per connection and
wakes a writer task per connection per message, which measured 4-7x slower than writing, and
keeps that writer task (and a task waiting on the queue) alive for every idle connection.

`DirectQueue` replaces a socket's send queue. While the socket is on long-polling it is a plain
queue that engineio's poll reads. Once a websocket session takes it over (see websession), a
packet put on it is framed at once and written to the transport with the connection's other
frames of the same loop iteration (WriteBatcher); only when the transport holds a backlog
does it wait here, in order, for a drain task started for the occasion. There is no writer
task per connection.
"""

from __future__ import annotations

import asyncio
import collections
import struct
import time
from collections.abc import Callable
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


class WriteBatcher:
    """Writes the frames each connection was given during one loop iteration in one call.

    Several broadcasts handled in the same iteration then cost each recipient one system
    call instead of one per broadcast; the delay is the rest of the current iteration.
    """

    def __init__(self) -> None:
        self._due: list[DirectQueue] = []
        # Runs before any frame goes out: the store commits, so no client sees an event
        # that a crash could still take back.
        self.before_write: Callable[[], None] = lambda: None

    def schedule(self, queue: DirectQueue) -> None:
        if not self._due:
            asyncio.get_running_loop().call_soon(self._write_due)
        self._due.append(queue)

    def _write_due(self) -> None:
        due, self._due = self._due, []
        self.before_write()
        for queue in due:
            queue.write_pending()


class DirectQueue(asyncio.Queue[Any]):
    """A socket's send queue that, once a websocket takes it over, writes packets itself."""

    def __init__(self, batcher: WriteBatcher) -> None:
        super().__init__()
        # An unbounded queue never has waiting putters; one shared empty deque instead of a
        # ~700-byte one per connection.
        self._putters = _NO_PUTTERS
        self._batcher = batcher
        self._pending: list[bytes] = []  # frames not yet written, in order
        self._websocket: WebSocketResponse | None = None
        self._transport: asyncio.Transport | None = None
        self._protocol: Any = None
        self._drainer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[Any] | None = None

    def take_over(self, websocket: WebSocketResponse) -> None:
        """From now on write to `websocket`, starting with whatever is queued."""
        writer = websocket._writer
        assert writer is not None, "the websocket is prepared before it takes over"
        self._websocket = websocket
        self._transport = writer.transport
        self._protocol = writer.protocol
        while not self.empty():
            item = self.get_nowait()
            self.task_done()
            if item is not None:
                self._pending.append(packet_frame(item))
        self.write_pending()

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
        else:
            if not self._pending and self._drainer is None:
                self._batcher.schedule(self)
            self._pending.append(packet_frame(item))

    def qsize(self) -> int:
        """Packets the client has not taken yet: on a websocket, those held back because the
        transport is full (frames of the current loop iteration are not a backlog)."""
        if self._transport is None:
            return super().qsize()
        return len(self._pending) if self._drainer is not None else 0

    def write_pending(self) -> None:
        if not self._write_what_fits():
            self._start_drain()

    def _write_what_fits(self) -> bool:
        """Write pending frames up to the transport's backlog limit; True when none are left."""
        transport, pending = self._transport, self._pending
        assert transport is not None
        if transport.is_closing():
            pending.clear()
            return True
        room = _TRANSPORT_BACKLOG_BYTES - transport.get_write_buffer_size()
        if room <= 0 or not pending:
            return not pending
        taken, size = 0, 0
        while taken < len(pending) and (taken == 0 or size + len(pending[taken]) <= room):
            size += len(pending[taken])
            taken += 1
        transport.write(pending[0] if taken == 1 else b"".join(pending[:taken]))
        del pending[:taken]
        return not pending

    def _start_drain(self) -> None:
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """Write the backlog, in order, as fast as the client reads it."""
        try:
            while not self._write_what_fits():
                try:
                    await self._protocol._drain_helper()  # until the transport resumes writing
                except ConnectionError:
                    self._pending.clear()
                    return
                if _TRANSPORT_BACKLOG_BYTES <= self._transport.get_write_buffer_size():
                    await asyncio.sleep(0.01)  # resumed, yet full again: let others write
        finally:
            self._drainer = None  # no finished task kept per idle connection

    def _close_websocket(self) -> None:
        if self._closer is None and self._websocket is not None:
            self._closer = asyncio.get_running_loop().create_task(self._websocket.close())


class DirectQueueEngineIO(engineio.AsyncServer):  # type: ignore[misc]
    """engineio's server, giving every socket a DirectQueue and pinging it from a timer.

    engineio pings each socket from a task that sleeps for the ping interval: one task, its
    coroutine and context alive per idle connection. A timer handle does the same job.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batcher = WriteBatcher()

    def create_queue(self, *args: Any, **kwargs: Any) -> DirectQueue:
        return DirectQueue(self.batcher)

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
