"""A websocket served by a small asyncio protocol once aiohttp has answered the handshake.

Reading: aiohttp's C frame reader parses what arrives and hands each message to the link's
owner (an Engine.IO session). Writing: server frames are not masked, so one frame's bytes
serve every recipient; the frames a connection is given during one loop iteration go out in
one `transport.write` (`WriteBatcher`). When the client stops reading and the transport's
buffer fills, frames wait here, and a connection with more than `max_backlog` waiting is
dropped: it recovers what it missed when it reconnects, and server memory stays bounded.
Control frames (PING) count like any packet: against the owner's rate limit, and their
PONGs against the backlog.

Nothing here is alive per idle connection but the transport, this object and the reader:
no task, no timer (heartbeats are swept by the engine's time wheel).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections.abc import Mapping
from typing import Protocol

from aiohttp import WebSocketError
from aiohttp.http import WS_KEY, WSMessage, WSMsgType

from .aiohttp_adapter import new_frame_reader
from .limits import OpenConnections
from .packets import OP_PONG, close_frame, websocket_frame

# Past this many bytes waiting in the transport, frames wait here, where they are counted
# against the connection's backlog limit.
TRANSPORT_BUFFER_BYTES = 256 * 1024

# Input is parsed in slices; once a client goes over its rate limit, in small ones, with
# reading paused between them, so one flooding client cannot hold the loop for long.
_SLICE = 65536
_THROTTLED_SLICE = 4096
_THROTTLE_PAUSE = 0.1

# RFC 6455 section 7.4.1 close codes.
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002


class HandshakeError(Exception):
    """The request is not a websocket handshake we can accept."""


def accept_key(method: str, headers: Mapping[str, str]) -> str:
    """Validate the opening handshake (RFC 6455 section 4.2.1); return Sec-WebSocket-Accept."""
    if method != "GET":
        raise HandshakeError("a websocket handshake is a GET request")
    if headers.get("Upgrade", "").lower() != "websocket":
        raise HandshakeError("missing 'Upgrade: websocket'")
    if "upgrade" not in {part.strip().lower() for part in headers.get("Connection", "").split(",")}:
        raise HandshakeError("missing 'Connection: upgrade'")
    if headers.get("Sec-WebSocket-Version") != "13":
        raise HandshakeError("only websocket version 13 is supported")
    key = headers.get("Sec-WebSocket-Key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise HandshakeError("Sec-WebSocket-Key must be 16 bytes in base64")
    except binascii.Error as exc:
        raise HandshakeError("Sec-WebSocket-Key is not base64") from exc
    return base64.b64encode(hashlib.sha1(key.encode() + WS_KEY).digest()).decode()


def handshake_response(accept: str) -> bytes:
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
    ).encode()


class LinkOwner(Protocol):
    """What a link asks of the session it carries."""

    @property
    def flooding(self) -> bool:
        """Over its rate limit now: read in small slices, with pauses."""
        ...

    @property
    def rejections(self) -> int:
        """Packets refused so far (a change while reading pauses reading)."""
        ...

    def link_message(self, link: WebSocketLink, data: str | bytes) -> None: ...

    def link_control(self, link: WebSocketLink) -> bool:
        """A control frame (PING) arrived: True to answer it, False when over the limit."""
        ...

    def link_failed(self, link: WebSocketLink, detail: str) -> None:
        """The client broke the websocket protocol."""

    def link_lost(self, link: WebSocketLink, reason: str | None) -> None:
        """The connection ended (`reason`: why we aborted it, None otherwise)."""


class WriteBatcher:
    """Writes what each connection was given during one loop iteration in one call.

    Several broadcasts handled in the same iteration then cost each recipient one system call
    instead of one per broadcast; the delay is the rest of the current iteration.
    """

    def __init__(self) -> None:
        self._due: list[WebSocketLink] = []
        # Kept: asyncio.get_running_loop() costs a getpid() system call each time.
        self.loop: asyncio.AbstractEventLoop | None = None

    def schedule(self, link: WebSocketLink) -> None:
        if not self._due:
            if self.loop is None:
                self.loop = asyncio.get_running_loop()
            self.loop.call_soon(self._write_due)
        self._due.append(link)

    def _write_due(self) -> None:
        due, self._due = self._due, []
        for link in due:
            link.write_pending()


class WebSocketLink(asyncio.Protocol):
    """One websocket connection, after the handshake, carrying one Engine.IO session."""

    __slots__ = (
        "_abort_reason",
        "_batcher",
        "_frame_head",
        "_frame_left",
        "_max_backlog",
        "_open",
        "_pending",
        "_reader",
        "_resume",
        "_stash",
        "_writing_paused",
        "closed",
        "owner",
        "peer",
        "transport",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        batcher: WriteBatcher,
        max_message_bytes: int,
        max_backlog: int,
        peer: str,
        open_connections: OpenConnections,
    ) -> None:
        self.transport = transport
        self.peer = peer
        # Told of messages and of the end; None once the owner let go of the link.
        self.owner: LinkOwner | None = None
        self.closed = False
        self._abort_reason: str | None = None
        # Where the client's frames start (aiohttp's reader does not check their mask): the
        # bytes of a header still incomplete, and what is left of the current frame's payload.
        self._frame_head = b""
        self._frame_left = 0
        # Counted among the process's connections from now until the connection is lost.
        self._open: OpenConnections | None = open_connections
        open_connections.websockets += 1
        self._batcher = batcher
        self._max_backlog = max_backlog
        self._pending: list[bytes] | None = None  # frames of this iteration, or the backlog
        self._writing_paused = False
        self._stash: bytes | None = None  # input held back while the client is throttled
        self._resume: asyncio.TimerHandle | None = None
        if batcher.loop is None:
            batcher.loop = asyncio.get_running_loop()
        self._reader = new_frame_reader(self._on_message, self._on_failure, max_message_bytes, batcher.loop)

    # Reading

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self._resume is not None:  # reading is paused; this was already in flight
            self._stash = (self._stash or b"") + data
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        while data and not self.closed:
            owner = self.owner
            size = _THROTTLED_SLICE if owner is not None and owner.flooding else _SLICE
            if len(data) <= size:
                chunk, data = data, b""
            else:
                chunk, data = data[:size], data[size:]
            refused = owner.rejections if owner is not None else 0
            if not self._all_masked(chunk):
                # RFC 6455 section 5.1: a server MUST close on an unmasked client frame.
                self._on_failure(WebSocketError(CLOSE_PROTOCOL_ERROR, "an unmasked client frame"))
                return
            self._reader.feed_data(chunk)
            if owner is not None and owner.rejections != refused and not self.closed:
                # Over its limit: the rest waits, and reading pauses, until it has had time
                # to slow down.
                self._stash = data or None
                self.transport.pause_reading()
                loop = asyncio.get_running_loop()
                self._resume = loop.call_later(_THROTTLE_PAUSE, self._resume_reading)
                return

    def _all_masked(self, data: bytes) -> bool:
        """Walk the frame headers in `data` (a frame at a time, not a byte): are all masked?"""
        at, end = 0, len(data)
        while at < end:
            if self._frame_left:
                step = min(self._frame_left, end - at)
                self._frame_left -= step
                at += step
                continue
            head = self._frame_head + data[at : at + 14]
            if len(head) < 2:
                self._frame_head = head
                return True
            if not head[1] & 0x80:
                return False
            length = head[1] & 0x7F
            size = 6 + (2 if length == 126 else 8 if length == 127 else 0)
            if len(head) < size:
                self._frame_head = head
                return True
            if length == 126:
                length = int.from_bytes(head[2:4], "big")
            elif length == 127:
                length = int.from_bytes(head[2:10], "big")
            at += size - len(self._frame_head)
            self._frame_head = b""
            self._frame_left = length
        return True

    def _resume_reading(self) -> None:
        self._resume = None
        if self.closed:
            return
        stash, self._stash = self._stash, None
        self.transport.resume_reading()
        if stash:
            self._feed(stash)

    def _on_message(self, message: WSMessage) -> None:
        owner = self.owner
        if self.closed or owner is None:
            return
        kind = message.type
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            owner.link_message(self, message.data)
        elif kind is WSMsgType.PING:
            if owner.link_control(self):
                self.queue(websocket_frame(message.data or b"", OP_PONG))
        elif kind is WSMsgType.CLOSE:
            self.close(CLOSE_NORMAL)
        elif kind is WSMsgType.PONG:
            owner.link_control(self)  # unanswered, but counted: a flood of them is one too

    def _on_failure(self, exc: BaseException) -> None:
        # aiohttp's WebSocketError carries the RFC 6455 close code (1002, 1007, 1009).
        code = getattr(exc, "code", CLOSE_PROTOCOL_ERROR)
        owner = self.owner
        self.close(code if isinstance(code, int) else CLOSE_PROTOCOL_ERROR)
        if owner is not None:
            owner.link_failed(self, f"websocket: {exc}")

    # asyncio protocol callbacks

    def connection_lost(self, exc: BaseException | None) -> None:
        self._closed()

    def eof_received(self) -> bool:
        return False  # the transport closes itself

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._pending:
            self.write_pending()

    # Writing

    def send_now(self, frame: bytes) -> None:
        """Write one frame at once, ahead of anything batched (handshake replies only)."""
        if not self.closed:
            self.transport.write(frame)

    def queue(self, frame: bytes) -> None:
        """Write `frame` with the connection's other frames of this loop iteration."""
        pending = self._pending
        if pending is None:
            self._pending = [frame]
            if not self._writing_paused:
                self._batcher.schedule(self)
        elif self._writing_paused and len(pending) >= self._max_backlog:
            self.abort("slow consumer")
        else:
            pending.append(frame)

    @property
    def backlog(self) -> int:
        """Frames held back because the client is not reading (not those of this iteration)."""
        return len(self._pending or ()) if self._writing_paused else 0

    def write_pending(self) -> None:
        """Write what is pending in one call. The transport pauses us once its buffer passes
        TRANSPORT_BUFFER_BYTES; until it resumes us, frames wait in `_pending`."""
        pending = self._pending
        if pending is None or self._writing_paused or self.closed:
            return
        self._pending = None
        self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    # Ending

    def close(self, code: int = CLOSE_NORMAL) -> None:
        """Send a close frame after what is pending, then close the connection."""
        if self.closed:
            return
        self.closed = True
        pending, self._pending = self._pending, None
        tail = b"".join(pending) if pending and not self._writing_paused else b""
        self.transport.write(tail + close_frame(code))
        self.transport.close()

    def abort(self, reason: str = "aborted") -> None:
        """Drop the connection at once, whatever is unsent (a client that stopped reading).

        Safe in the middle of a fan-out: the owner is told when the loop reports the
        connection lost, not here.
        """
        if self.closed:
            return
        self.closed = True
        self._pending = None
        self._abort_reason = reason
        self.transport.abort()

    def _closed(self) -> None:
        if self._open is not None:
            self._open.websockets -= 1
            self._open = None
        self.closed = True
        self._pending = None
        self._stash = None
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.link_lost(self, self._abort_reason)


def open_link(
    transport: asyncio.Transport,
    tail: bytes,
    accept: str,
    batcher: WriteBatcher,
    max_message_bytes: int,
    max_backlog: int,
    peer: str,
    open_connections: OpenConnections,
    first: bytes = b"",
) -> WebSocketLink:
    """Answer the handshake (101) on a transport taken from aiohttp and serve it here.
    `tail`: bytes the client sent behind the handshake; `first`: frames to send with the
    answer, in the same write."""
    transport.write(handshake_response(accept) + first)
    link = WebSocketLink(transport, batcher, max_message_bytes, max_backlog, peer, open_connections)
    transport.set_protocol(link)
    transport.set_write_buffer_limits(high=TRANSPORT_BUFFER_BYTES)
    transport.resume_reading()
    if tail:
        asyncio.get_running_loop().call_soon(link.data_received, tail)
    return link
